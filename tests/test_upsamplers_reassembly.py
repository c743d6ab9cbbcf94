"""CARAFE, DLU, FADE and SAPA against independent computations written here."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import seeded
from seeded import randn

from dlu_mm.ops import reassemble
from dlu_mm.upsamplers import CARAFE, DLU, FADE, SAPA
from op_cases import loop_reassemble

pytestmark = pytest.mark.filterwarnings('ignore:dlu_mm. no compiled')


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def randomise_(module, std=0.3, seed=0):
    return seeded.randomise_(module, std, seed)


def repeat(x, s):
    return x.repeat_interleave(s, 2).repeat_interleave(s, 3)


def shuffle(t, s):
    """Pixel shuffle written out: channel c*s*s + dy*s + dx -> channel c at (s*i + dy, s*j + dx)."""
    n, c, h, w = t.shape
    return t.reshape(n, c // (s * s), s, s, h, w).permute(0, 1, 4, 2, 5, 3).reshape(
        n, c // (s * s), h * s, w * s)


def group_softmax(logits, groups):
    n, c, h, w = logits.shape
    return logits.reshape(n, groups, c // groups, h, w).softmax(2).reshape(n, c, h, w)


# ------------------------------------------------------------------------------------- params
def test_param_counts():
    assert n_params(CARAFE(256)) == 74_148
    assert n_params(CARAFE(256, 16)) == 3_709_248
    assert [n_params(DLU(256, s)) for s in (2, 4, 8, 16)] == [35_489, 49_337, 104_729, 326_297]
    assert n_params(FADE(256)) == 47_514
    assert n_params(FADE(256, gate=False)) == 47_257
    assert n_params(SAPA(256)) == 33_920
    assert n_params(SAPA(256, embedding_dim=32, norm='gn')) == 17_472


# ------------------------------------------------------------------------------------- CARAFE
@pytest.mark.parametrize('groups, s, k', [(1, 2, 5), (2, 3, 3)])
def test_carafe_matches_independent(groups, s, k):
    carafe = randomise_(CARAFE(4, s, up_kernel=k, up_group=groups, compressed_channels=3).double())
    x = randn(2, 4, 3, 5)
    logits = carafe.encoder(carafe.compressor(x))  # (N, G*k*k*s*s, H, W)
    kernels = group_softmax(shuffle(logits, s), groups)
    torch.testing.assert_close(carafe(x), loop_reassemble(x, kernels, k, groups, s))


def test_carafe_one_hot_centre_kernel_is_nearest():
    carafe = CARAFE(4, 3, up_kernel=3, up_group=2, compressed_channels=3).double()
    with torch.no_grad():
        carafe.encoder.weight.zero_()
        bias = carafe.encoder.bias.view(2, 3, 3, 3 * 3)  # (G, ky, kx, s*s)
        bias.zero_()
        bias[:, 1, 1] = 100.0  # centre tap of every group and sub-pixel
    x = randn(2, 4, 3, 2)
    torch.testing.assert_close(carafe(x), repeat(x, 3), atol=1e-30, rtol=1e-12)


def test_carafe_init_is_box_average():
    carafe = CARAFE(8).double()
    x = randn(1, 8, 6, 5)
    box = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)  # zero padding / 25
    torch.testing.assert_close(carafe(x), repeat(box, 2), atol=0.02, rtol=0)


# ------------------------------------------------------------------------------------- DLU
def test_dlu_at_init_is_carafe_with_shared_children():
    dlu = DLU(4, 2, up_kernel=3, up_group=2, compressed_channels=3).double()
    randomise_(dlu.compressor)
    randomise_(dlu.kernel_space_encoder, seed=1)  # offsets stay zero, as after init_weights
    x = randn(2, 4, 3, 5)
    space = group_softmax(dlu.kernel_space_encoder(dlu.compressor(x)), 2)  # (N, G*k*k, H, W)
    torch.testing.assert_close(dlu(x), reassemble(x, repeat(space, 2), 3, 2, 2))


def explicit_dlu(dlu, x):
    """DLU written pixel by pixel: explicit offsets layout, bilinear weights and border clamp."""
    n, c, h, w = x.shape
    s, k, groups = dlu.scale_factor, dlu.up_kernel, dlu.up_group
    kk, r = k * k, k // 2
    compressed = dlu.compressor(x)
    space = group_softmax(dlu.kernel_space_encoder(compressed), groups)
    raw = dlu.guidance_offsets(compressed)  # (N, 2*G*s*s, H, W), before the pixel shuffle
    out = torch.zeros(n, c, h * s, w * s, dtype=x.dtype)
    for b in range(n):
        for yo in range(h * s):
            for xo in range(w * s):
                i, j, sub = yo // s, xo // s, (yo % s) * s + xo % s
                for g in range(groups):
                    ox = raw[b, (2 * g) * s * s + sub, i, j]
                    oy = raw[b, (2 * g + 1) * s * s + sub, i, j]
                    yc = min(max(i + oy.item(), 0.0), h - 1.0)
                    xc = min(max(j + ox.item(), 0.0), w - 1.0)
                    y0, x0 = math.floor(yc), math.floor(xc)
                    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                    wy, wx = yc - y0, xc - x0
                    spc = space[b, g * kk:(g + 1) * kk]
                    kernel = ((1 - wy) * (1 - wx) * spc[:, y0, x0] + (1 - wy) * wx * spc[:, y0, x1]
                              + wy * (1 - wx) * spc[:, y1, x0] + wy * wx * spc[:, y1, x1])
                    for ch in range(g * c // groups, (g + 1) * c // groups):
                        for t in range(kk):
                            yy, xx = i + t // k - r, j + t % k - r
                            if 0 <= yy < h and 0 <= xx < w:
                                out[b, ch, yo, xo] += kernel[t] * x[b, ch, yy, xx]
    return out


@pytest.mark.parametrize('shape, groups', [((3, 2), 2), ((1, 3), 1), ((2, 1), 2)])
def test_dlu_with_offsets_matches_explicit_sampling(shape, groups):
    dlu = DLU(4, 2, up_kernel=3, up_group=groups, compressed_channels=3).double()
    randomise_(dlu)
    with torch.no_grad():  # offsets of about +-1.5 px: interior, fractional and clamped samples
        dlu.guidance_offsets.weight.mul_(3)
        dlu.guidance_offsets.bias.copy_(randn(dlu.guidance_offsets.bias.shape[0], seed=3))
    x = randn(1, 4, *shape, seed=4)
    with torch.no_grad():
        out = dlu(x)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, explicit_dlu(dlu, x))


# ------------------------------------------------------------------------------------- FADE
@pytest.mark.parametrize('gate', [True, False])
def test_fade_matches_independent(gate):
    fade = randomise_(FADE(4, 2, up_kernel=3, compressed_channels=3, gate=gate).double())
    x, guide = randn(2, 4, 3, 2), randn(2, 4, 6, 4, seed=1)
    # one shared conv on both paths, so its bias appears twice
    logits = (fade.encoder(fade.guide_compressor(guide))
              + repeat(fade.encoder(fade.compressor(x)), 2))
    want = loop_reassemble(x, logits.softmax(1), 3, 1, 2)
    if gate:
        g = torch.sigmoid(repeat(fade.gate(x), 2))
        want = g * guide + (1 - g) * want
    torch.testing.assert_close(fade(x, guide), want)


# ------------------------------------------------------------------------------------- SAPA
def test_sapa_matches_explicit_attention():
    sapa = randomise_(SAPA(4, 2, up_kernel=3, embedding_dim=3).double())
    x, guide = randn(1, 4, 3, 2), randn(1, 4, 6, 4, seed=1)

    def layer_norm(t, norm):  # over channels at every pixel, affine
        mean = t.mean(1, keepdim=True)
        var = t.var(1, unbiased=False, keepdim=True)
        return ((t - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1)
                + norm.bias.view(1, -1, 1, 1))

    with torch.no_grad():
        q = sapa.q_proj(layer_norm(guide, sapa.norm_guide))
        key = sapa.k_proj(layer_norm(x, sapa.norm_x))
        want = torch.zeros(1, 4, 6, 4, dtype=x.dtype)
        for yo in range(6):
            for xo in range(4):
                i, j = yo // 2, xo // 2
                logits, values = [], []
                for t in range(9):
                    yy, xx = i + t // 3 - 1, j + t % 3 - 1
                    inside = 0 <= yy < 3 and 0 <= xx < 2
                    # outside taps: logit 0 and value 0, no 1/sqrt(d) scaling
                    logits.append((q[0, :, yo, xo] * key[0, :, yy, xx]).sum() if inside
                                  else torch.zeros((), dtype=x.dtype))
                    values.append(x[0, :, yy, xx] if inside else torch.zeros(4, dtype=x.dtype))
                attn = torch.stack(logits).softmax(0)
                want[0, :, yo, xo] = (attn[:, None] * torch.stack(values)).sum(0)
        torch.testing.assert_close(sapa(x, guide), want)


def test_sapa_group_norm_variant():
    sapa = randomise_(SAPA(32, 2, embedding_dim=4, norm='gn').double())
    assert isinstance(sapa.norm_x, nn.GroupNorm) and sapa.norm_x.num_groups == 32
    x, guide = randn(1, 32, 2, 3), randn(1, 32, 4, 6, seed=1)
    gn = sapa.norm_x  # the same affine GroupNorm maths through F.group_norm
    q = sapa.q_proj(F.group_norm(guide, 32, sapa.norm_guide.weight, sapa.norm_guide.bias,
                                 gn.eps))
    key = sapa.k_proj(F.group_norm(x, 32, gn.weight, gn.bias, gn.eps))
    r = 2
    windows = F.pad(key, (r, r, r, r)).unfold(2, 5, 1).unfold(3, 5, 1)  # (N, d, H, W, 5, 5)
    logits = (repeat(windows.flatten(4).permute(0, 1, 4, 2, 3).flatten(1, 2), 2)
              .reshape(1, 4, 25, 4, 6) * q[:, :, None]).sum(1)
    torch.testing.assert_close(sapa(x, guide), loop_reassemble(x, logits.softmax(1), 5, 1, 2))


# ------------------------------------------------------------------------------------- shared
def tiny_modules():
    """(module, needs guide) in float64 with non-trivial weights (DLU offsets fractional)."""
    dlu = randomise_(DLU(4, 2, up_kernel=3, up_group=2, compressed_channels=3))
    with torch.no_grad():
        dlu.guidance_offsets.bias.add_(0.37)
    return [
        (randomise_(CARAFE(4, 2, up_kernel=3, up_group=2, compressed_channels=3)), False),
        (dlu, False),
        (randomise_(FADE(4, 2, up_kernel=3, compressed_channels=3)), True),
        (randomise_(SAPA(4, 2, up_kernel=3, embedding_dim=3)), True),
    ]


@pytest.mark.parametrize('index', range(4), ids=['CARAFE', 'DLU', 'FADE', 'SAPA'])
def test_gradcheck(index):
    module, guided = tiny_modules()[index]
    module.double()
    x = randn(1, 4, 2, 3).requires_grad_(True)
    guide = randn(1, 4, 4, 6, seed=1).requires_grad_(True)
    if guided:
        assert torch.autograd.gradcheck(module, (x, guide))
    else:
        assert torch.autograd.gradcheck(module, (x,))


def _cpu_half_conv():
    try:
        torch.nn.functional.conv2d(torch.zeros(1, 1, 1, 1, dtype=torch.float16),
                                   torch.zeros(1, 1, 1, 1, dtype=torch.float16))
    except RuntimeError:
        return False
    return True


LOW_PRECISION = [pytest.param(torch.float16, marks=pytest.mark.skipif(
    not _cpu_half_conv(), reason='this torch (< 2.2) has no float16 convolution on the CPU '
    '("slow_conv2d_cpu" not implemented for \'Half\')')), torch.bfloat16]


@pytest.mark.parametrize('dtype', LOW_PRECISION, ids=str)
@pytest.mark.parametrize('index', range(4), ids=['CARAFE', 'DLU', 'FADE', 'SAPA'])
def test_low_precision_and_one_pixel_maps(index, dtype):
    module, guided = tiny_modules()[index]
    for h, w in ((1, 3), (3, 1)):
        x, guide = randn(2, 4, h, w, dtype=torch.float32), randn(2, 4, 2 * h, 2 * w, seed=1,
                                                                 dtype=torch.float32)
        want = module(x, guide if guided else None)
        assert want.shape == (2, 4, 2 * h, 2 * w) and torch.isfinite(want).all()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = module(x, guide if guided else None)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        torch.testing.assert_close(out, want, atol=0.15, rtol=0.05)
        low = module.to(dtype)(x.to(dtype), guide.to(dtype) if guided else None)
        module.float()
        assert low.dtype == dtype and torch.isfinite(low).all()
        torch.testing.assert_close(low.float(), want, atol=0.15, rtol=0.05)


def hostile_neck_init_(module):
    """What a neck does before calling init_weights(), made to leave visible traces."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.5)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.constant_(m.weight, 2.0)


