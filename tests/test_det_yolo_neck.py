"""UpsampleYOLOV3Neck against mmdet's YOLOV3Neck: the stock neck without a type, every upsampler
with one, the projected backbone level as the guide, and mmdet's own test_yolov3_neck cases."""
import pytest
import torch

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmdet.models.necks import YOLOV3Neck  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402

from dlu_mm.det import UpsampleYOLOV3Neck  # noqa: E402
from upsample_cases import (GUIDED, LEARNABLE, assert_init_ends_with_dlu_init,  # noqa: E402
                            backward_and_check, randn_levels, record_calls, upsampler_cfg)

# Darknet-53's channels / 8 (coarsest first, as the neck's arguments): in 128, 64, 32; out 64,
# 32, 16; the backbone gives its levels finest first
IN_CHANNELS, OUT_CHANNELS = [128, 64, 32], [64, 32, 16]
EXACT = [(16, 20), (8, 10), (4, 5)]  # finest first
ODD = [(19, 13), (10, 7), (5, 4)]  # ceil-divided levels of a 76x52 input


def _build(cls, **kwargs):
    return cls(3, IN_CHANNELS, OUT_CHANNELS, **kwargs)


def _levels(sizes, batch=1):
    return randn_levels(IN_CHANNELS[::-1], sizes, batch=batch)


def test_untyped_is_the_stock_neck():
    torch.manual_seed(0)
    reference = _build(YOLOV3Neck)
    neck = _build(UpsampleYOLOV3Neck)
    assert neck.upsamplers is None and neck.guide_projs is None
    assert list(neck.state_dict()) == list(reference.state_dict())
    neck.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), neck.eval()
    feats = _levels(EXACT, batch=2)
    for expected, got in zip(reference(feats), neck(feats)):
        assert torch.equal(expected, got)


def test_typed_nearest_recomputes_the_stock_forward():
    torch.manual_seed(0)
    reference = _build(YOLOV3Neck)
    neck = _build(UpsampleYOLOV3Neck, upsample_cfg=dict(type='nearest'))
    neck.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), neck.eval()
    feats = _levels(EXACT, batch=2)
    for expected, got in zip(reference(feats), neck(feats)):
        assert torch.equal(expected, got)


@pytest.mark.parametrize('name', LEARNABLE)
@pytest.mark.parametrize('sizes', [EXACT, ODD], ids=['exact', 'odd'])
def test_every_upsampler_forward_backward(name, sizes):
    torch.manual_seed(0)
    neck = _build(UpsampleYOLOV3Neck, upsample_cfg=upsampler_cfg(name))
    neck.init_weights()
    assert [up.channels for up in neck.upsamplers] == OUT_CHANNELS[1:]  # coarsest step first
    assert (neck.guide_projs is not None) == (name in GUIDED)
    outs = neck(_levels(sizes))
    assert [tuple(o.shape) for o in outs] == [(1, c) + s for c, s in zip(OUT_CHANNELS,
                                                                         sizes[::-1])]
    backward_and_check(outs, list(neck.upsamplers) + list(neck.guide_projs or []))


@pytest.mark.parametrize('name', GUIDED)
def test_guide_is_the_projected_backbone_level(name):
    neck = _build(UpsampleYOLOV3Neck, upsample_cfg=upsampler_cfg(name))
    neck.init_weights()
    neck.eval()
    seen = record_calls(neck.upsamplers)
    feats = _levels(EXACT)
    neck(feats)
    with torch.no_grad():
        for step, level in enumerate([1, 0]):  # step 0 joins the middle level
            coarse, guide = seen[step]
            assert coarse.shape[1] == OUT_CHANNELS[step + 1]
            assert torch.equal(guide, neck.guide_projs[step](feats[level]))


def test_registered_and_init_keeps_upsampler_init():
    neck = MODELS.build(dict(type='UpsampleYOLOV3Neck', num_scales=3, in_channels=IN_CHANNELS,
                             out_channels=OUT_CHANNELS, upsample_cfg=dict(type='DLU'),
                             init_cfg=dict(type='Kaiming', layer='Conv2d')))
    assert_init_ends_with_dlu_init(neck, neck.upsamplers)  # Kaiming on every Conv2d first


# mmdet's own test_yolov3_neck: levels s / 2**i (s=32) given finest first; channels [16, 8, 4]
# -> [8, 4, 2], and the "more flexible" [32, 8, 16] -> [19, 21, 5]; every output has its
# out_channels and its level's size; a wrong number of levels is refused
@pytest.mark.parametrize('upsample_cfg', [None, dict(type='nearest'), dict(type='DLU'),
                                          dict(type='CARAFE'), dict(type='FADE')])
@pytest.mark.parametrize('in_channels, out_channels', [([16, 8, 4], [8, 4, 2]),
                                                       ([32, 8, 16], [19, 21, 5])])
def test_mmdet_yolov3_neck_case(upsample_cfg, in_channels, out_channels):
    s = 32
    sizes = [s // 2**i for i in range(2, -1, -1)]  # coarsest first, as the channels
    feats = [torch.rand(1, in_channels[i], sizes[i], sizes[i]) for i in range(2, -1, -1)]
    neck = UpsampleYOLOV3Neck(num_scales=3, in_channels=in_channels, out_channels=out_channels,
                              upsample_cfg=upsample_cfg)
    outs = neck(feats)
    assert len(outs) == len(feats)
    for i, out in enumerate(outs):
        assert tuple(out.shape) == (1, out_channels[i], sizes[i], sizes[i])
    with pytest.raises((AssertionError, ValueError)):
        neck(feats[:2])


def test_errors():
    with pytest.raises(ValueError, match='available types: .*DLU'):
        _build(UpsampleYOLOV3Neck, upsample_cfg=dict(type='Bicubic'))
    with pytest.raises(TypeError, match='upsample_cfg must be a dict'):
        _build(UpsampleYOLOV3Neck, upsample_cfg='nearest')
    with pytest.raises(ValueError, match="dict\\(mode='nearest'\\)"):
        _build(UpsampleYOLOV3Neck, upsample_cfg=dict(mode='bilinear'))
    neck = _build(UpsampleYOLOV3Neck, upsample_cfg=dict(type='DLU'))
    with pytest.raises(ValueError, match='3 input levels'):
        neck(_levels(EXACT)[:2])
