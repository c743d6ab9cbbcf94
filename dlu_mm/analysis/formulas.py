"""Closed-form parameter and FLOP counts of every upsampler (design spec, sections 1-5).

Each operator has ``<op>_params(channels, scale_factor, **kwargs) -> int`` and
``<op>_flops(channels, scale_factor, height, width, **kwargs) -> Counter`` (FLOPs of one
forward on a 1 x C x H x W input, by the categories of :mod:`dlu_mm.analysis.op_costs`), with
the keyword arguments and defaults of the module. FLOPs = 2 x MACs with bias adds counted (a
conv costs 2 * (fan_in + 1) * out_channels per output pixel), one bilinear sample 8 FLOPs;
element-wise ops, norms, softmax and activations count 0. Apart from DDF-Up's per-image channel
branch every term is per low-res pixel, so FLOPs / (H*W) is the spec's "FLOPs/px".

Where these formulas go beyond the spec's numbers, the difference is stated:
- LDA-AQU: the spec's "about 268k" (C=256, s=2) leaves out the bilinear upsampling of the
  queries (8 * D * s^2 = 2,048/px), counted here as sampling: 270,624/px.
- DDF-Up, DySample, FADE, SAPA and the fixed baselines have no FLOP number in the spec; their
  formulas follow the same convention (DDF: 3 FLOPs per tap and output value).
"""
from collections import Counter

from .op_costs import BILINEAR_SAMPLE_FLOPS, DDF_TAP_FLOPS

__all__ = ['SPEC_FORMULAS', 'spec_params', 'spec_flops', 'canonical_type']


def _conv_flops(fan_in, out_channels, bias=True):
    """Per output pixel (the spec's ``2 * (fan_in + 1) * out_channels``)."""
    return 2 * (fan_in + int(bias)) * out_channels


# --- CARAFE (section 1) -----------------------------------------------------------------------
def carafe_params(channels, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
                  encoder_dilation=1, compressed_channels=64):
    c, s, k, g, ke, cm = (channels, scale_factor, up_kernel, up_group, encoder_kernel,
                          compressed_channels)
    return c * cm + cm + cm * ke ** 2 * g * k ** 2 * s ** 2 + g * k ** 2 * s ** 2


def carafe_flops(channels, scale_factor, height, width, up_kernel=5, up_group=1,
                 encoder_kernel=3, encoder_dilation=1, compressed_channels=64):
    c, s, k, g, ke, cm = (channels, scale_factor, up_kernel, up_group, encoder_kernel,
                          compressed_channels)
    hw = height * width
    return Counter(conv=hw * (_conv_flops(c, cm) + _conv_flops(cm * ke ** 2, g * k * k * s * s)),
                   reassembly=hw * 2 * k * k * c * s * s)


# --- DLU (section 2) --------------------------------------------------------------------------
def dlu_params(channels, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
               encoder_dilation=1, compressed_channels=64):
    c, s, k, g, ke, cm = (channels, scale_factor, up_kernel, up_group, encoder_kernel,
                          compressed_channels)
    return (c * cm + cm + (cm * ke ** 2 * g * k ** 2 + g * k ** 2)
            + (cm * ke ** 2 * 2 * g * s ** 2 + 2 * g * s ** 2))


def dlu_flops(channels, scale_factor, height, width, up_kernel=5, up_group=1, encoder_kernel=3,
              encoder_dilation=1, compressed_channels=64):
    c, s, k, g, ke, cm = (channels, scale_factor, up_kernel, up_group, encoder_kernel,
                          compressed_channels)
    hw = height * width
    conv = _conv_flops(c, cm) + _conv_flops(cm * ke ** 2, g * k * k) + _conv_flops(
        cm * ke ** 2, 2 * g * s * s)
    return Counter(conv=hw * conv,
                   sampling=hw * BILINEAR_SAMPLE_FLOPS * g * k * k * s * s,
                   reassembly=hw * 2 * k * k * c * s * s)


# --- DDF-Up (section 3) -----------------------------------------------------------------------
def _ddf_hidden(channels, se_ratio):
    return int(se_ratio * channels)


