"""UpsampleSegformerHead, UpsampleFPNHead, UpsampleDepthwiseSeparableASPPHead and mmseg-side
UpsampleFPN against mmseg's own modules (equivalence without a type, every upsampler with one,
odd sizes, guides) and the cases of mmseg's unit tests for these heads."""
import pytest
import torch

pytest.importorskip('mmseg')

from mmseg.models.decode_heads import (DepthwiseSeparableASPPHead, FPNHead,  # noqa: E402
                                       SegformerHead)
from mmseg.models.necks import FPN  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

from dlu_mm.seg import (UpsampleDepthwiseSeparableASPPHead, UpsampleFPN,  # noqa: E402
                        UpsampleFPNHead, UpsampleSegformerHead)
from upsample_cases import (LEARNABLE, backward_and_check, randn_levels,  # noqa: E402
                            record_calls, upsampler_cfg)

IN_CHANNELS = [8, 16, 24, 32]
CHANNELS = 16
EXACT = [(32, 24), (16, 12), (8, 6), (4, 3)]
# MiT levels of a 512x683 test image (necks.md): not exact 2x
MIT_512x683 = [(128, 171), (64, 86), (32, 43), (16, 22)]
ODD = [(33, 29), (17, 15), (9, 8), (5, 4)]


def _segformer(cls, **kwargs):
    return cls(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], channels=CHANNELS,
               num_classes=5, norm_cfg=dict(type='BN'), **kwargs)


def _fpn_head(cls, **kwargs):
    return cls(in_channels=[CHANNELS] * 4, in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32],
               channels=CHANNELS, num_classes=5, norm_cfg=dict(type='BN'), **kwargs)


def _aspp(cls, **kwargs):
    # d8 backbone: the ASPP input (level 1 here) is at stride 8, c1 (level 0) at stride 4
    return cls(c1_in_channels=IN_CHANNELS[0], c1_channels=8, in_channels=IN_CHANNELS[1],
               in_index=1, channels=CHANNELS, dilations=(1, 2, 3), num_classes=5,
               norm_cfg=dict(type='BN'), **kwargs)


def _fpn_neck(cls, **kwargs):
    return cls(IN_CHANNELS, CHANNELS, num_outs=4, **kwargs)


CASES = {
    'segformer': (SegformerHead, UpsampleSegformerHead, _segformer, IN_CHANNELS),
    'fpn_head': (FPNHead, UpsampleFPNHead, _fpn_head, [CHANNELS] * 4),
    'aspp': (DepthwiseSeparableASPPHead, UpsampleDepthwiseSeparableASPPHead, _aspp, IN_CHANNELS),
    'fpn_neck': (FPN, UpsampleFPN, _fpn_neck, IN_CHANNELS),
}
# each module's stock resize, written as a parameter-free typed upsampler
STOCK_AS_TYPE = {'segformer': 'bilinear', 'fpn_head': 'bilinear', 'aspp': 'bilinear',
                 'fpn_neck': 'nearest'}


def _leaves(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _upsamplers(module):
    if isinstance(module, UpsampleSegformerHead):
        return [up for chain in module.upsamplers for up in chain]
    if isinstance(module, UpsampleFPNHead):
        return module.upsamplers()
    if isinstance(module, UpsampleDepthwiseSeparableASPPHead):
        return [module.upsampler]
    return list(module.upsamplers)


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('sizes', [EXACT, ODD], ids=['exact', 'odd'])
def test_untyped_is_the_stock_module(case, sizes):
    stock, ours, build, channels = CASES[case]
    torch.manual_seed(0)
    reference = build(stock)
    reference.init_weights()
    module = build(ours)
    assert list(module.state_dict()) == list(reference.state_dict())
    module.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), module.eval()
    inputs = randn_levels(channels, sizes, batch=2)
    for e, g in zip(_leaves(reference(inputs)), _leaves(module(inputs))):
        assert torch.equal(e, g)


@pytest.mark.parametrize('case', ['fpn_head', 'aspp', 'fpn_neck'])
def test_typed_stock_interpolation_recomputes_the_stock_forward(case):
    """The stock resize as a parameter-free typed upsampler, at exact 2x sizes: our forward
    (which replaces the stock one) gives the stock outputs. Not SegFormer: chained 2x bilinear
    steps are not one 4x / 8x bilinear resize."""
    stock, ours, build, channels = CASES[case]
    torch.manual_seed(0)
    reference = build(stock)
    reference.init_weights()
    module = build(ours, upsample_cfg=dict(type=STOCK_AS_TYPE[case]))
    module.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), module.eval()
    inputs = randn_levels(channels, EXACT, batch=2)
    for e, g in zip(_leaves(reference(inputs)), _leaves(module(inputs))):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('name', LEARNABLE)
