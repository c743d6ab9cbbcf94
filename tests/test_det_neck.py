"""UpsampleFPN and UpsampleFCNMaskHead against mmdet's FPN / FCNMaskHead and hand computations."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmdet.models.necks import FPN  # noqa: E402
from mmdet.models.roi_heads.mask_heads import FCNMaskHead  # noqa: E402

from dlu_mm.det import UpsampleFCNMaskHead, UpsampleFPN  # noqa: E402
from dlu_mm.upsamplers import UPSAMPLERS  # noqa: E402

IN_CHANNELS = [8, 16, 24, 32]
# an odd-sized pyramid (stride-2 convs round up): 33x29 -> 17x15 -> 9x8 -> 5x4
SIZES = [(33, 29), (17, 15), (9, 8), (5, 4)]
# the R50 neck of the papers
R50_CHANNELS = [256, 512, 1024, 2048]
# per-upsampler params at C=256, s=2, counted by hand from each paper's layer list (independent
# of the module code)
SPEC_PARAMS = {
    'nearest': (dict(type='nearest'), 0),
    'carafe': (dict(type='CARAFE'), 74_148),
    'dlu': (dict(type='DLU'), 35_489),
    'ddf_up': (dict(type='DDFUp'), 560_368),
    'lda_aqu': (dict(type='LDAAQU'), 39_410),
    'dysample': (dict(type='DySample'), 8_224),
    'fade': (dict(type='FADE'), 47_514),
    'sapa': (dict(type='SAPA', embedding_dim=32, norm='gn'), 17_472),
}
# FPN with R50 inputs, 256 channels, 5 outputs: 4 laterals (1x1) + 4 output convs (3x3)
STANDARD_FPN_PARAMS = (sum(R50_CHANNELS) * 256 + 4 * 256) + 4 * (256 * 256 * 9 + 256)
# CARAFE-style adds a 3x3 stride-2 lateral on C5 and its 3x3 output conv
CARAFE_STYLE_EXTRA = (2048 * 9 * 256 + 256) + (256 * 9 * 256 + 256)


def _inputs(seed=0, channels=IN_CHANNELS, sizes=SIZES, batch=2):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, c, h, w, generator=gen) for c, (h, w) in zip(channels, sizes))


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('kwargs', [
    dict(num_outs=5),
    dict(num_outs=5, add_extra_convs='on_input'),
    dict(num_outs=6, add_extra_convs='on_output', relu_before_extra_convs=True),
    dict(num_outs=5, add_extra_convs='on_lateral', start_level=1),
    dict(num_outs=3, start_level=1, end_level=3),
    dict(num_outs=5, upsample_cfg=dict(mode='bilinear', align_corners=False)),
    dict(num_outs=5, norm_cfg=dict(type='GN', num_groups=4), act_cfg=dict(type='ReLU')),
])
def test_untyped_is_mmdet_fpn(kwargs):
    torch.manual_seed(0)
    reference = FPN(IN_CHANNELS, 16, **kwargs)
    reference.init_weights()
    neck = UpsampleFPN(IN_CHANNELS, 16, **kwargs)
    assert list(neck.state_dict()) == list(reference.state_dict())
    neck.load_state_dict(reference.state_dict(), strict=True)
    inputs = _inputs()
    expected, got = reference(inputs), neck(inputs)
    assert len(got) == len(expected) == kwargs['num_outs']
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_carafe_style_nearest_by_hand():
    """The CARAFE-style top-down path recomputed step by step from the neck's own convs."""
    torch.manual_seed(0)
    neck = UpsampleFPN(IN_CHANNELS, 16, num_outs=5, carafe_style=True,
                       upsample_cfg=dict(type='nearest'))
    neck.init_weights()
    assert len(neck.lateral_convs) == len(neck.fpn_convs) == 5 and len(neck.upsamplers) == 4
    extra = neck.lateral_convs[4].conv
    assert (extra.in_channels, extra.kernel_size, extra.stride) == (32, (3, 3), (2, 2))
    inputs = _inputs()
    with torch.no_grad():
        laterals = [conv(x) for conv, x in zip(neck.lateral_convs, inputs)]
        laterals.append(neck.lateral_convs[4](inputs[3]))  # P6 lateral from C5: 3x2
        for i in range(4, 0, -1):
            up = laterals[i].repeat_interleave(2, 2).repeat_interleave(2, 3)
            laterals[i - 1] = laterals[i - 1] + up[..., :laterals[i - 1].shape[2],
                                                   :laterals[i - 1].shape[3]]
        expected = [conv(x) for conv, x in zip(neck.fpn_convs, laterals)]
        got = neck(inputs)
    assert [tuple(o.shape[2:]) for o in got] == SIZES + [(3, 2)]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize('carafe_style', [False, True])
