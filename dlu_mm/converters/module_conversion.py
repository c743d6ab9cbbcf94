"""Convert one upsampler module of a source checkpoint: rename its tensors, read its cfg.

:func:`convert_module` checks a module's keys against :data:`~.sources.RENAMES`, renames them
(LDA-AQU's rpb is also reshaped) and infers the dlu_mm upsampler cfg from the tensor shapes,
refusing with :class:`ConversionError` what has no exact counterpart in dlu_mm.
"""
import math
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .sources import OPTIONAL, RENAMES, SCALE


class ConversionError(ValueError):
    """The checkpoint cannot be converted exactly (refusal), or is not the named source."""


def _shape(tensor):
    return tuple(tensor.shape)


def _odd_square_root(value):
    root = math.isqrt(value) if value > 0 else 0
    return root if root * root == value and root % 2 == 1 else None


def _conv_kernel(where, name, tensor):
    if tensor.dim() != 4 or tensor.shape[2] != tensor.shape[3]:
        raise ConversionError(f'{where}{name}: expected a square conv weight (out, in, k, k), '
                              f'got shape {_shape(tensor)}')
    return tensor.shape[2]


def convert_module(kind: str, tensors: Mapping[str, torch.Tensor], where: str,
                   channels: Optional[int] = None
                   ) -> Tuple[Dict[str, torch.Tensor], List[Tuple[str, str]],
                              List[Tuple[str, str]], dict]:
    """(converted {suffix: tensor}, [(old, new)], [(suffix, why)], inferred cfg) of one module.

    ``kind``: a key of :data:`~.sources.RENAMES`; ``tensors``: the module's {suffix: tensor};
    ``where``: its key prefix (for messages); ``channels``: the feature width it upsamples, when
    known (checked against its input conv).
    """
    if kind not in RENAMES:
        raise ValueError(f'kind must be one of {sorted(RENAMES)}, got {kind!r}')
    renames = RENAMES[kind]
    known = set(renames) | OPTIONAL.get(kind, set()) | ({'scope.bias'} if kind == 'dysample'
                                                       else set())
    unknown = sorted(set(tensors) - known)
    if unknown:
        raise ConversionError(
            f'{where}*: keys {unknown} are not part of the {kind} module this source has '
            f'(expected {sorted(known)}); refusing rather than guessing what they do')
    required = set(renames) - OPTIONAL.get(kind, set())
    missing = sorted(required - set(tensors))
    if missing:
        raise ConversionError(f'{where}*: the {kind} module lacks {missing}')
    out, renamed, dropped = OrderedDict(), [], []
    for name, tensor in tensors.items():
        if name in renames:
            out[renames[name]] = tensor
            renamed.append((name, renames[name]))
    cfg = {'carafe': _carafe_cfg, 'dlu': _dlu_cfg, 'lda-aqu': _lda_aqu_cfg,
           'dysample': _dysample_cfg}[kind](tensors, out, renamed, dropped, where, channels)
    first = {'carafe': 'channel_compressor.weight', 'dlu': 'channel_compressor.weight',
             'lda-aqu': 'proj_q.weight', 'dysample': 'offset.weight'}[kind]
    if channels is not None and tensors[first].shape[1] != channels:
        raise ConversionError(f'{where}{first} {_shape(tensors[first])} takes '
                              f'{tensors[first].shape[1]} channels, but the features it '
                              f'upsamples have {channels}')
    return out, renamed, dropped, cfg


