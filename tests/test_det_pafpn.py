"""UpsampleYOLOXPAFPN, UpsampleCSPNeXtPAFPN and UpsamplePAFPN against mmdet's necks."""
import pytest
import torch

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmcv.cnn import DepthwiseSeparableConvModule  # noqa: E402
from mmdet.models.necks import PAFPN, CSPNeXtPAFPN, YOLOXPAFPN  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402

from dlu_mm.det import UpsampleCSPNeXtPAFPN, UpsamplePAFPN, UpsampleYOLOXPAFPN  # noqa: E402
from upsample_cases import (LEARNABLE, assert_init_ends_with_dlu_init,  # noqa: E402
                            backward_and_check, randn_levels, record_calls, upsampler_cfg)

IN_CHANNELS = [8, 16, 24, 32]
EXACT = [(32, 24), (16, 12), (8, 6), (4, 3)]
# stride-2 convs round up: 33x29 -> 17x15 -> 9x8 -> 5x4
ODD = [(33, 29), (17, 15), (9, 8), (5, 4)]
CSP_PAIRS = [(YOLOXPAFPN, UpsampleYOLOXPAFPN), (CSPNeXtPAFPN, UpsampleCSPNeXtPAFPN)]
CSP_KWARGS = dict(num_csp_blocks=1)


def _build(cls, **kwargs):
    if issubclass(cls, PAFPN):
        return cls(IN_CHANNELS, 16, num_outs=kwargs.pop('num_outs', 5), **kwargs)
    return cls(IN_CHANNELS, 16, **CSP_KWARGS, **kwargs)


def _same_outputs(reference, neck, inputs):
    expected, got = reference(inputs), neck(inputs)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


@pytest.mark.parametrize('stock, ours, kwargs', [
    (YOLOXPAFPN, UpsampleYOLOXPAFPN, {}),
    (YOLOXPAFPN, UpsampleYOLOXPAFPN, dict(use_depthwise=True)),
    (CSPNeXtPAFPN, UpsampleCSPNeXtPAFPN, {}),
    (CSPNeXtPAFPN, UpsampleCSPNeXtPAFPN, dict(use_depthwise=True, expand_ratio=0.25)),
    (PAFPN, UpsamplePAFPN, {}),
    (PAFPN, UpsamplePAFPN, dict(start_level=1)),
    (PAFPN, UpsamplePAFPN, dict(add_extra_convs='on_output', num_outs=6)),
])
def test_untyped_is_the_stock_neck(stock, ours, kwargs):
    torch.manual_seed(0)
    reference = _build(stock, **dict(kwargs))
    reference.init_weights()
    neck = _build(ours, **dict(kwargs))
    assert list(neck.state_dict()) == list(reference.state_dict())
    assert neck.upsamplers is None
    neck.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), neck.eval()
    _same_outputs(reference, neck, randn_levels(IN_CHANNELS, EXACT, batch=2))


@pytest.mark.parametrize('stock, ours', CSP_PAIRS + [(PAFPN, UpsamplePAFPN)])
def test_typed_nearest_recomputes_the_stock_forward(stock, ours):
    """With a parameter-free 'nearest' upsampler at exact 2x sizes, our forward (which replaces
    the stock one) must give the stock outputs bit for bit."""
    torch.manual_seed(0)
    reference = _build(stock)
    reference.init_weights()
    neck = _build(ours, upsample_cfg=dict(type='nearest'))
    assert len(neck.upsamplers) == 3
    neck.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), neck.eval()
    _same_outputs(reference, neck, randn_levels(IN_CHANNELS, EXACT, batch=2))


def test_step_channels_differ_per_level():
    neck = UpsampleYOLOXPAFPN([16, 32, 64], 16, num_csp_blocks=1,
                              upsample_cfg=dict(type='CARAFE'))
    assert [up.channels for up in neck.upsamplers] == [32, 16]  # coarse step first
    neck = UpsampleCSPNeXtPAFPN([8, 16, 24, 32], 16, num_csp_blocks=1,
                                upsample_cfg=dict(type='DySample'))
    assert [up.channels for up in neck.upsamplers] == [24, 16, 8]
    neck = UpsamplePAFPN([8, 16, 24, 32], 16, num_outs=5, upsample_cfg=dict(type='DLU'))
    assert [up.channels for up in neck.upsamplers] == [16, 16, 16]


