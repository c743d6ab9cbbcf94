"""UpsampleUPerHead: UPerHead equivalence, learnable steps, odd sizes, guides, init, errors."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmseg')

from mmseg.models.decode_heads import UPerHead  # noqa: E402

from dlu_mm.seg import UpsampleUPerHead  # noqa: E402

IN_CHANNELS = [8, 16, 24, 32]
CHANNELS = 16
NUM_CLASSES = 5
LEARNABLE_TYPES = ['CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA']
GUIDED_TYPES = ['FADE', 'SAPA']


def head_kwargs(**extra):
    kwargs = dict(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                  channels=CHANNELS, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                  norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
                  loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
    kwargs.update(extra)
    return kwargs


def features(sizes, batch=2, seed=0):
    """Backbone-like features; ``sizes`` are the (H, W) of the 4 levels, finest first."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=gen) for c, (h, w) in zip(IN_CHANNELS, sizes)]


# ResNet strides on a 64x64 image and on an odd 65x77 one (ceil division at every stride 2)
EVEN_SIZES = [(16, 16), (8, 8), (4, 4), (2, 2)]
ODD_SIZES = [(17, 20), (9, 10), (5, 5), (3, 3)]


@pytest.mark.parametrize('sizes', [EVEN_SIZES, ODD_SIZES])
def test_without_type_is_exactly_uperhead(sizes):
    torch.manual_seed(0)
    reference = UPerHead(**head_kwargs())
    reference.init_weights()
    for default_cfg in (None, {}):
        head = UpsampleUPerHead(upsample_cfg=default_cfg, **head_kwargs())
        assert list(head.state_dict()) == list(reference.state_dict())
        head.load_state_dict(reference.state_dict(), strict=True)
        reference.eval(), head.eval()
        inputs = features(sizes)
        with torch.no_grad():
            assert torch.equal(head(inputs), reference(inputs))
    # training mode (batch statistics) is the same computation too
    reference.train(), head.train()
    torch.manual_seed(1)
    out_ref = reference(inputs)
    torch.manual_seed(1)  # same dropout mask
    assert torch.equal(head(inputs), out_ref)


def test_interpolate_kwargs_without_type():
    """upsample_cfg without type = interpolate arguments for every resize (here nearest)."""
    head = UpsampleUPerHead(upsample_cfg=dict(mode='nearest'),
                            **head_kwargs()).eval()
    inputs = features(ODD_SIZES)
    with torch.no_grad():
        out = head(inputs)
        bilinear = UpsampleUPerHead(**head_kwargs()).eval()
        bilinear.load_state_dict(head.state_dict())
        assert not torch.allclose(out, bilinear(inputs))
        # recompute the nearest head by hand from its own modules
        laterals = [conv(inputs[i]) for i, conv in enumerate(head.lateral_convs)]
        laterals.append(head.psp_forward(inputs))
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode='nearest')
        outs = [head.fpn_convs[i](laterals[i]) for i in range(3)] + [laterals[3]]
        outs = [outs[0]] + [F.interpolate(o, size=outs[0].shape[2:], mode='nearest')
                            for o in outs[1:]]
        expected = head.cls_seg(head.fpn_bottleneck(torch.cat(outs, 1)))
    assert torch.equal(out, expected)


@pytest.mark.parametrize('fusion', [False, True])
def test_fixed_2x_upsamplers_match_plain_resizes_on_even_sizes(fusion):
    """Independent check of the wiring: at exact 2x sizes, 2x nearest modules (in chains for the
    fusion) compute what UPerHead's nearest resizes compute."""
    learnable = UpsampleUPerHead(upsample_cfg=dict(type='nearest'), fusion_upsample=fusion,
                                 **head_kwargs()).eval()
    plain_cfg = dict(mode='nearest')
    if not fusion:  # fusion resizes stay bilinear when only the top-down path is replaced
        plain_cfg = None
    plain = UpsampleUPerHead(upsample_cfg=plain_cfg, **head_kwargs()).eval()
    plain.load_state_dict(learnable.state_dict(), strict=True)  # fixed upsamplers: no params
    inputs = features(EVEN_SIZES)
    with torch.no_grad():
        if fusion:
            assert torch.equal(learnable(inputs), plain(inputs))
        else:
            # top-down nearest, fusion bilinear: build that by hand from plain's modules
            laterals = [conv(inputs[i]) for i, conv in enumerate(plain.lateral_convs)]
            laterals.append(plain.psp_forward(inputs))
            for i in range(3, 0, -1):
                laterals[i - 1] = laterals[i - 1] + F.interpolate(
                    laterals[i], scale_factor=2, mode='nearest')
            outs = [plain.fpn_convs[i](laterals[i]) for i in range(3)] + [laterals[3]]
            outs = [outs[0]] + [F.interpolate(o, size=outs[0].shape[2:], mode='bilinear',
                                              align_corners=False) for o in outs[1:]]
            expected = plain.cls_seg(plain.fpn_bottleneck(torch.cat(outs, 1)))
            assert torch.equal(learnable(inputs), expected)