def ddf_up_params(channels, scale_factor=2, kernel_size=3, dilation=1, head=1, se_ratio=0.2,
                  nonlinearity='linear', dw_kernel_size=3, joint_channels=-1,
                  kernel_combine='mul'):
    c, taps, dw = channels, kernel_size ** 2, max(dw_kernel_size, 3)
    hidden = _ddf_hidden(c, se_ratio)
    if joint_channels > 0:
        spatial = joint_channels * head * taps + head * taps
    else:
        spatial = c * dw * dw + c + c * head * taps + head * taps
    channel = c * hidden + hidden + hidden * c * taps + c * taps
    filter_scale = c * taps
    return scale_factor ** 2 * (spatial + channel + filter_scale)


def ddf_up_flops(channels, scale_factor, height, width, kernel_size=3, dilation=1, head=1,
                 se_ratio=0.2, nonlinearity='linear', dw_kernel_size=3, joint_channels=-1,
                 kernel_combine='mul'):
    c, taps, dw = channels, kernel_size ** 2, max(dw_kernel_size, 3)
    hidden = _ddf_hidden(c, se_ratio)
    hw, branches = height * width, scale_factor ** 2
    if joint_channels > 0:
        spatial = _conv_flops(joint_channels, head * taps)
    else:  # depthwise conv (fan-in dw*dw per channel), then 1x1 C -> head*k*k
        spatial = _conv_flops(dw * dw, c) + _conv_flops(c, head * taps)
    # the channel branch runs once per image on the pooled (N, C, 1, 1) input
    channel = _conv_flops(c, hidden) + _conv_flops(hidden, c * taps)
    return Counter(conv=branches * (hw * spatial + channel),
                   dynamic_filter=branches * hw * DDF_TAP_FLOPS * taps * c)


# --- LDA-AQU (section 4) ----------------------------------------------------------------------
def lda_aqu_params(channels, scale_factor=2, reduction_factor=4, num_heads=1, k_e=3, k_u=3,
                   groups=2, range_factor=11, rpb=True):
    c, d = channels, channels // reduction_factor
    dg, points = d // groups, k_u ** 2
    offset_net = 3 * 3 * dg + 2 * dg + dg * k_e ** 2 * 2 * points + 2 * points
    return 2 * c + 2 * c * d + offset_net + (points * d if rpb else 0)


def lda_aqu_flops(channels, scale_factor, height, width, reduction_factor=4, num_heads=1, k_e=3,
                  k_u=3, groups=2, range_factor=11, rpb=True):
    c, d, s = channels, channels // reduction_factor, scale_factor
    dg, points = d // groups, k_u ** 2
    hw, out = height * width, height * width * s * s
    offset_net = _conv_flops(3 * 3, dg, bias=False) + _conv_flops(dg * k_e ** 2, 2 * points)
    return Counter(
        conv=hw * 2 * _conv_flops(c, d, bias=False) + out * groups * offset_net,
        # bilinear upsampling of the queries, then D + C sampled values per point
        sampling=out * BILINEAR_SAMPLE_FLOPS * (d + (d + c) * points),
        attention=out * 2 * (d + c) * points)


# --- section 5 --------------------------------------------------------------------------------
def dysample_params(channels, scale_factor=2, groups=4, style='lp', dyscope=False):
    offset_channels = 2 * groups * scale_factor ** 2
    return (channels + 1) * offset_channels + (channels * offset_channels if dyscope else 0)


def dysample_flops(channels, scale_factor, height, width, groups=4, style='lp', dyscope=False):
    hw, offset_channels = height * width, 2 * groups * scale_factor ** 2
    conv = _conv_flops(channels, offset_channels)
    if dyscope:
        conv += _conv_flops(channels, offset_channels, bias=False)
    return Counter(conv=hw * conv,
                   sampling=hw * BILINEAR_SAMPLE_FLOPS * channels * scale_factor ** 2)


def fade_params(channels, scale_factor=2, up_kernel=5, encoder_kernel=3, compressed_channels=64,
                gate=True):
    c, k, ke, cm = channels, up_kernel, encoder_kernel, compressed_channels
    return 2 * c * cm + cm + cm * ke ** 2 * k ** 2 + k ** 2 + ((c + 1) if gate else 0)


def fade_flops(channels, scale_factor, height, width, up_kernel=5, encoder_kernel=3,
               compressed_channels=64, gate=True):
    c, s, k, ke, cm = channels, scale_factor, up_kernel, encoder_kernel, compressed_channels
    hw, out = height * width, height * width * s * s
    encoder = _conv_flops(cm * ke ** 2, k * k)
    # guide branch at high res, input branch at low res; the shared encoder runs on both
    conv = out * (_conv_flops(c, cm) + encoder) + hw * (_conv_flops(c, cm, bias=False) + encoder)
    if gate:
        conv += hw * _conv_flops(c, 1)
    return Counter(conv=conv, reassembly=out * 2 * k * k * c)


