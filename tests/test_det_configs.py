"""Every detection config builds and runs loss + predict on a tiny CPU batch; whole-model params."""
import glob
import os.path as osp
import textwrap

import pytest
import torch

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import dlu_mm.det  # noqa: E402,F401
from dlu_mm.datasets import synthetic_coco  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
UPSAMPLER_NAMES = ('nearest', 'carafe', 'dlu', 'ddf_up', 'lda_aqu', 'dysample', 'fade', 'sapa')
FAMILIES = ('faster_rcnn_r50_fpn_{}.py', 'mask_rcnn_r50_fpn_{}.py', 'panoptic_fpn_r50_{}.py')
DET_CONFIGS = sorted(osp.join(REPO, 'configs', family.format(name))
                     for family in FAMILIES for name in UPSAMPLER_NAMES)
DEMO_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'demo', 'faster_rcnn_*.py')))
GUIDED = ('fade', 'sapa')


def _build(cfg, few_rois=True):
    from mmdet.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if cfg.model.backbone.get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None  # no pretrained download in tests
    if few_rois:  # the RoI heads dominate CPU time; their wiring is what is tested
        cfg.model.train_cfg.rpn_proposal.max_per_img = 64
        cfg.model.train_cfg.rcnn.sampler.num = 32
        cfg.model.test_cfg.rpn.max_per_img = 32
        cfg.model.test_cfg.rcnn.max_per_img = 10
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def _loss_and_predict(model, with_mask=False, with_semantic=False, size=128, backward=False):
    from mmdet.testing import demo_mm_inputs
    num_classes = model.roi_head.bbox_head.num_classes
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, size, size)], num_items=[3],
                            num_classes=num_classes, with_mask=with_mask,
                            with_semantic=with_semantic)
    model.train()
    data = model.data_preprocessor(packed, True)
    with torch.set_grad_enabled(backward):
        losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    if backward:  # gradients reach every upsampler of the neck
        total.backward()
        for upsampler in model.neck.upsamplers:
            assert all(p.grad is not None for p in upsampler.parameters())
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    assert len(results) == 1
    return losses, results[0]


def test_config_list_complete():
    assert osp.isfile(osp.join(REPO, 'configs', 'faster_rcnn_r50_fpn_dlu.py'))
    assert all(osp.isfile(path) for path in DET_CONFIGS)


@pytest.mark.parametrize('path', DET_CONFIGS, ids=osp.basename)
def test_detection_config_builds_and_runs(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['dlu_mm.det'], allow_failed_imports=False)
    name = osp.basename(path)
    upsampler = name[:-3].split('_fpn_')[-1].replace('r50_', '')
    guided_or_panoptic = upsampler in GUIDED or name.startswith('panoptic')
    assert cfg.model.neck.type == 'UpsampleFPN'
    assert cfg.model.neck.get('carafe_style', False) is not guided_or_panoptic
    assert cfg.model.data_preprocessor.pad_size_divisor == (32 if guided_or_panoptic else 64)
    model = _build(cfg)
    assert len(model.neck.upsamplers) == (3 if guided_or_panoptic else 4)
    if name.startswith('mask_rcnn') and upsampler not in GUIDED + ('nearest',):
        assert model.roi_head.mask_head.dlu_upsampler
    panoptic = name.startswith('panoptic')
    # backward (slow on CPU) once per family, with the paper's upsampler
    losses, result = _loss_and_predict(model, with_mask=not name.startswith('faster'),
                                       with_semantic=panoptic, backward=upsampler == 'dlu')
    if panoptic:
        assert 'pred_panoptic_seg' in result and 'loss_seg' in losses
    else:
        assert 'pred_instances' in result
    if name.startswith('mask'):
        assert 'loss_mask' in losses and 'masks' in result.pred_instances


@pytest.mark.parametrize('path', DEMO_CONFIGS, ids=osp.basename)
def test_demo_config_builds_and_runs(path):
    cfg = Config.fromfile(path)
    assert tuple(cfg.metainfo['classes']) == synthetic_coco.THING_CLASSES
    model = _build(cfg, few_rois=False)
    _loss_and_predict(model, size=160, backward=True)


def test_documented_two_line_swap(tmp_path):
    """The swap the README documents, on mmdet's stock Faster R-CNN config."""
    config = tmp_path / 'my_faster_rcnn.py'
    config.write_text(textwrap.dedent("""\
        _base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)
        model = dict(neck=dict(type='UpsampleFPN', upsample_cfg=dict(type='DLU')))
        """))
    model = _build(Config.fromfile(str(config)))
    assert type(model.neck.upsamplers[0]).__name__ == 'DLU'
    _loss_and_predict(model)


def test_whole_faster_rcnn_param_counts():
    """Faster R-CNN R50: standard FPN family 41.5M, CARAFE-style family 46.8M (+ upsamplers).

    The papers count trainable parameters: mmdet's R50 freezes its stem and first stage.
    """
    from mmdet.registry import MODELS
    from mmengine.hub import get_config

    def count(cfg):
        init_default_scope('mmdet')
        cfg.model.backbone.init_cfg = None
        return sum(p.numel() for p in MODELS.build(cfg.model).parameters() if p.requires_grad)

    stock = count(get_config('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'))
    carafe_style = count(Config.fromfile(osp.join(REPO, 'configs',
                                                  'faster_rcnn_r50_fpn_nearest.py')))
    # the CARAFE-style neck adds a 3x3 2048->256 lateral and a 3x3 256->256 output conv
    # (the upsamplers' own counts are checked per family in test_det_neck.py)
    assert carafe_style - stock == (2048 * 9 * 256 + 256) + (256 * 9 * 256 + 256)
    assert round(stock / 1e6, 1) == 41.5 and round(carafe_style / 1e6, 1) == 46.8