# DDFUp here has a channel branch whose hidden ReLUs are all off: a constant filter, whose
# FilterNorm must still give finite gradients
@pytest.mark.parametrize('upsampler_type', UPSAMPLERS)
def test_every_upsampler_odd_sizes(upsampler_type, carafe_style):
    torch.manual_seed(0)
    cfg = dict(type=upsampler_type)
    if upsampler_type == 'SAPA':
        cfg.update(embedding_dim=8, norm='gn')
    neck = UpsampleFPN(IN_CHANNELS, 32, num_outs=5, carafe_style=carafe_style,
                       upsample_cfg=cfg)
    neck.init_weights()
    assert len(neck.upsamplers) == (4 if carafe_style else 3)
    outs = neck(_inputs(batch=1))
    # P6: 3x3 stride-2 conv (CARAFE-style) or max-pool(1, stride 2) of the 5x4 level: 3x2
    assert [tuple(o.shape) for o in outs] == [(1, 32) + s for s in SIZES + [(3, 2)]]
    sum(o.sum() for o in outs).backward()
    grads = [p.grad for p in neck.upsamplers.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_guided_upsampler_gets_finer_lateral_as_guide():
    torch.manual_seed(0)
    neck = UpsampleFPN(IN_CHANNELS, 32, num_outs=5, upsample_cfg=dict(type='FADE'))
    neck.init_weights()
    seen = {}
    for step, upsampler in enumerate(neck.upsamplers):
        upsampler.register_forward_pre_hook(
            lambda module, args, step=step: seen.__setitem__(step, args))
    inputs = _inputs(batch=1)
    neck(inputs)
    with torch.no_grad():
        for step in range(3):
            coarse, guide = seen[step]
            fine = neck.lateral_convs[step](inputs[step])  # before its own top-down update
            assert guide.shape[2:] == (2 * coarse.shape[2], 2 * coarse.shape[3])
            if tuple(fine.shape[2:]) == tuple(guide.shape[2:]):
                assert torch.equal(guide, fine)
            else:  # odd fine size: resized to exactly 2x the coarse map
                expected = F.interpolate(fine, size=guide.shape[2:], mode='bilinear',
                                         align_corners=False)
                torch.testing.assert_close(guide, expected)
    assert [tuple(s[0].shape[2:]) for s in (seen[0], seen[1], seen[2])] == SIZES[1:]


def test_init_xavier_then_upsampler_init():
    neck = UpsampleFPN(IN_CHANNELS, 32, num_outs=5, carafe_style=True,
                       upsample_cfg=dict(type='DLU'))
    with torch.no_grad():
        for p in neck.parameters():
            p.fill_(1.0)
    neck.init_weights()
    for up in neck.upsamplers:  # DLU's own init: guidance offsets exactly zero
        assert torch.count_nonzero(up.guidance_offsets.weight) == 0
        assert up.kernel_space_encoder.weight.std() < 0.01
    for conv in list(neck.lateral_convs) + list(neck.fpn_convs):
        w = conv.conv.weight
        fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
        assert w.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5  # xavier-uniform bound
        assert torch.count_nonzero(conv.conv.bias) == 0


@pytest.mark.parametrize('name', list(SPEC_PARAMS))
def test_neck_param_counts_both_families(name):
    cfg, per_upsampler = SPEC_PARAMS[name]
    standard = UpsampleFPN(R50_CHANNELS, 256, num_outs=5, upsample_cfg=dict(cfg))
    carafe_style = UpsampleFPN(R50_CHANNELS, 256, num_outs=5, carafe_style=True,
                               upsample_cfg=dict(cfg))
    assert _num_params(standard) == STANDARD_FPN_PARAMS + 3 * per_upsampler
    assert _num_params(carafe_style) == (STANDARD_FPN_PARAMS + CARAFE_STYLE_EXTRA
                                         + 4 * per_upsampler)
    assert _num_params(FPN(R50_CHANNELS, 256, num_outs=5)) == STANDARD_FPN_PARAMS


def test_neck_errors():
    with pytest.raises(ValueError, match='available types: .*DLU'):
        UpsampleFPN(IN_CHANNELS, 16, num_outs=5, upsample_cfg=dict(type='Bicubic'))
    with pytest.raises(ValueError, match='add_extra_convs'):
        UpsampleFPN(IN_CHANNELS, 16, num_outs=5, carafe_style=True, add_extra_convs='on_input')
    with pytest.raises(TypeError, match='carafe_style'):
        UpsampleFPN(IN_CHANNELS, 16, num_outs=5, carafe_style='yes')
    neck = UpsampleFPN(IN_CHANNELS, 16, num_outs=5, upsample_cfg=dict(type='DLU'))
    with pytest.raises(ValueError, match='4 input levels'):
        neck(_inputs()[:3])


def _mask_head(upsample_cfg):
    return dict(num_convs=2, roi_feat_size=7, in_channels=16, conv_out_channels=16,
                num_classes=3, upsample_cfg=upsample_cfg)


def test_mask_head_mmdet_types_are_fcn_mask_head():
    torch.manual_seed(0)
    reference = FCNMaskHead(**_mask_head(dict(type='deconv', scale_factor=2)))
    reference.init_weights()
    head = UpsampleFCNMaskHead(**_mask_head(dict(type='deconv', scale_factor=2)))
    head.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(3, 16, 7, 7)
    assert torch.equal(head(x), reference(x))


@pytest.mark.parametrize('upsampler_type', ['CARAFE', 'DLU', 'DySample', 'nearest'])
def test_mask_head_dlu_upsampler(upsampler_type):
    head = UpsampleFCNMaskHead(**_mask_head(dict(type=upsampler_type, scale_factor=2)))
    head.init_weights()
    x = torch.randn(3, 16, 7, 7)
    if upsampler_type == 'nearest':  # mmdet's own 'nearest' (mmcv nn.Upsample)
        assert not head.dlu_upsampler
    else:
        assert type(head.upsample).__name__ == upsampler_type
    with torch.no_grad():
        expected = head.conv_logits(head.upsample(head.convs[1](head.convs[0](x))))
    out = head(x)
    assert out.shape == (3, 3, 14, 14)
    torch.testing.assert_close(out, expected)


def test_mask_head_errors():
    with pytest.raises(ValueError, match='guided upsampler.*no'):
        UpsampleFCNMaskHead(**_mask_head(dict(type='FADE', scale_factor=2)))
    with pytest.raises(ValueError, match='available types'):
        UpsampleFCNMaskHead(**_mask_head(dict(type='Bicubic', scale_factor=2)))


def test_carafe_style_untyped_interpolates_like_fpn():
    """carafe_style without a type: FPN's F.interpolate kwargs; equals 'nearest' on even sizes."""
    sizes = [(32, 24), (16, 12), (8, 6), (4, 3)]
    torch.manual_seed(0)
    untyped = UpsampleFPN(IN_CHANNELS, 16, num_outs=5, carafe_style=True)
    untyped.init_weights()
    typed = UpsampleFPN(IN_CHANNELS, 16, num_outs=5, carafe_style=True,
                        upsample_cfg=dict(type='nearest'))
    typed.load_state_dict(untyped.state_dict(), strict=True)
    inputs = _inputs(sizes=sizes)
    outs = untyped(inputs)
    assert [tuple(o.shape[2:]) for o in outs] == sizes + [(2, 2)]
    for a, b in zip(outs, typed(inputs)):
        assert torch.equal(a, b)