def _carafe_cfg(tensors, out, renamed, dropped, where, channels):
    compressed = tensors['channel_compressor.weight'].shape[0]
    encoder = tensors['content_encoder.weight']
    encoder_kernel = _conv_kernel(where, 'content_encoder.weight', encoder)
    cfg = dict(type='CARAFE', compressed_channels=compressed, encoder_kernel=encoder_kernel)
    taps, rest = divmod(encoder.shape[0], SCALE * SCALE)
    for groups in (1, 2, 4, 8, 16):  # G * k * k taps; the smallest G with an odd k
        if not rest and taps % groups == 0 and _odd_square_root(taps // groups):
            cfg.update(up_kernel=_odd_square_root(taps // groups), up_group=groups)
            break
    else:
        raise ConversionError(f'{where}content_encoder.weight: {encoder.shape[0]} output '
                              f'channels are not G*k*k*{SCALE * SCALE} for an odd k')
    return cfg


def _dlu_cfg(tensors, out, renamed, dropped, where, channels):
    compressed = tensors['channel_compressor.weight'].shape[0]
    space = tensors['kernel_space_generator.weight']
    offsets = tensors['conv_offset.weight']
    encoder_kernel = _conv_kernel(where, 'kernel_space_generator.weight', space)
    groups, rest = divmod(offsets.shape[0], 2 * SCALE * SCALE)
    if rest or groups < 1:
        raise ConversionError(f'{where}conv_offset.weight: {offsets.shape[0]} output channels '
                              f'are not 2*G*{SCALE}*{SCALE}')
    if groups != 1:
        raise ConversionError(
            f'{where}: conv_offset has {offsets.shape[0]} output channels, i.e. up_group={groups};'
            f" the DLU authors' DLUPack only runs with up_group=1 (its grid_sample fails for "
            f'G > 1), so such a file cannot come from their code and has no verified mapping')
    up_kernel = _odd_square_root(space.shape[0])
    if up_kernel is None:
        raise ConversionError(f'{where}kernel_space_generator.weight: {space.shape[0]} output '
                              f'channels are not k*k for an odd k')
    return dict(type='DLU', compressed_channels=compressed, encoder_kernel=encoder_kernel,
                up_kernel=up_kernel, up_group=1)


def _lda_aqu_cfg(tensors, out, renamed, dropped, where, channels):
    embed, channels = tensors['proj_q.weight'].shape[:2]
    group_channels = tensors['conv_offset.0.weight'].shape[0]
    last = tensors['conv_offset.3.weight']
    k_e = _conv_kernel(where, 'conv_offset.3.weight', last)
    if embed % group_channels or channels % embed:
        raise ConversionError(f'{where}: proj_q {_shape(tensors["proj_q.weight"])} and '
                              f'conv_offset.0 {_shape(tensors["conv_offset.0.weight"])} do not '
                              f'give whole reduction_factor / groups')
    k_u = _odd_square_root(last.shape[0] // 2) if last.shape[0] % 2 == 0 else None
    if k_u is None:
        raise ConversionError(f'{where}conv_offset.3.weight: {last.shape[0]} output channels '
                              f'are not 2*k_u*k_u for an odd k_u')
    cfg = dict(type='LDAAQU', reduction_factor=channels // embed, groups=embed // group_channels,
               k_e=k_e, k_u=k_u, rpb='relative_position_bias_table' in tensors)
    if cfg['rpb']:
        table = tensors['relative_position_bias_table']
        if table.dim() != 5 or table.shape[0] != 1 or table.shape[2] != 1 \
                or table.shape[3] != k_u * k_u or table.shape[1] * table.shape[4] != embed:
            raise ConversionError(
                f'{where}relative_position_bias_table: expected (1, nh, 1, {k_u * k_u}, '
                f'{embed}/nh), got {_shape(table)}')
        out['rpb'] = table.reshape(table.shape[1], table.shape[3], table.shape[4])
        renamed.append(('relative_position_bias_table', 'rpb'))
        cfg['num_heads'] = table.shape[1]
    return cfg


def _dysample_cfg(tensors, out, renamed, dropped, where, channels):
    from ..upsamplers.dysample import subpixel_init_positions
    offset = tensors['offset.weight']
    out_channels, in_channels = offset.shape[:2]
    init_pos = tensors.get('init_pos')
    per_group = 2 * SCALE * SCALE
    pl_style = (out_channels % per_group != 0
                or (init_pos is not None and init_pos.numel() != out_channels)
                or (channels is not None and in_channels * SCALE * SCALE == channels))
    if pl_style:
        raise ConversionError(
            f"{where}: offset.weight {_shape(offset)} is DySample's 'pl' style (offsets predicted "
            f'after pixel shuffle, {in_channels} input channels); dlu_mm has only the \'lp\' '
            f'style, so it has no counterpart')
    groups = out_channels // per_group
    if init_pos is not None:
        expected = subpixel_init_positions(SCALE, groups, dtype=torch.float64).flatten()
        if not torch.allclose(init_pos.double().flatten(), expected, atol=1e-6):
            raise ConversionError(
                f"{where}init_pos differs from DySample's constant sub-pixel positions "
                f'{expected.tolist()}; dlu_mm derives them, so this file has no counterpart')
        dropped.append(('init_pos', "constant sub-pixel positions, derived by dlu_mm's DySample"))
    bias = tensors.get('scope.bias')
    if bias is not None:
        if bias.abs().max().item() != 0:
            raise ConversionError(
                f'{where}scope.bias is non-zero (max |value| {bias.abs().max().item():.3g}): '
                f"dlu_mm's DySample+ scope conv has no bias (as DySample's current code), so "
                f'dropping it would change the outputs; there is no exact counterpart')
        dropped.append(('scope.bias', 'all zero (no bias in dlu_mm\'s scope conv)'))
    return dict(type='DySample', groups=groups, style='lp', dyscope='scope.weight' in tensors)