@pytest.mark.parametrize('ours', [UpsampleYOLOXPAFPN, UpsampleCSPNeXtPAFPN, UpsamplePAFPN])
@pytest.mark.parametrize('name', LEARNABLE)
@pytest.mark.parametrize('sizes', [EXACT, ODD], ids=['exact', 'odd'])
def test_every_upsampler_forward_backward(ours, name, sizes):
    torch.manual_seed(0)
    neck = _build(ours, upsample_cfg=upsampler_cfg(name))
    neck.init_weights()
    outs = neck(randn_levels(IN_CHANNELS, sizes))
    last_h, last_w = sizes[-1]  # PAFPN's P6: max-pool(1, stride 2) of P5
    expected = sizes + ([((last_h + 1) // 2, (last_w + 1) // 2)] if ours is UpsamplePAFPN else [])
    assert [tuple(o.shape) for o in outs] == [(1, 16) + s for s in expected]
    backward_and_check(outs, neck.upsamplers)


@pytest.mark.parametrize('ours', [UpsampleYOLOXPAFPN, UpsampleCSPNeXtPAFPN])
@pytest.mark.parametrize('name', ['FADE', 'SAPA'])
def test_csp_guide_is_the_finer_backbone_level(ours, name):
    neck = _build(ours, upsample_cfg=upsampler_cfg(name))
    neck.init_weights()
    seen = record_calls(neck.upsamplers)
    inputs = randn_levels(IN_CHANNELS, EXACT)
    neck(inputs)
    for step, level in enumerate([2, 1, 0]):  # step 0: coarsest (reduce_layers[0]) to level 2
        coarse, guide = seen[step]
        assert guide is inputs[level]
        assert coarse.shape[1] == IN_CHANNELS[level]


def test_pafpn_guide_is_the_finer_lateral():
    neck = _build(UpsamplePAFPN, upsample_cfg=upsampler_cfg('FADE'))
    neck.init_weights()
    seen = record_calls(neck.upsamplers)
    inputs = randn_levels(IN_CHANNELS, EXACT)
    neck(inputs)
    with torch.no_grad():
        for step in range(3):
            assert torch.equal(seen[step][1], neck.lateral_convs[step](inputs[step]))


def test_registered_and_init_keeps_upsampler_init():
    neck = MODELS.build(dict(type='UpsampleCSPNeXtPAFPN', in_channels=IN_CHANNELS,
                             out_channels=16, num_csp_blocks=1, upsample_cfg=dict(type='DLU')))
    assert_init_ends_with_dlu_init(neck, neck.upsamplers)  # Kaiming on every Conv2d first


# mmdet's own test_yolox_pafpn: s=64, in_channels [8, 16, 32, 64], out_channels 24, square levels
# s / 2**i; every output has out_channels and its level's size; use_depthwise gives
# DepthwiseSeparableConvModule downsamples
@pytest.mark.parametrize('upsample_cfg', [dict(scale_factor=2, mode='nearest'),
                                          dict(type='DySample'), dict(type='SAPA')])
def test_mmdet_yolox_pafpn_case(upsample_cfg):
    s, in_channels, out_channels = 64, [8, 16, 32, 64], 24
    feat_sizes = [s // 2**i for i in range(4)]
    feats = [torch.rand(1, in_channels[i], feat_sizes[i], feat_sizes[i]) for i in range(4)]
    neck = UpsampleYOLOXPAFPN(in_channels=in_channels, out_channels=out_channels,
                              upsample_cfg=upsample_cfg)
    outs = neck(feats)
    assert len(outs) == len(feats)
    for i in range(len(feats)):
        assert outs[i].shape[1] == out_channels
        assert outs[i].shape[2] == outs[i].shape[3] == s // (2**i)
    neck = UpsampleYOLOXPAFPN(in_channels=in_channels, out_channels=out_channels,
                              use_depthwise=True, upsample_cfg=upsample_cfg)
    assert isinstance(neck.downsamples[0], DepthwiseSeparableConvModule)
    outs = neck(feats)
    assert [o.shape[2] for o in outs] == feat_sizes


def test_errors():
    with pytest.raises(ValueError, match='available types: .*DLU'):
        UpsampleYOLOXPAFPN(IN_CHANNELS, 16, upsample_cfg=dict(type='Bicubic'))
    with pytest.raises(TypeError, match='upsample_cfg must be a dict'):
        UpsampleCSPNeXtPAFPN(IN_CHANNELS, 16, upsample_cfg='nearest')
    with pytest.raises(ValueError, match="dict\\(mode='nearest'\\)"):
        UpsamplePAFPN(IN_CHANNELS, 16, num_outs=5, upsample_cfg=dict(mode='bilinear'))
    neck = UpsampleYOLOXPAFPN(IN_CHANNELS, 16, num_csp_blocks=1, upsample_cfg=dict(type='DLU'))
    with pytest.raises(ValueError, match='4 input levels'):
        neck(randn_levels(IN_CHANNELS, EXACT)[:3])