def carafe_params(channels, compressed=64, encoder_kernel=3, up_kernel=5, groups=1, scale=2):
    # counted from CARAFE's layers: C*Cm + Cm + Cm*ke^2*G*k^2*s^2 + G*k^2*s^2
    out = groups * up_kernel ** 2 * scale ** 2
    return channels * compressed + compressed + compressed * encoder_kernel ** 2 * out + out


@pytest.mark.parametrize('fusion, num_upsamplers', [(False, 3), (True, 9)])
def test_parameter_delta_counts_one_module_per_step(fusion, num_upsamplers):
    def count(module):
        return sum(p.numel() for p in module.parameters())

    base = UpsampleUPerHead(**head_kwargs())
    head = UpsampleUPerHead(upsample_cfg=dict(type='CARAFE'), fusion_upsample=fusion,
                            **head_kwargs())
    assert len(head.upsamplers()) == num_upsamplers
    assert len({id(m) for m in head.upsamplers()}) == num_upsamplers  # separate modules
    assert count(head) - count(base) == num_upsamplers * carafe_params(CHANNELS)


@pytest.mark.parametrize('fusion', [False, True])
# (DDFUp: a channel branch whose few ReLUs are all off gives constant filters; FilterNorm must
# keep their gradients finite)
@pytest.mark.parametrize('up_type', LEARNABLE_TYPES)
def test_learnable_types_odd_sizes_forward_backward(up_type, fusion):
    torch.manual_seed(0)
    head = UpsampleUPerHead(upsample_cfg=dict(type=up_type), fusion_upsample=fusion,
                            **head_kwargs())
    head.init_weights()
    inputs = features(ODD_SIZES)
    out = head(inputs)
    assert out.shape == (2, NUM_CLASSES, 17, 20)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for upsampler in head.upsamplers():
        grads = [p.grad for p in upsampler.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize('up_type', GUIDED_TYPES)
@pytest.mark.parametrize('sizes', [EVEN_SIZES, ODD_SIZES])
def test_guided_types_get_finer_lateral_as_guide(up_type, sizes):
    head = UpsampleUPerHead(upsample_cfg=dict(type=up_type), **head_kwargs()).eval()
    seen = {}

    def record(index):
        def hook(module, args):
            seen[index] = args
        return hook

    for index, upsampler in enumerate(head.top_down_upsamplers):
        upsampler.register_forward_pre_hook(record(index))
    inputs = features(sizes)
    with torch.no_grad():
        head(inputs)
        for index in range(3):
            x, guide = seen[index]
            finer = head.lateral_convs[index](inputs[index])  # the raw finer lateral
            h, w = x.shape[2:]
            assert guide.shape == (2, CHANNELS, 2 * h, 2 * w)
            if finer.shape[2:] == (2 * h, 2 * w):
                assert torch.equal(guide, finer)
            else:
                assert torch.equal(guide, F.interpolate(finer, size=(2 * h, 2 * w),
                                                        mode='bilinear', align_corners=False))


def test_unguided_types_get_no_guide():
    head = UpsampleUPerHead(upsample_cfg=dict(type='DLU'), **head_kwargs()).eval()
    seen = []
    head.top_down_upsamplers[0].register_forward_pre_hook(lambda m, args: seen.append(args))
    with torch.no_grad():
        head(features(EVEN_SIZES))
    assert seen[0][1] is None


def test_init_weights_reapplies_each_upsampler_init(monkeypatch):
    head = UpsampleUPerHead(upsample_cfg=dict(type='DLU'), fusion_upsample=True,
                            **head_kwargs())
    called = []
    cls = type(head.upsamplers()[0])
    original = cls.init_weights
    monkeypatch.setattr(cls, 'init_weights', lambda self: (called.append(id(self)),
                                                           original(self)))
    head.init_weights()
    assert sorted(called) == sorted(id(m) for m in head.upsamplers())
    # and the classifier got UPerHead's own normal(std=0.01) init, not something else
    assert head.conv_seg.weight.std().item() < 0.05


def test_bad_configs_raise_clear_errors():
    with pytest.raises(Exception) as err:
        UpsampleUPerHead(upsample_cfg=dict(type='NoSuchUpsampler'), **head_kwargs())
    message = str(err.value)
    assert 'NoSuchUpsampler' in message
    assert all(name in message for name in ('CARAFE', 'DLU', 'SAPA'))
    with pytest.raises(ValueError, match='fusion_upsample'):
        UpsampleUPerHead(fusion_upsample=True, **head_kwargs())
    with pytest.raises(TypeError, match='upsample_cfg'):
        UpsampleUPerHead(upsample_cfg='CARAFE', **head_kwargs())
    with pytest.raises(ValueError, match='scale_factor'):
        UpsampleUPerHead(upsample_cfg=dict(type='CARAFE', scale_factor=4), **head_kwargs())
    with pytest.raises(ValueError, match='channels'):
        UpsampleUPerHead(upsample_cfg=dict(type='CARAFE', channels=7), **head_kwargs())


@pytest.mark.parametrize('up_type', GUIDED_TYPES)
def test_guided_upsampler_without_guide_is_a_clear_error(up_type):
    head = UpsampleUPerHead(upsample_cfg=dict(type=up_type), **head_kwargs())
    with pytest.raises(ValueError, match='guide'):
        head.top_down_upsamplers[0](torch.randn(1, CHANNELS, 3, 3))
