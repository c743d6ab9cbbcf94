"""Shared cases for the tests of necks / heads that take an ``upsample_cfg``: the upsampler
configs to sweep (small where the default would be slow) and hooks that record what each
upsampler receives."""
import torch

LEARNABLE = ('CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA')
GUIDED = ('FADE', 'SAPA')


def upsampler_cfg(name):
    """A small config of the upsampler ``name`` (works at any channel count divisible by 8)."""
    cfg = dict(type=name)
    if name == 'SAPA':
        cfg.update(embedding_dim=8)
    elif name in ('CARAFE', 'DLU', 'FADE'):
        cfg.update(compressed_channels=8)
    return cfg


def record_calls(upsamplers):
    """Forward pre-hooks on ``upsamplers``; returns {index: (x, guide)} filled on forward."""
    seen = {}
    for index, upsampler in enumerate(upsamplers):
        upsampler.register_forward_pre_hook(
            lambda module, args, index=index: seen.__setitem__(index, tuple(args)))
    return seen


def backward_and_check(outputs, modules):
    """Sum the outputs, backprop, and check every parameter of ``modules`` got a finite grad."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    sum(o.float().sum() for o in outputs if torch.is_tensor(o)).backward()
    for module in modules:
        for name, p in module.named_parameters():
            assert p.grad is not None, f'{type(module).__name__}.{name} got no gradient'
            assert torch.isfinite(p.grad).all(), f'{type(module).__name__}.{name}'


def randn_levels(channels, sizes, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=gen) for c, (h, w) in zip(channels, sizes)]


def revert_sync_bn_cfg(node):
    """SyncBN -> BN in a model cfg (SyncBN needs a process group)."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            revert_sync_bn_cfg(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            revert_sync_bn_cfg(value)


def tensor_forward_backward(model, scope, size=(128, 128), batch=2):
    """Forward + backward of a whole model on random images: mmdet models in ``mode='tensor'``
    (head outputs), mmseg models through ``loss`` with random labels (mmseg's Mask2Former head
    has no tensor mode)."""
    h, w = size
    meta = dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    model.train()
    inputs = torch.randn(batch, 3, h, w)
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        head = model.decode_head[-1] if isinstance(model.decode_head, torch.nn.ModuleList) \
            else model.decode_head
        samples = []
        for _ in range(batch):
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=torch.randint(0, head.num_classes, (1, h, w)))
            samples.append(sample)
        losses = model.loss(inputs, samples)
        total = sum(v.sum() for k, v in losses.items() if 'loss' in k and torch.is_tensor(v))
        total.backward()
        return losses
    from mmdet.structures import DetDataSample
    out = model(inputs, [DetDataSample(metainfo=meta) for _ in range(batch)], mode='tensor')
    leaves = [t for t in torch.utils._pytree.tree_flatten(out)[0]
              if torch.is_tensor(t) and t.requires_grad]
    assert leaves, 'the model returned no tensor that requires grad'
    sum(t.float().sum() for t in leaves).backward()
    return out
