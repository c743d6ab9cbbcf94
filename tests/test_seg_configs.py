"""Every segmentation config builds and runs loss + predict on CPU (BN for SyncBN, batch 2)."""
import copy
import os.path as osp

import pytest
import torch

pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

from dlu_mm.swap import revert_sync_bn_cfg  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
UPSAMPLERS = {'bilinear': None, 'carafe': 'CARAFE', 'dlu': 'DLU', 'ddf_up': 'DDFUp',
              'lda_aqu': 'LDAAQU', 'dysample': 'DySample', 'fade': 'FADE', 'sapa': 'SAPA'}
ADE_CONFIGS = {name: f'configs/upernet_r50_512x512_160k_ade20k_{name}.py' for name in UPSAMPLERS}
DEMO_CONFIG = 'configs/demo/upernet_r18_synthetic_ade_dlu.py'


def build_model(path):
    cfg = Config.fromfile(osp.join(REPO, path))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    __import__('dlu_mm.seg')  # what custom_imports does in tools/train.py
    model_cfg = copy.deepcopy(cfg.model)  # a ConfigDict: mmseg reads test_cfg.mode
    revert_sync_bn_cfg(model_cfg)  # SyncBN needs a process group; the same model with BN
    model_cfg['pretrained'] = None  # no download in tests
    return cfg, MODELS.build(model_cfg)


def batch(num_classes, size=(64, 64), num=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num, 3, *size, generator=gen)
    samples = []
    for _ in range(num):
        label = torch.randint(0, num_classes, (1, *size), generator=gen)
        label[:, :4] = 255  # some ignored pixels, as reduce_zero_label produces
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return inputs, samples


@pytest.mark.parametrize('name', list(ADE_CONFIGS))
def test_ade20k_config_builds_and_runs(name):
    cfg, model = build_model(ADE_CONFIGS[name])
    head_cfg = cfg.model.decode_head
    assert head_cfg.type == 'UpsampleUPerHead'
    assert cfg.custom_imports == dict(imports=['dlu_mm.seg'], allow_failed_imports=False)
    assert head_cfg.get('upsample_cfg', {}).get('type') == UPSAMPLERS[name]
    assert head_cfg.num_classes == 150 and cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    head = model.decode_head
    assert len(head.upsamplers()) == (0 if UPSAMPLERS[name] is None else 3)
    if UPSAMPLERS[name] is not None:
        assert type(head.upsamplers()[0]).__name__ == UPSAMPLERS[name]
    model.init_weights()

    inputs, samples = batch(150)
    model.train()
    losses = model.loss(inputs, samples)
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)
    model.eval()
    with torch.no_grad():
        results = model.predict(inputs, samples)
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert results[0].seg_logits.data.shape == (150, 64, 64)


def test_demo_config_builds_and_trains_one_step_on_odd_sizes():
    cfg, model = build_model(DEMO_CONFIG)
    assert cfg.model.decode_head.upsample_cfg.type == 'DLU'
    assert cfg.train_dataloader.dataset.metainfo.classes == (
        'wall', 'building', 'sky', 'floor', 'tree', 'ceiling')
    model.init_weights()
    inputs, samples = batch(6, size=(65, 77))
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is not None for up in model.decode_head.upsamplers()
               for p in up.parameters())
    model.eval()
    with torch.no_grad():
        results = model.predict(inputs, samples)
    assert results[0].pred_sem_seg.data.shape == (1, 65, 77)
