"""Tiny in-memory batches for running mmdet / mmseg models on CPU in tests (no dataset needed)."""
import torch


def det_batch(batch_size=1, size=(128, 128), num_classes=80, with_masks=False, seed=0):
    """Inputs and DetDataSamples for ``model.data_preprocessor`` -> ``model.loss/predict``."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0), pad_shape=(h, w)))
        boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0], [40.0, 30.0, 110.0, 100.0]])
        instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, 3]) % num_classes)
        if with_masks:
            masks = torch.zeros(2, h, w, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            instances.masks = BitmapMasks(masks.numpy(), h, w)
        sample.gt_instances = instances
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(batch_size=2, size=(64, 64), num_classes=150, seed=0):
    """Inputs and SegDataSamples with random labels (255 = ignore kept out)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, h, w), generator=gen))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def run_loss_and_predict(model, batch):
    """One training forward/backward and one predict; returns (losses dict, predictions)."""
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    total.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        preds = model(**data, mode='predict')
    return losses, preds