def sapa_params(channels, scale_factor=2, up_kernel=5, embedding_dim=64, norm='ln',
                qkv_bias=True):
    return 2 * 2 * channels + 2 * (channels * embedding_dim + (embedding_dim if qkv_bias else 0))


def sapa_flops(channels, scale_factor, height, width, up_kernel=5, embedding_dim=64, norm='ln',
               qkv_bias=True):
    c, s, k, d = channels, scale_factor, up_kernel, embedding_dim
    hw, out = height * width, height * width * s * s
    proj = _conv_flops(c, d, bias=qkv_bias)
    return Counter(conv=(out + hw) * proj,
                   matmul=out * 2 * d * k * k,  # query . key over the k x k window
                   reassembly=out * 2 * k * k * c)


def nearest_params(channels, scale_factor=2):
    return 0


def nearest_flops(channels, scale_factor, height, width):
    return Counter()


def bilinear_params(channels, scale_factor=2, align_corners=False):
    return 0


def bilinear_flops(channels, scale_factor, height, width, align_corners=False):
    return Counter(sampling=height * width * scale_factor ** 2 * BILINEAR_SAMPLE_FLOPS * channels)


def deconv_params(channels, scale_factor=2, upsample_kernel=3):
    return channels * channels * upsample_kernel ** 2 + channels


def deconv_flops(channels, scale_factor, height, width, upsample_kernel=3):
    # transposed conv: every input value meets C * k * k weights; one bias add per output
    hw = height * width
    return Counter(conv=hw * (2 * channels * channels * upsample_kernel ** 2
                              + 2 * channels * scale_factor ** 2))


def pixel_shuffle_params(channels, scale_factor=2, upsample_kernel=3):
    out_channels = channels * scale_factor ** 2
    return channels * upsample_kernel ** 2 * out_channels + out_channels


def pixel_shuffle_flops(channels, scale_factor, height, width, upsample_kernel=3):
    return Counter(conv=height * width * _conv_flops(channels * upsample_kernel ** 2,
                                                     channels * scale_factor ** 2))


#: upsampler type (as in build_upsampler) -> (params formula, FLOPs formula)
SPEC_FORMULAS = {
    'CARAFE': (carafe_params, carafe_flops),
    'DLU': (dlu_params, dlu_flops),
    'DDFUp': (ddf_up_params, ddf_up_flops),
    'LDAAQU': (lda_aqu_params, lda_aqu_flops),
    'DySample': (dysample_params, dysample_flops),
    'FADE': (fade_params, fade_flops),
    'SAPA': (sapa_params, sapa_flops),
    'nearest': (nearest_params, nearest_flops),
    'bilinear': (bilinear_params, bilinear_flops),
    'deconv': (deconv_params, deconv_flops),
    'pixel_shuffle': (pixel_shuffle_params, pixel_shuffle_flops),
}
_ALIASES = {'NearestUpsample': 'nearest', 'BilinearUpsample': 'bilinear',
            'DeconvUpsample': 'deconv', 'PixelShuffleUpsample': 'pixel_shuffle'}


def canonical_type(upsampler_type):
    """'NearestUpsample' -> 'nearest' etc.; a class is mapped by its name."""
    if isinstance(upsampler_type, type):
        upsampler_type = upsampler_type.__name__
    name = _ALIASES.get(upsampler_type, upsampler_type)
    if name not in SPEC_FORMULAS:
        raise ValueError(f'no spec formula for upsampler type {upsampler_type!r}; known: '
                         f'{", ".join(SPEC_FORMULAS)}')
    return name


def spec_params(cfg, channels, scale_factor):
    """Parameters of the upsampler built from ``cfg`` = dict(type=..., **kwargs)."""
    kwargs = dict(cfg)
    return SPEC_FORMULAS[canonical_type(kwargs.pop('type'))][0](channels, scale_factor, **kwargs)


def spec_flops(cfg, channels, scale_factor, height, width):
    """FLOPs (Counter by category) of one forward on a 1 x C x H x W input."""
    kwargs = dict(cfg)
    return SPEC_FORMULAS[canonical_type(kwargs.pop('type'))][1](channels, scale_factor, height,
                                                                width, **kwargs)
