"""build_upsampler, is_guided, the fixed baselines and the root-registry registration."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS, DefaultScope

import dlu_mm.upsamplers as ups
from dlu_mm.upsamplers import UPSAMPLERS, build_upsampler, is_guided

pytestmark = pytest.mark.filterwarnings('ignore:dlu_mm. no compiled')

LEARNABLE = ('CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA')
BASELINES = {'nearest': 'NearestUpsample', 'bilinear': 'BilinearUpsample',
             'deconv': 'DeconvUpsample', 'pixel_shuffle': 'PixelShuffleUpsample'}
GUIDED = ('FADE', 'SAPA')
C = 16  # divisible by every operator's default groups (LDA-AQU: D = C/4 split in 2 groups)


def run(module, name, s=2, h=3, w=5, n=2):
    x = torch.randn(n, C, h, w)
    guide = torch.randn(n, C, s * h, s * w) if name in GUIDED else None
    return module(x, guide)


def test_available_types():
    assert set(UPSAMPLERS) == set(LEARNABLE) | set(BASELINES) | set(BASELINES.values())


@pytest.mark.parametrize('name', LEARNABLE + tuple(BASELINES))
def test_build_and_forward(name):
    module = build_upsampler(dict(type=name), C, 2)
    cls_name = BASELINES.get(name, name)
    assert type(module) is getattr(ups, cls_name)
    assert (module.channels, module.scale_factor) == (C, 2)
    assert run(module, name).shape == (2, C, 6, 10)
    assert run(module, name, n=0).shape == (0, C, 6, 10)
    assert is_guided(module) == is_guided(dict(type=name)) == (name in GUIDED)
    # registered in the ROOT registry under exactly this name
    assert MODELS.get(cls_name) is type(module)
    assert type(MODELS.build(dict(type=cls_name, channels=C))) is type(module)


def test_kwargs_and_scale_factor_are_passed():
    module = build_upsampler(dict(type='DLU', up_kernel=3, up_group=2, compressed_channels=8),
                             C, 4)
    assert (module.up_kernel, module.up_group, module.scale_factor) == (3, 2, 4)
    # a cfg may repeat channels / scale_factor when they agree
    assert build_upsampler(dict(type='CARAFE', channels=C, scale_factor=2), C, 2).channels == C
    assert type(build_upsampler(dict(type=ups.SAPA), C)) is ups.SAPA  # a class as type


def test_builder_errors():
    with pytest.raises(ValueError, match='unknown upsampler type') as info:
        build_upsampler(dict(type='carafe'), C, 2)  # mmcv's name, not ours
    for name in UPSAMPLERS:
        assert name in str(info.value)
    with pytest.raises(TypeError, match='must be a dict'):
        build_upsampler('DLU', C, 2)
    with pytest.raises(TypeError, match='must be a dict'):
        build_upsampler(None, C, 2)
    with pytest.raises(ValueError, match='needs a "type" key'):
        build_upsampler(dict(up_kernel=5), C, 2)
    with pytest.raises(ValueError, match='scale_factor=4'):
        build_upsampler(dict(type='DLU', scale_factor=4), C, 2)
    with pytest.raises(TypeError, match=r'bad arguments for upsampler CARAFE.*up_kernal'):
        build_upsampler(dict(type='CARAFE', up_kernal=5), C, 2)
    with pytest.raises(ValueError, match='unknown upsampler type'):
        is_guided(dict(type='Bogus'))


def test_is_guided_without_type():
    assert not is_guided(None)
    assert not is_guided(dict(mode='nearest', scale_factor=2))  # plain interpolate kwargs
    assert is_guided('FADE') and not is_guided(ups.DLU) and not is_guided(nn.Identity())


def test_baselines_match_mmcv_semantics():
    x = torch.randn(2, C, 3, 5)
    nearest = build_upsampler(dict(type='nearest'), C, 3)
    assert torch.equal(nearest(x), x.repeat_interleave(3, 2).repeat_interleave(3, 3))
    bilinear = build_upsampler(dict(type='bilinear'), C, 2)
    want = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    assert torch.equal(bilinear(x), want)

    # deconv: mmdet FPN_CARAFE with upsample_kernel=3 -> ConvTranspose2d(C, C, 3, 2, 1, 1)
    deconv = build_upsampler(dict(type='deconv'), C, 2)
    conv = deconv.deconv
    assert (conv.kernel_size, conv.stride, conv.padding, conv.output_padding) == (
        (3, 3), (2, 2), (1, 1), (1, 1))
    want = F.conv_transpose2d(x, conv.weight, conv.bias, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(deconv(x), want)
    assert build_upsampler(dict(type='deconv'), C, 3)(x).shape == (2, C, 9, 15)
    with pytest.raises(ValueError, match='odd upsample_kernel'):
        build_upsampler(dict(type='deconv', upsample_kernel=4), C, 1)

    # pixel_shuffle: mmcv PixelShufflePack, conv C -> C*s*s (3x3, pad 1) + pixel_shuffle
    shuffle = build_upsampler(dict(type='pixel_shuffle'), C, 2)
    conv = shuffle.upsample_conv
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (
        C, 4 * C, (3, 3), (1, 1))
    want = F.pixel_shuffle(F.conv2d(x, conv.weight, conv.bias, padding=1), 2)
    torch.testing.assert_close(shuffle(x), want)

    # both re-initialise xavier-uniform with zero bias, as mmdet/mmcv do
    for module in (deconv, shuffle):
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 1.0)
        module.init_weights()
    # xavier fans: ConvTranspose2d weight (in, out, k, k) counts fan_in = out*k*k
    bound = math.sqrt(6 / (2 * C * 9))
    assert deconv.deconv.weight.abs().max() <= bound and not deconv.deconv.bias.any()
    bound = math.sqrt(6 / (C * 9 + 4 * C * 9))
    assert shuffle.upsample_conv.weight.abs().max() <= bound
    assert not shuffle.upsample_conv.bias.any()


def test_registration_is_idempotent_and_never_clobbers():
    ups.register_upsampler(ups.DLU)  # same class again: fine

    class DLU(ups.BaseUpsampler):  # a different class with a taken name
        pass

    with pytest.raises(KeyError):
        ups.register_upsampler(DLU)
    assert MODELS.get('DLU') is ups.DLU


@pytest.mark.parametrize('package, scope', [('mmdet', 'mmdet'), ('mmseg', 'mmseg'),
                                            ('mmpretrain', 'mmpretrain')])
def test_builds_from_downstream_scopes(package, scope):
    pytest.importorskip(package)
    registry = pytest.importorskip(f'{package}.registry')
    with DefaultScope.overwrite_default_scope(scope):
        for name in LEARNABLE + tuple(BASELINES.values()):
            cls = getattr(ups, name)
            # the root registry switches to the scope's child registry, which falls back to root
            assert type(MODELS.build(dict(type=name, channels=C))) is cls
            assert type(registry.MODELS.build(dict(type=name, channels=C))) is cls


def test_mmcv_lower_case_names_untouched():
    pytest.importorskip('mmcv.ops')
    from mmcv.ops import CARAFEPack
    assert MODELS.get('carafe') is CARAFEPack
    assert MODELS.get('nearest') is nn.Upsample
    assert MODELS.get('CARAFE') is ups.CARAFE


def test_init_cfg_is_applied_after_the_operator_init_and_kept():
    """An upsampler's own init_cfg (e.g. Pretrained / Constant) wins over its paper init, also
    when a neck calls init_weights() again after its global xavier pass."""
    up = build_upsampler(dict(type='DLU', compressed_channels=4,
                              init_cfg=dict(type='Constant', val=0.25, bias=0.5,
                                            layer='Conv2d')), 8, 2)
    up.init_weights()
    convs = [m for m in up.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(bool((m.weight == 0.25).all() and (m.bias == 0.5).all()) for m in convs)
    up.init_weights()  # the neck's second call
    assert all(bool((m.weight == 0.25).all()) for m in convs)
    plain = build_upsampler(dict(type='DLU', compressed_channels=4), 8, 2)
    nn.init.constant_(plain.guidance_offsets.weight, 1.0)
    plain.init_weights()  # no init_cfg: the paper init on every call (zero offsets)
    assert not plain.guidance_offsets.weight.any()