@pytest.mark.parametrize('sizes', [EXACT, ODD], ids=['exact', 'odd'])
def test_every_upsampler_forward_backward(case, name, sizes):
    _, ours, build, channels = CASES[case]
    torch.manual_seed(0)
    module = build(ours, upsample_cfg=upsampler_cfg(name))
    module.init_weights()
    outs = _leaves(module(randn_levels(channels, sizes, batch=2)))  # BN of a 1x1 pool: batch 2
    if case == 'fpn_neck':
        assert [tuple(o.shape[2:]) for o in outs] == sizes
    else:
        assert tuple(outs[0].shape) == (2, 5) + sizes[0]
    backward_and_check(outs, _upsamplers(module))


def test_segformer_six_chained_upsamplers_on_512x683_levels():
    module = _segformer(UpsampleSegformerHead, upsample_cfg=upsampler_cfg('FADE'))
    module.init_weights()
    assert [len(chain) for chain in module.upsamplers] == [1, 2, 3]
    seen = record_calls(_upsamplers(module))
    inputs = randn_levels(IN_CHANNELS, MIT_512x683)
    out = module(inputs)
    assert tuple(out.shape) == (1, 5) + MIT_512x683[0]
    with torch.no_grad():
        projected = [conv(x) for conv, x in zip(module.convs, inputs)]
    # flat order: level 1's step; level 2's two steps; level 3's three steps
    landing = [0, 1, 0, 2, 1, 0]
    for index, level in enumerate(landing):
        coarse, guide = seen[index]
        assert tuple(guide.shape[2:]) == (2 * coarse.shape[2], 2 * coarse.shape[3])
        if guide.shape[2:] == projected[level].shape[2:]:
            assert torch.equal(guide, projected[level])
        else:  # 2x of a ceil-divided level overshoots by one pixel: the guide is resized
            assert abs(guide.shape[2] - projected[level].shape[2]) <= 1
            assert abs(guide.shape[3] - projected[level].shape[3]) <= 1


def test_fpn_head_keys_and_guides():
    module = _fpn_head(UpsampleFPNHead, upsample_cfg=upsampler_cfg('SAPA'))
    stock = _fpn_head(FPNHead)
    stock_keys = set(stock.state_dict())
    keys = list(module.state_dict())
    # every stock key is kept; the new ones sit where the parameter-free Upsamples were
    assert stock_keys <= set(keys)
    new = {'.'.join(k.split('.')[:3]) for k in keys if k not in stock_keys}
    assert new == {
        'scale_heads.1.1', 'scale_heads.2.1', 'scale_heads.2.3', 'scale_heads.3.1',
        'scale_heads.3.3', 'scale_heads.3.5'}
    module.init_weights()
    seen = record_calls(module.upsamplers())
    inputs = randn_levels([CHANNELS] * 4, EXACT)
    module(inputs)
    with torch.no_grad():
        firsts = [branch[0](x) for branch, x in zip(module.scale_heads, inputs)]
    landing = [0, 1, 0, 2, 1, 0]  # branch 1: 1 step; branch 2: 2; branch 3: 3
    for index, level in enumerate(landing):
        assert torch.equal(seen[index][1], firsts[level])


def test_aspp_guide_projection():
    module = _aspp(UpsampleDepthwiseSeparableASPPHead, upsample_cfg=upsampler_cfg('FADE'))
    assert module.guide_proj.conv.in_channels == 8 and module.guide_proj.conv.out_channels == 16
    assert _aspp(UpsampleDepthwiseSeparableASPPHead,
                 upsample_cfg=upsampler_cfg('DLU')).guide_proj is None
    module.init_weights()
    seen = record_calls([module.upsampler])
    inputs = randn_levels(IN_CHANNELS, EXACT, batch=2)
    module(inputs)
    with torch.no_grad():
        expected = module.guide_proj(module.c1_bottleneck(inputs[0]))
    assert torch.equal(seen[0][1], expected)