def test_init_weights_survives_neck_xavier_pass():
    carafe, dlu, fade, sapa = CARAFE(256), DLU(256), FADE(256), SAPA(256)
    for module in (carafe, dlu, fade, sapa):
        hostile_neck_init_(module)
        module.init_weights()
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                assert not m.bias.any(), f'{type(module).__name__}: conv bias not reset to 0'
    assert abs(carafe.encoder.weight.std().item() - 0.001) < 5e-5
    bound = math.sqrt(6 / (256 + 64))  # xavier-uniform of the 1x1 compressor
    assert carafe.compressor.weight.abs().max() <= bound
    assert abs(carafe.compressor.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert not dlu.guidance_offsets.weight.any() and not dlu.guidance_offsets.bias.any()
    assert abs(dlu.kernel_space_encoder.weight.std().item() - 0.001) < 5e-5
    assert abs(fade.encoder.weight.std().item() - math.sqrt(2 / (9 * 64 + 9 * 25))) < 2e-3
    assert abs(sapa.q_proj.weight.std().item() - 0.02) < 1e-3
    assert (sapa.norm_x.weight == 1).all() and not sapa.norm_guide.bias.any()


# ------------------------------------------------------------------------------------- errors
def test_constructor_errors():
    for cls in (CARAFE, DLU, FADE, SAPA):
        with pytest.raises(ValueError, match='up_kernel must be an odd'):
            cls(8, up_kernel=4)
        with pytest.raises(TypeError, match='scale_factor must be an integer'):
            cls(8, scale_factor=2.0)
        with pytest.raises(ValueError, match='scale_factor must be an integer >= 1'):
            cls(8, scale_factor=0)
    for cls in (CARAFE, DLU):
        with pytest.raises(ValueError, match='channels=6 must be divisible by up_group=4'):
            cls(6, up_group=4)
        with pytest.raises(ValueError, match='encoder_kernel must be an odd'):
            cls(8, encoder_kernel=2)
    with pytest.raises(ValueError, match="norm must be one of"):
        SAPA(32, norm='bn')
    with pytest.raises(ValueError, match='divisible by GroupNorm groups=32'):
        SAPA(48, norm='gn')


def test_forward_errors():
    carafe, dlu = CARAFE(4, compressed_channels=3), DLU(4, compressed_channels=3)
    fade, sapa = FADE(4, compressed_channels=3), SAPA(4, embedding_dim=3)
    x, guide = torch.randn(1, 4, 3, 2), torch.randn(1, 4, 6, 4)
    for module in (carafe, dlu, fade, sapa):
        with pytest.raises(ValueError, match='4-D'):
            module(x[0], guide)
        with pytest.raises(ValueError, match='must have 4 channels'):
            module(torch.randn(1, 5, 3, 2), guide)
    for module in (fade, sapa):
        with pytest.raises(ValueError, match='guided upsampler'):
            module(x)
        with pytest.raises(ValueError, match='guide must have spatial size'):
            module(x, guide[..., :3])
        with pytest.raises(ValueError, match='guide must have 4 channels'):
            module(x, guide[:, :2])
        with pytest.raises(ValueError, match='batch size'):
            module(x, torch.cat([guide, guide]))
        with pytest.raises(TypeError, match='same dtype'):
            module(x, guide.double())
        with pytest.raises(ValueError, match='same device'):
            module(x, guide.to('meta'))
