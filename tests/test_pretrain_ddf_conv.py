"""DDFConv (DDF as a conv replacement): against an unfold-based oracle on the conv grid, the
FilterNorm properties of its branches, params, gradients and argument errors. Torch only."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlu_mm.pretrain.ddf_conv import DDFConv


def ddf_conv_params(channels, k=3, se_ratio=0.2, head=1):
    """Independent count: spatial 1x1 conv (bias) + channel squeeze/expand convs (bias) +
    FilterNorm scale (C*k*k)."""
    hidden = int(se_ratio * channels)
    spatial = channels * head * k * k + head * k * k
    channel = channels * hidden + hidden + hidden * channels * k * k + channels * k * k
    return spatial + channel + channels * k * k


def oracle(module, x):
    """Y[c, p] = sum_t unfold(x)[c, t, p] * combine(S[head(c), t, p], Ch[c, t]) with the taps of
    nn.Conv2d(k, stride, padding=dilation*(k-1)//2, dilation) (zero padding = skipped taps)."""
    n, c, h, w = x.shape
    k, s, d, head = module.kernel_size, module.stride, module.dilation, module.head
    spatial = module.spatial_branch(x)
    channel = module.channel_branch(x)
    out_h = (h + 2 * (d * (k - 1) // 2) - d * (k - 1) - 1) // s + 1
    out_w = (w + 2 * (d * (k - 1) // 2) - d * (k - 1) - 1) // s + 1
    cols = F.unfold(x, k, dilation=d, padding=d * (k - 1) // 2, stride=s)
    cols = cols.view(n, c, k * k, out_h, out_w)
    spatial = spatial.view(n, head, k * k, out_h, out_w).repeat_interleave(c // head, dim=1)
    channel = channel.view(n, c, k * k, 1, 1)
    weight = spatial * channel if module.kernel_combine == 'mul' else spatial + channel
    return (cols * weight).sum(2)


@pytest.mark.parametrize('stride,dilation,head,combine,size', [
    (1, 1, 1, 'mul', (7, 6)),
    (2, 1, 1, 'mul', (7, 5)),   # odd sizes: output ceil(H/2) like the conv and the shortcut
    (2, 1, 2, 'add', (8, 9)),
    (1, 2, 2, 'add', (5, 7)),
    (2, 2, 1, 'mul', (9, 9)),
])
def test_matches_unfold_oracle_on_conv_grid(stride, dilation, head, combine, size):
    torch.manual_seed(0)
    module = DDFConv(8, 3, stride=stride, dilation=dilation, head=head,
                     kernel_combine=combine).double()
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    out = module(x)
    conv = nn.Conv2d(8, 8, 3, stride, padding=dilation, dilation=dilation)
    assert out.shape == conv(x.float()).shape
    torch.testing.assert_close(out, oracle(module, x), rtol=1e-10, atol=1e-10)


def test_kernel_size_5_and_non_contiguous_input():
    torch.manual_seed(1)
    module = DDFConv(6, 5, stride=2, se_ratio=0.5).double()
    x = torch.randn(2, 11, 6, 6, dtype=torch.float64).permute(0, 3, 1, 2)  # (2, 6, 11, 6)
    torch.testing.assert_close(module(x), oracle(module, x.contiguous()), rtol=1e-10, atol=1e-10)


def test_branches_are_filter_normalised():
    torch.manual_seed(2)
    module = DDFConv(16, 3, stride=2, head=2).double()
    for conv in module.modules():  # zero biases + ReLU could leave a sample's filter all 0
        if isinstance(conv, nn.Conv2d):
            nn.init.normal_(conv.bias)
    x = torch.randn(3, 16, 6, 6, dtype=torch.float64)
    gain = nn.init.calculate_gain('relu')
    spatial = module.spatial_branch(x).view(3, 2, 9, 3, 3)
    # zero mean and unbiased std gain/k over every filter's 9 taps
    torch.testing.assert_close(spatial.mean(2), torch.zeros_like(spatial.mean(2)), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(spatial.std(2), torch.full_like(spatial.std(2), gain / 3))
    channel = module.channel_branch(x).view(3, 16, 9) / module.channel_branch.scale
    torch.testing.assert_close(channel.mean(2), torch.zeros(3, 16, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(channel.std(2), torch.ones(3, 16, dtype=torch.float64))
    # the channel filter is one per (sample, channel): independent of position
    shifted = module.channel_branch(x.roll(1, dims=-1))
    torch.testing.assert_close(shifted, module.channel_branch(x))


@pytest.mark.parametrize('channels,head', [(64, 1), (128, 1), (256, 1), (512, 1), (40, 4)])
def test_param_count_formula(channels, head):
    module = DDFConv(channels, 3, stride=2, head=head)
    assert sum(p.numel() for p in module.parameters()) == ddf_conv_params(channels, head=head)


def test_param_count_known_values():
    # by hand: 64 mid channels, hidden 12: 585 + 780 + 6912 + 576 + 576
    assert sum(p.numel() for p in DDFConv(64).parameters()) == 9429


def test_gradcheck():
    torch.manual_seed(3)
    module = DDFConv(4, 3, stride=2, se_ratio=0.5).double()
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)
    module(x).square().sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_empty_batch_and_one_pixel():
    module = DDFConv(8, 3, stride=2)
    assert module(torch.randn(0, 8, 5, 5)).shape == (0, 8, 3, 3)
    assert module(torch.randn(2, 8, 1, 1)).shape == (2, 8, 1, 1)


def test_bfloat16_close_to_float32():
    torch.manual_seed(4)
    module = DDFConv(8, 3, stride=2)
    x = torch.randn(2, 8, 6, 7)
    ref = module(x)
    out = module.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2 * ref.abs().max().item())


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(kernel_size=4), ValueError, 'kernel_size'),
    (dict(kernel_size=1), ValueError, 'kernel_size'),
    (dict(stride=0), ValueError, 'stride'),
    (dict(stride=1.5), TypeError, 'stride'),
    (dict(head=3), ValueError, 'head'),
    (dict(se_ratio=0.01), ValueError, 'se_ratio'),
    (dict(se_ratio='big'), TypeError, 'se_ratio'),
    (dict(kernel_combine='max'), ValueError, 'kernel_combine'),
    (dict(nonlinearity='swish'), ValueError, 'swish'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DDFConv(8, **kwargs)


def test_bad_input():
    module = DDFConv(8)
    with pytest.raises(ValueError, match='8 channels'):
        module(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match='4-D'):
        module(torch.randn(8, 5, 5))