def test_fpn_neck_is_registered_in_mmseg_and_guided_by_lateral():
    neck = MODELS.build(dict(type='UpsampleFPN', in_channels=IN_CHANNELS, out_channels=CHANNELS,
                             num_outs=5, upsample_cfg=upsampler_cfg('SAPA')))
    assert isinstance(neck, UpsampleFPN)
    neck.init_weights()
    seen = record_calls(neck.upsamplers)
    inputs = randn_levels(IN_CHANNELS, EXACT)
    outs = neck(inputs)
    assert len(outs) == 5
    with torch.no_grad():
        for step in range(3):
            assert torch.equal(seen[step][1], neck.lateral_convs[step](inputs[step]))


# mmseg's test_segformer_head: in_channels (32, 64, 160, 256), a 64x64 image's levels
# H / 2**(i+2), channels 256 -> output (1, 19, 16, 16); in_channels and in_index of different
# lengths -> AssertionError
@pytest.mark.parametrize('upsample_cfg', [None, dict(type='DySample'), dict(type='SAPA')])
def test_mmseg_segformer_head_case(upsample_cfg):
    with pytest.raises(AssertionError):
        UpsampleSegformerHead(in_channels=(1, 2, 3), in_index=(0, 1), channels=5, num_classes=2,
                              upsample_cfg=upsample_cfg)
    H, W = 64, 64
    in_channels = (32, 64, 160, 256)
    shapes = [(H // 2**(i + 2), W // 2**(i + 2)) for i in range(len(in_channels))]
    model = UpsampleSegformerHead(in_channels=in_channels, in_index=[0, 1, 2, 3], channels=256,
                                  num_classes=19, upsample_cfg=upsample_cfg)
    inputs = [torch.randn((1, c, *shape)) for c, shape in zip(in_channels, shapes)]
    outputs = model(inputs)
    assert outputs.shape == (1, model.num_classes, H // 4, W // 4)


# mmseg's test_dw_aspp_head: without c1 (c1_in_channels=0) a 32-channel 45x45 input gives
# (1, 19, 45, 45); with c1 (8 -> 4 channels, 45x45) and a 21x21 ASPP input likewise; the ASPP
# dilations (1, 12, 24) sit on the first conv / the depthwise convs
@pytest.mark.parametrize('upsample_cfg', [None, dict(type='CARAFE'), dict(type='FADE')])
def test_mmseg_dw_aspp_head_case(upsample_cfg):
    if upsample_cfg is None:
        inputs = [torch.randn(1, 32, 45, 45)]
        head = UpsampleDepthwiseSeparableASPPHead(
            c1_in_channels=0, c1_channels=0, in_channels=32, channels=16, num_classes=19,
            dilations=(1, 12, 24))
        assert head.c1_bottleneck is None
        assert head.aspp_modules[0].conv.dilation == (1, 1)
        assert head.aspp_modules[1].depthwise_conv.dilation == (12, 12)
        assert head.aspp_modules[2].depthwise_conv.dilation == (24, 24)
        assert head(inputs).shape == (1, head.num_classes, 45, 45)
    inputs = [torch.randn(1, 8, 45, 45), torch.randn(1, 32, 21, 21)]
    head = UpsampleDepthwiseSeparableASPPHead(
        c1_in_channels=8, c1_channels=4, in_channels=32, channels=16, num_classes=19,
        dilations=(1, 12, 24), upsample_cfg=upsample_cfg)
    assert head.c1_bottleneck.in_channels == 8
    assert head.c1_bottleneck.out_channels == 4
    assert head.aspp_modules[0].conv.dilation == (1, 1)
    assert head.aspp_modules[1].depthwise_conv.dilation == (12, 12)
    assert head.aspp_modules[2].depthwise_conv.dilation == (24, 24)
    assert head(inputs).shape == (1, head.num_classes, 45, 45)


def test_errors():
    with pytest.raises(ValueError, match='interpolate_mode'):
        _segformer(UpsampleSegformerHead, upsample_cfg=dict(mode='nearest'))
    with pytest.raises(ValueError, match='available types'):
        _fpn_head(UpsampleFPNHead, upsample_cfg=dict(type='Lanczos'))
    with pytest.raises(ValueError, match='c1_in_channels > 0'):
        UpsampleDepthwiseSeparableASPPHead(c1_in_channels=0, c1_channels=0, in_channels=32,
                                           channels=16, num_classes=19, dilations=(1, 12),
                                           upsample_cfg=dict(type='DLU'))
    with pytest.raises(TypeError, match='upsample_cfg must be a dict'):
        _fpn_neck(UpsampleFPN, upsample_cfg='nearest')
