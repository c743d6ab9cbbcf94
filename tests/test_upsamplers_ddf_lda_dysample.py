"""DDFUp, LDAAQU and DySample: parameter counts, module paths against independent
computations, init, edge shapes, dtypes and argument errors."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlu_mm.upsamplers import lda_aqu
from dlu_mm.upsamplers.ddf_up import DDFUp
from dlu_mm.upsamplers.dysample import DySample
from dlu_mm.upsamplers.lda_aqu import LDAAQU
import seeded
from seeded import randn
from op_cases import ddf_loop, lda_loop

pytestmark = pytest.mark.filterwarnings('ignore:dlu_mm. no compiled')


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def randomise(module, std=0.5, seed=0):
    return seeded.randomise_(module, std, seed)


@pytest.mark.parametrize('build,count', [
    (lambda: DDFUp(256), 560368),
    (lambda: DDFUp(256, joint_channels=256), 550128),
    (lambda: LDAAQU(256), 39410),
    (lambda: DySample(256), 8224),
    (lambda: DySample(256, dyscope=True), 16416),
])
def test_param_counts(build, count):
    assert num_params(build()) == count


# ---------------------------------------------------------------------------------------------
# DDFUp
# ---------------------------------------------------------------------------------------------
def hand_filter_norm(f, scale):
    """Standardise over the last dim (unbiased std), times scale."""
    n = f.shape[-1]
    mean = f.sum(-1, keepdim=True) / n
    std = (((f - mean) ** 2).sum(-1, keepdim=True) / (n - 1)).sqrt()
    return (f - mean) / (std + 1e-10) * scale


def ddfup_by_hand(m, x, guide=None):
    """Every sub-pixel branch filtered with the loop oracle, interleaved by slicing."""
    n, c, h, w = x.shape
    s, k, head = m.scale_factor, m.kernel_size, m.head
    gain = nn.init.calculate_gain(m.nonlinearity)
    out = torch.zeros(n, c, s * h, s * w, dtype=x.dtype)
    pooled = x.mean(dim=(2, 3), keepdim=True)
    for i in range(s * s):
        spatial_branch, spatial = m.spatial_branches[i], (guide if guide is not None else x)
        if guide is None:  # depthwise dw_k x dw_k conv, then the branch's 1x1 conv
            dw, spatial_branch = spatial_branch
            spatial = F.conv2d(spatial, dw.weight, dw.bias, padding=m.dw_kernel_size // 2,
                               groups=c)
        spatial = F.conv2d(spatial, spatial_branch.conv.weight, spatial_branch.conv.bias)
        spatial = hand_filter_norm(spatial.reshape(n, head, k * k, h, w).movedim(2, -1),
                                   gain / k).movedim(-1, 2).reshape(n, head * k * k, h, w)
        cb = m.channel_branches[i]
        channel = F.conv2d(F.relu(F.conv2d(pooled, cb.squeeze.weight, cb.squeeze.bias)),
                           cb.expand.weight, cb.expand.bias).reshape(n, c, k * k)
        channel = hand_filter_norm(channel, cb.scale).reshape(n, c, k, k)
        block = c // head
        for hh in range(head):
            out[:, hh * block:(hh + 1) * block, i // s::s, i % s::s] = ddf_loop(
                x[:, hh * block:(hh + 1) * block], channel[:, hh * block:(hh + 1) * block],
                spatial[:, hh * k * k:(hh + 1) * k * k], k, m.dilation, 1, m.kernel_combine)
    return out


@pytest.mark.parametrize('combine,dilation,head,scale', [
    ('mul', 1, 1, 2), ('add', 2, 1, 2), ('mul', 1, 2, 3), ('add', 1, 2, 2)])
def test_ddfup_matches_branchwise_ddf_loop(combine, dilation, head, scale):
    m = DDFUp(4, scale, dilation=dilation, head=head, kernel_combine=combine,
              nonlinearity='relu').double()
    x = randn(2, 4, 3, 5, seed=1)
    with torch.no_grad():
        got = m(x)
        want = ddfup_by_hand(m, x)
    assert got.shape == (2, 4, 3 * scale, 5 * scale)
    torch.testing.assert_close(got, want)


def test_ddfup_joint_mode_uses_same_resolution_guide():
    m = DDFUp(4, 2, joint_channels=3, kernel_combine='add').double()
    assert m.requires_guide and m.guide_channels == 3
    x, guide = randn(2, 4, 3, 5, seed=2), randn(2, 3, 3, 5, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(m(x, guide), ddfup_by_hand(m, x, guide))
    with pytest.raises(ValueError, match=r'\(N, 3, H, W\), got None'):
        m(x)
    with pytest.raises(ValueError, match='spatial size'):
        m(x, randn(2, 3, 6, 10))  # s x x's size is wrong in joint mode
    with pytest.raises(ValueError, match='guide must have 3 channels'):
        m(x, randn(2, 4, 3, 5))
    with pytest.raises(ValueError, match='batch'):
        m(x, randn(1, 3, 3, 5))
    with pytest.raises(TypeError, match='dtype'):
        m(x, guide.float())


def test_ddfup_without_joint_mode_ignores_guide():
    m = DDFUp(4).double()
    x = randn(1, 4, 3, 3)
    assert not m.requires_guide
    torch.testing.assert_close(m(x, randn(1, 7, 2, 2)), m(x))


# ---------------------------------------------------------------------------------------------
# LDAAQU
# ---------------------------------------------------------------------------------------------
def capture_op_args(monkeypatch):
    calls = []
    real = lda_aqu.local_deformable_attention

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(lda_aqu, 'local_deformable_attention', spy)
    return calls


def base_grid(k_u):
    r = (k_u - 1) // 2
    return [v for ky in range(k_u) for kx in range(k_u) for v in (ky - r, kx - r)]


@pytest.mark.parametrize('k_u,groups', [(3, 2), (5, 1)])
def test_ldaaqu_init_samples_regular_grid(monkeypatch, k_u, groups):
    calls = capture_op_args(monkeypatch)
    m = LDAAQU(16, k_u=k_u, groups=groups)
    m(torch.randn(2, 16, 3, 5))
    offsets = calls[0][3]
    assert offsets.shape == (2, groups * 2 * k_u * k_u, 6, 10)
    want = torch.tensor(base_grid(k_u) * groups, dtype=offsets.dtype).view(1, -1, 1, 1)
    assert torch.equal(offsets, want.expand_as(offsets))


def test_ldaaqu_offset_layout_and_range(monkeypatch):
    calls = capture_op_args(monkeypatch)
    m = LDAAQU(8, reduction_factor=2, range_factor=5)
    bias = torch.linspace(-2, 2, 18)
    with torch.no_grad():
        m.offset_net[-1].bias.copy_(bias)
    m(torch.randn(1, 8, 2, 3))
    offsets = calls[0][3]
    want = torch.tanh(bias) * 5 + torch.tensor(base_grid(3), dtype=torch.float32)
    for g in range(2):  # the offset net is shared: both groups see the same bias
        torch.testing.assert_close(offsets[:, g * 18:(g + 1) * 18],
                                   want.view(1, 18, 1, 1).expand(1, 18, 4, 6))


def ldaaqu_by_hand(m, x):
    """LDA-AQU from functional ops + the loop attention oracle."""
    n, c, h, w = x.shape
    s, g, d = m.scale_factor, m.groups, m.embed_channels
    normed = F.layer_norm(x.permute(0, 2, 3, 1), (c,), m.norm.weight, m.norm.bias,
                          m.norm.eps).permute(0, 3, 1, 2)
    query = F.conv2d(normed, m.q_proj.weight)
    key = F.conv2d(normed, m.k_proj.weight)
    q_up = F.interpolate(query, size=(s * h, s * w), mode='bilinear', align_corners=True)
    dw, ln, _, last = m.offset_net
    offsets = []
    for gg in range(g):
        t = q_up[:, gg * d // g:(gg + 1) * d // g]
        t = F.conv2d(t, dw.weight, padding=1, groups=d // g)
        t = F.layer_norm(t.permute(0, 2, 3, 1), (d // g,), ln.weight, ln.bias,
                         ln.eps).permute(0, 3, 1, 2)
        t = F.conv2d(F.gelu(t), last.weight, last.bias, padding=m.k_e // 2)
        base = torch.tensor(base_grid(m.k_u), dtype=x.dtype).view(1, -1, 1, 1)
        offsets.append(torch.tanh(t) * m.range_factor + base)
    return lda_loop(q_up, key, x, torch.cat(offsets, 1), m.rpb, m.num_heads, g)


@pytest.mark.parametrize('heads,groups,rpb', [(1, 2, True), (2, 1, False)])
def test_ldaaqu_matches_functional_pipeline(heads, groups, rpb):
    m = randomise(LDAAQU(8, reduction_factor=2, num_heads=heads, groups=groups, rpb=rpb,
                         range_factor=2).double(), std=0.3, seed=4)
    x = randn(1, 8, 3, 3, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ldaaqu_by_hand(m, x))


# ---------------------------------------------------------------------------------------------
# DySample
# ---------------------------------------------------------------------------------------------
def bilinear_border(feature, y, x):
    """feature [H][W]; bilinear at index coordinates (y, x), coordinates clamped to the map."""
    h, w = len(feature), len(feature[0])
    y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    wy, wx = y - y0, x - x0
    return ((1 - wy) * ((1 - wx) * feature[y0][x0] + wx * feature[y0][x1])
            + wy * ((1 - wx) * feature[y1][x0] + wx * feature[y1][x1]))


def dysample_by_hand(m, x):
    n, c, h, w = x.shape
    s, g = m.scale_factor, m.groups
    raw = F.conv2d(x, m.offset.weight, m.offset.bias)
    raw = raw * (0.5 * torch.sigmoid(F.conv2d(x, m.scope.weight)) if m.dyscope else 0.25)
    raw, xs = raw.tolist(), x.tolist()
    out = torch.zeros(n, c, s * h, s * w, dtype=x.dtype)
    for nn_ in range(n):
        for i in range(s * h):
            for j in range(s * w):
                for gg in range(g):
                    sub = gg * s * s + (i % s) * s + (j % s)
                    ox = raw[nn_][sub][i // s][j // s] + (j % s - (s - 1) / 2) / s
                    oy = raw[nn_][g * s * s + sub][i // s][j // s] + (i % s - (s - 1) / 2) / s
                    # centre (i//s + 0.5) + offset in pixels -> index coordinate (- 0.5)
                    y, xx = i // s + oy, j // s + ox
                    for cc in range(gg * c // g, (gg + 1) * c // g):
                        out[nn_, cc, i, j] = bilinear_border(xs[nn_][cc], y, xx)
    return out


@pytest.mark.parametrize('groups,scale,dyscope', [(2, 2, False), (1, 3, True), (4, 2, True)])
def test_dysample_matches_per_pixel_loop(groups, scale, dyscope):
    m = randomise(DySample(4, scale, groups=groups, dyscope=dyscope).double(), std=0.7, seed=6)
    x = randn(2, 4, 3, 4, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(m(x), dysample_by_hand(m, x))


@pytest.mark.parametrize('size,scale,groups', [((5, 7), 2, 4), ((4, 6), 3, 1), ((1, 5), 2, 2),
                                               ((3, 1), 4, 4)])
def test_dysample_zero_offsets_is_bilinear(size, scale, groups):
    for dtype, atol, rtol in ((torch.float32, 1e-6, 1e-5), (torch.float64, 1e-12, 0)):
        m = DySample(8, scale, groups=groups).to(dtype)
        nn.init.zeros_(m.offset.weight)
        x = randn(2, 8, *size, seed=8, dtype=dtype)
        want = F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=False)
        with torch.no_grad():
            torch.testing.assert_close(m(x), want, atol=atol, rtol=rtol)


def test_dysample_init_is_close_to_bilinear_and_dyscope_starts_equal():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, 5)
    plain, plus = DySample(16), DySample(16, dyscope=True)
    with torch.no_grad():
        plus.offset.weight.copy_(plain.offset.weight)
        want = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
        torch.testing.assert_close(plain(x), want, atol=5e-2, rtol=0)
        assert not torch.equal(plain(x), want)
        # scope starts at 0: 0.5 * sigmoid(0) = 0.25, DySample's static factor
        torch.testing.assert_close(plus(x), plain(x))


# ---------------------------------------------------------------------------------------------
# Shared behaviour
# ---------------------------------------------------------------------------------------------
SMALL = {
    'DDFUp': lambda: DDFUp(8),
    'DDFUp-joint': lambda: DDFUp(8, joint_channels=3),
    'LDAAQU': lambda: LDAAQU(8, reduction_factor=2, num_heads=2),
    'DySample': lambda: DySample(8),
    'DySample+': lambda: DySample(8, dyscope=True),
}


def run(m, x):
    guide = None
    if isinstance(m, DDFUp) and m.requires_guide:
        guide = randn(x.shape[0], 3, *x.shape[2:], seed=99, dtype=torch.float32).to(x.dtype)
    return m(x, guide)


@pytest.mark.parametrize('name', list(SMALL))
def test_gradcheck(name):
    m = randomise(SMALL[name]().double(), std=0.3, seed=9)
    x = randn(1, 8, 2, 3, seed=10).requires_grad_()
    guide = randn(1, 3, 2, 3, seed=11).requires_grad_()
    if name == 'DDFUp-joint':
        assert torch.autograd.gradcheck(m, (x, guide))
    else:
        assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.parametrize('name', list(SMALL))
def test_init_weights_survives_neck_xavier_pass(name):
    m = SMALL[name]()
    torch.manual_seed(1)
    m.init_weights()
    own = copy.deepcopy(m.state_dict())
    for mod in m.modules():  # what a neck's init does before calling init_weights() again
        if isinstance(mod, nn.Conv2d):
            nn.init.xavier_uniform_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    assert any(not torch.equal(own[k], v) for k, v in m.state_dict().items())
    torch.manual_seed(1)
    m.init_weights()
    for key, value in m.state_dict().items():
        assert torch.equal(own[key], value), key


def test_own_inits():
    dys = DySample(256, dyscope=True)
    assert 0.0008 < dys.offset.weight.std().item() < 0.0012
    assert not dys.offset.bias.any() and not dys.scope.weight.any()
    lda = LDAAQU(256)
    assert not lda.offset_net[-1].weight.any() and not lda.offset_net[-1].bias.any()
    assert 0.015 < lda.rpb.std().item() < 0.025
    assert torch.equal(lda.norm.weight, torch.ones(256))
    bound = math.sqrt(6 / (256 + 64))  # xavier-uniform 1x1 conv 256 -> 64
    assert 0.9 * bound < lda.q_proj.weight.abs().max() <= bound
    ddf_up = DDFUp(256, nonlinearity='relu')
    scale = torch.stack([branch.scale for branch in ddf_up.channel_branches])
    assert scale.shape == (4, 256, 9)
    assert abs(scale.std().item() - math.sqrt(2) / 3) < 0.02


@pytest.mark.parametrize('name', list(SMALL))
@pytest.mark.parametrize('shape', [(0, 8, 3, 4), (2, 8, 1, 5), (2, 8, 4, 1), (1, 8, 1, 1)])
def test_edge_shapes(name, shape):
    m = randomise(SMALL[name](), std=0.2)
    x = torch.randn(shape)
    out = run(m, x)
    assert out.shape == (shape[0], 8, 2 * shape[2], 2 * shape[3])
    assert torch.isfinite(out).all()
    if shape[0]:
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize('name', list(SMALL))
def test_fp64_and_bf16_autocast(name):
    m = randomise(SMALL[name](), std=0.2)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        want = run(m, x)
        out64 = run(m.double(), x.double())
        assert out64.dtype == torch.float64
        m.float()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = run(m, x)
    assert out.dtype == x.dtype  # the convs run in bf16; the op and the output stay in x's dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out64.float(), want, rtol=1e-4, atol=1e-4)
    assert (out - want).abs().mean() < 0.05 * want.abs().mean()


def test_errors():
    with pytest.raises(ValueError, match='divisible by groups'):
        DySample(6, groups=4)
    with pytest.raises(ValueError, match='style'):
        DySample(8, style='pl')
    with pytest.raises(TypeError, match='dyscope'):
        DySample(8, dyscope=1)
    with pytest.raises(ValueError, match='divisible by groups'):
        LDAAQU(8, reduction_factor=4, groups=4)  # D = 2
    with pytest.raises(ValueError, match='divisible by num_heads'):
        LDAAQU(12, reduction_factor=2, num_heads=4)
    with pytest.raises(ValueError, match='divisible by reduction_factor'):
        LDAAQU(10, reduction_factor=4)
    with pytest.raises(ValueError, match='k_u must be an odd'):
        LDAAQU(16, k_u=4)
    with pytest.raises(ValueError, match='k_e must be an odd'):
        LDAAQU(16, k_e=2)
    with pytest.raises(ValueError, match='range_factor'):
        LDAAQU(16, range_factor=-1)
    with pytest.raises(ValueError, match='kernel_size must be an odd'):
        DDFUp(8, kernel_size=4)
    with pytest.raises(ValueError, match='kernel_size must be an integer >= 3'):
        DDFUp(8, kernel_size=1)
    with pytest.raises(ValueError, match='kernel_combine'):
        DDFUp(8, kernel_combine='sum')
    with pytest.raises(ValueError, match='divisible by head'):
        DDFUp(8, head=3)
    with pytest.raises(ValueError, match='joint_channels'):
        DDFUp(8, joint_channels=0)
    with pytest.raises(ValueError, match='se_ratio'):
        DDFUp(4, se_ratio=0)
    with pytest.raises(ValueError, match='nonlinearity'):
        DDFUp(8, nonlinearity='swish')
    for cls in (DDFUp, LDAAQU, DySample):
        with pytest.raises(TypeError, match='scale_factor must be an integer'):
            cls(8, scale_factor=2.0)
        with pytest.raises(ValueError, match='4-D'):
            cls(8)(torch.randn(8, 3, 4))
        with pytest.raises(ValueError, match='8 channels'):
            cls(8)(torch.randn(1, 4, 3, 4))


def test_dw_kernel_size_clamped_and_padded():
    m = DDFUp(4, dw_kernel_size=1)
    assert m.dw_kernel_size == 3
    m = DDFUp(4, dw_kernel_size=5)
    assert m.spatial_branches[0][0].padding == (2, 2)
    assert m(torch.randn(1, 4, 3, 5)).shape == (1, 4, 6, 10)
