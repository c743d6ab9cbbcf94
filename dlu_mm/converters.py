"""Convert released upsampler checkpoints of other code bases to dlu_mm's state_dict layout.

Sources (key names, shapes and verification: ``shared/design/checkpoints.md``):

- ``mmdet-carafe``: mmdet's CARAFE zoo (``FPN_CARAFE`` neck with mmcv ``CARAFEPack`` modules,
  Mask R-CNN's ``FCNMaskHead`` with a CARAFE upsampler), mmdet 2.x or 3.x files.
- ``dlu``: DLU authors' mmdet-3 fork (``UNIFIED_FPN`` with ``DLUPack`` modules).
- ``lda-aqu``: LDA-AQU authors' mmdet-2.25 fork (``FPN_LAU`` with ``LDA_AQU`` modules).
- ``dysample``: tiny-smart's DySample modules, in a CARAFE-style FPN or the forks' standard
  ``FPN_UPSAMPLE`` (3 upsamplers, P6 by max-pool).
- ``uperhead-upsample``: the segmentation fork's ``UPerHead_Upsample`` (any of the modules above
  in ``decode_head.upsample_modules``).

Every source computes exactly dlu_mm's operator, so the conversion is a rename (plus LDA-AQU's
rpb reshape). Nothing outside the upsampler modules changes. What has no exact counterpart is
refused with :class:`ConversionError` (a ValueError): DySample's non-zero ``scope.bias``, its
'pl' style, DLU with groups > 1, keys of an upsampler module that the source does not have.

Needs torch only (mmengine for the checkpoint allow-list of mmengine files).
"""
import importlib
import math
import os
import pickle
import re
import types
from collections import OrderedDict
from collections.abc import Mapping

import torch

from .checkpoint import mmengine_safe_globals, register_mmengine_safe_globals

SOURCES = OrderedDict([
    ('mmdet-carafe', "mmdet's CARAFE zoo: FPN_CARAFE + mmcv CARAFEPack (and Mask R-CNN's "
                     'FCNMaskHead with CARAFE)'),
    ('dlu', "DLU authors' UNIFIED_FPN with DLUPack modules "
            '(Fu0511/Dynamic-Lightweight-Upsampling)'),
    ('lda-aqu', "LDA-AQU authors' FPN_LAU with LDA_AQU modules (duzw9311/LDA-AQU)"),
    ('dysample', "DySample modules (tiny-smart) in a CARAFE-style FPN or the forks' FPN_UPSAMPLE"),
    ('uperhead-upsample', "the segmentation fork's UPerHead_Upsample (mmseg UPerHead + "
                          'upsample_modules)'),
])

SCALE = 2  # every FPN / UPerNet / mask-head step of these sources is a 2x step

# the dlu_mm upsampler type and config-name part of each module kind
KIND_TYPES = {'carafe': 'CARAFE', 'dlu': 'DLU', 'lda-aqu': 'LDAAQU', 'dysample': 'DySample'}
KIND_CONFIG_NAMES = {'carafe': 'carafe', 'dlu': 'dlu', 'lda-aqu': 'lda_aqu',
                     'dysample': 'dysample'}
# the module kind an FPN source carries
SOURCE_KINDS = {'mmdet-carafe': 'carafe', 'dlu': 'dlu', 'lda-aqu': 'lda-aqu',
                'dysample': 'dysample'}
# the key that tells a module kind apart (checked in this order: DLU also has channel_compressor)
KIND_SIGNATURES = (('dlu', 'kernel_space_generator.weight'), ('carafe', 'content_encoder.weight'),
                   ('lda-aqu', 'proj_q.weight'), ('dysample', 'offset.weight'))

RENAMES = {
    'carafe': {'channel_compressor.weight': 'compressor.weight',
               'channel_compressor.bias': 'compressor.bias',
               'content_encoder.weight': 'encoder.weight',
               'content_encoder.bias': 'encoder.bias'},
    'dlu': {'channel_compressor.weight': 'compressor.weight',
            'channel_compressor.bias': 'compressor.bias',
            'kernel_space_generator.weight': 'kernel_space_encoder.weight',
            'kernel_space_generator.bias': 'kernel_space_encoder.bias',
            'conv_offset.weight': 'guidance_offsets.weight',
            'conv_offset.bias': 'guidance_offsets.bias'},
    'lda-aqu': {'proj_q.weight': 'q_proj.weight', 'proj_k.weight': 'k_proj.weight',
                'conv_offset.0.weight': 'offset_net.0.weight',
                'conv_offset.1.norm.weight': 'offset_net.1.weight',
                'conv_offset.1.norm.bias': 'offset_net.1.bias',
                'conv_offset.3.weight': 'offset_net.3.weight',
                'conv_offset.3.bias': 'offset_net.3.bias',
                'layer_norm.norm.weight': 'norm.weight', 'layer_norm.norm.bias': 'norm.bias'},
    'dysample': {'offset.weight': 'offset.weight', 'offset.bias': 'offset.bias',
                 'scope.weight': 'scope.weight'},
}
# keys of a module that are converted but may be absent (rpb=False, DySample without DySample+)
OPTIONAL = {'lda-aqu': {'relative_position_bias_table'},
            'dysample': {'scope.weight', 'scope.bias', 'init_pos'}}

_NECK_MODULE = re.compile(r'^neck\.upsample_modules\.(\d+)\.(.+)$')
_HEAD_MODULE = re.compile(r'^decode_head\.upsample_modules\.(\d+)\.(.+)$')
_MASK_UPSAMPLE = re.compile(r'^roi_head\.mask_head\.upsample\.(.+)$')
_NECK_LATERAL = re.compile(r'^neck\.lateral_convs\.(\d+)\.conv\.weight$')
_NECK_EXPECTED = re.compile(
    r'^neck\.(lateral_convs|fpn_convs)\.\d+\.(conv|bn|gn)\.'
    r'(weight|bias|running_mean|running_var|num_batches_tracked)$')


class ConversionError(ValueError):
    """The checkpoint cannot be converted exactly (refusal), or is not the named source."""


class UnsafeCheckpointError(ConversionError):
    """The checkpoint's pickle needs a global outside the allow-list; nothing was executed."""


class Conversion:
    """What :func:`convert_state_dict` did.

    Attributes:
        source: the source name (a key of :data:`SOURCES`).
        state_dict: the converted state_dict (an ``OrderedDict``, source key order).
        renamed: ``[(old key, new key)]`` of every moved or reshaped tensor.
        dropped: ``[(key, why)]`` of tensors left out (constant buffers, unused modules).
        unexpected: keys next to the upsamplers that the source layout does not have (kept as
            they are; a strict load into the target model decides).
        upsamplers: ``{config path: inferred upsampler cfg}``, e.g.
            ``{'model.neck.upsample_cfg': dict(type='CARAFE', ...)}``.
        layout: ``dict(task, neck, num_upsamplers, mask_head, kind)`` describing the model.
        notes: human-readable remarks (assumptions the weights cannot tell).
    """

    def __init__(self, source):
        self.source = source
        self.state_dict = OrderedDict()
        self.renamed, self.dropped, self.unexpected, self.notes = [], [], [], []
        self.upsamplers = OrderedDict()
        self.layout = {}

    def suggested_config(self):
        """(path relative to the repository, or None, why) of the shipped config for it."""
        return suggest_config(self.layout)


# --------------------------------------------------------------------------- loading

def _restricted_globals():
    """(aliases {'module.name': object}, allowed objects by id, modules they live in): what a
    checkpoint may reference when torch has no weights_only allow-list."""
    import _codecs
    import builtins
    import collections
    aliases, objects = {}, []
    try:
        safe = mmengine_safe_globals()
    except ImportError:  # no mmengine: plain state_dicts only
        safe = []
    for entry in safe:
        if isinstance(entry, tuple):  # (function, 'module.name'): e.g. the safe getattr
            aliases[entry[1]] = entry[0]
        else:
            objects.append(entry)
    for owner, names in ((torch._utils, ('_rebuild_tensor_v2', '_rebuild_parameter',
                                         '_rebuild_parameter_with_state')),
                         (torch._tensor, ('_rebuild_from_type_v2',)),
                         (collections, ('OrderedDict',)), (_codecs, ('encode',)),
                         (torch, ('Size', 'device', 'Tensor')),
                         (builtins, ('set', 'frozenset', 'complex', 'slice'))):
        objects += [getattr(owner, name) for name in names if hasattr(owner, name)]
    objects += [v for v in vars(torch).values() if isinstance(v, torch.dtype)]
    for name in ('set', 'frozenset', 'complex', 'slice'):  # protocol 2 names builtins so
        aliases[f'__builtin__.{name}'] = getattr(builtins, name)
    # a pickle names an object by the module it was found in, which for numpy's and torch's
    # re-exported functions is not always its __module__: resolve names in these modules only
    modules = {'torch', 'torch._utils', 'torch._tensor', 'collections', '_codecs', 'builtins',
               'numpy', 'numpy.dtypes', 'numpy.core.multiarray', 'numpy._core.multiarray',
               'mmengine.logging.history_buffer'}
    modules |= {getattr(o, '__module__', None) for o in objects} - {None}
    return aliases, {id(o) for o in objects}, modules


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed objects: a name is looked up only in the
    modules those objects live in, and only an allow-listed object is returned."""

    allowed = None

    def find_class(self, module, name):
        if _RestrictedUnpickler.allowed is None:
            _RestrictedUnpickler.allowed = _restricted_globals()
        aliases, objects, modules = _RestrictedUnpickler.allowed
        found = aliases.get(f'{module}.{name}')
        if found is None and module in modules and '.' not in name:
            try:
                candidate = getattr(importlib.import_module(module), name, None)
            except ImportError:
                candidate = None
            if id(candidate) in objects:
                found = candidate
        if found is None:
            raise pickle.UnpicklingError(
                f'Unsupported global: GLOBAL {module}.{name} is not allow-listed')
        return found


def _restricted_pickle_module():
    module = types.ModuleType('dlu_mm_restricted_pickle')
    module.Unpickler = _RestrictedUnpickler
    module.load = lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


LOADERS = ('auto', 'weights_only', 'restricted')


def load_checkpoint(path, loader='auto'):
    """Read a checkpoint file on CPU without running foreign code.

    ``loader='weights_only'``: ``torch.load(weights_only=True)`` with dlu_mm's allow-list of
    mmengine's checkpoint globals (registered from torch 2.6 on, see :mod:`dlu_mm.checkpoint`).
    ``'restricted'``: ``torch.load`` with an unpickler that resolves only tensors, containers and
    that same allow-list (for older torch). ``'auto'``: the first where available.
    A global outside the allow-list raises :class:`UnsafeCheckpointError` naming it; it is
    never imported or called.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'path must be a str or os.PathLike, got {type(path).__name__}')
    if loader not in LOADERS:
        raise ValueError(f'loader must be one of {list(LOADERS)}, got {loader!r}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {os.fspath(path)!r}')
    # dlu_mm's allow-list exists where torch takes safe globals with aliases (torch >= 2.6)
    has_allow_list = register_mmengine_safe_globals()
    if loader == 'auto':
        loader = 'weights_only' if has_allow_list else 'restricted'
    try:
        if loader == 'weights_only':
            if not has_allow_list:
                raise ValueError(f"loader='weights_only' needs dlu_mm's allow-list of "
                                 f'mmengine globals, registered from torch 2.6 on; this is '
                                 f"torch {torch.__version__}: use loader='restricted'")
            return torch.load(path, map_location='cpu', weights_only=True)
        return torch.load(path, map_location='cpu', weights_only=False,
                          pickle_module=_restricted_pickle_module())
    except pickle.UnpicklingError as error:
        found = re.search(r'GLOBAL ([\w.]+)', str(error)) or re.search(
            r'Unsupported class ([\w.]+)', str(error))
        name = found.group(1) if found else None
        what = f'the pickle global {name!r}' if name else 'a pickle construct'
        raise UnsafeCheckpointError(
            f'refusing to load {os.fspath(path)!r}: it needs {what}, which is not on the '
            f'allow-list (tensors, containers and the globals mmengine checkpoints hold); it was '
            f'not imported or executed. Only load it without weights_only if you trust its '
            f'origin. ({str(error).splitlines()[-1] if str(error) else type(error).__name__})'
        ) from None


def split_checkpoint(checkpoint):
    """(state_dict, meta, container) of a loaded checkpoint; a leading ``module.`` is stripped.

    container: 'mmengine' (message_hub / mmengine_version), 'mmcv-runner' (mmdet 2.x:
    mmcv_version in meta), 'state_dict' (another {'state_dict': ...} dict) or 'bare'.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'checkpoint must be a dict (a state_dict or a {{"state_dict": ...}} '
                        f'container), got {type(checkpoint).__name__}')
    if 'state_dict' in checkpoint and isinstance(checkpoint['state_dict'], Mapping):
        state_dict = checkpoint['state_dict']
        meta = checkpoint.get('meta') or {}
        if not isinstance(meta, Mapping):
            meta = {}
        if 'message_hub' in checkpoint or 'mmengine_version' in meta:
            container = 'mmengine'
        elif 'mmcv_version' in meta:
            container = 'mmcv-runner'
        else:
            container = 'state_dict'
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict, meta, container = checkpoint, {}, 'bare'
    else:
        raise TypeError(f'checkpoint holds no state_dict: top-level keys {sorted(checkpoint)[:10]}')
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'state_dict values must be tensors; not for {bad[:5]}')
    stripped = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
    return stripped, dict(meta), container


# --------------------------------------------------------------------------- modules

def module_kind(keys):
    """The upsampler kind ('carafe', 'dlu', 'lda-aqu', 'dysample') of a module's key suffixes."""
    for kind, signature in KIND_SIGNATURES:
        if signature in keys:
            return kind
    return None


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


def _convert_module(kind, tensors, where, channels=None):
    """(converted {suffix: tensor}, [(old, new)], [(suffix, why)], inferred cfg) of one module.

    ``tensors``: the module's {suffix: tensor}; ``where``: its key prefix (for messages);
    ``channels``: the feature width it upsamples, when known (checked against its input conv).
    """
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
    from .upsamplers.dysample import subpixel_init_positions
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


# --------------------------------------------------------------------------- state_dicts

def _group_modules(state_dict, pattern):
    modules = OrderedDict()
    for key, tensor in state_dict.items():
        found = pattern.match(key)
        if found:
            modules.setdefault(int(found.group(1)), OrderedDict())[found.group(2)] = tensor
    return OrderedDict(sorted(modules.items()))


def detect_source(state_dict):
    """(source, description) recognised from the state_dict's keys; ConversionError if none."""
    state_dict = split_checkpoint(state_dict)[0]
    head = _group_modules(state_dict, _HEAD_MODULE)
    neck = _group_modules(state_dict, _NECK_MODULE)
    if head:
        kinds = sorted({module_kind(m) or 'unknown' for m in head.values()})
        return 'uperhead-upsample', (f'{len(head)} {"/".join(kinds)} module(s) in '
                                     f'decode_head.upsample_modules (UPerHead_Upsample)')
    if neck:
        kinds = {module_kind(m) for m in neck.values()}
        if None in kinds or len(kinds) != 1:
            found = {i: sorted(m)[:4] for i, m in neck.items()}
            raise ConversionError(f'neck.upsample_modules hold modules of no single known kind: '
                                  f'{found}')
        kind = kinds.pop()
        source = {v: k for k, v in SOURCE_KINDS.items()}[kind]
        described = _describe_neck(state_dict, neck, kind)
        return source, described
    if any(k.startswith(('neck.upsamplers.', 'decode_head.top_down_upsamplers.'))
           for k in state_dict):
        raise ConversionError('this state_dict already has dlu_mm\'s layout (neck.upsamplers.* '
                              '/ decode_head.top_down_upsamplers.*): nothing to convert')
    raise ConversionError(
        'no upsampler modules of a known source found: looked for neck.upsample_modules.<i>.* '
        '(FPN_CARAFE / UNIFIED_FPN / FPN_LAU / FPN_UPSAMPLE) and decode_head.upsample_modules.'
        f'<i>.* (UPerHead_Upsample); sources: {", ".join(SOURCES)}')


def _neck_layout(state_dict):
    laterals = {int(m.group(1)): v for k, v in state_dict.items()
                for m in [_NECK_LATERAL.match(k)] if m}
    carafe_style = any(w.dim() == 4 and w.shape[-1] == 3 for w in laterals.values())
    return len(laterals), carafe_style


def _describe_neck(state_dict, neck, kind):
    num_laterals, carafe_style = _neck_layout(state_dict)
    family = ('CARAFE-style FPN (3x3 stride-2 P6 lateral in the top-down path)' if carafe_style
              else 'standard FPN (P6 by max-pool)')
    text = (f'{len(neck)} {kind} module(s) in neck.upsample_modules, {num_laterals} laterals: '
            f'{family}')
    mask = _group_mask(state_dict)
    if mask:
        text += f'; mask head upsampler: {module_kind(mask) or _mask_kind(mask)}'
    return text


def _group_mask(state_dict):
    return OrderedDict((m.group(1), v) for k, v in state_dict.items()
                       for m in [_MASK_UPSAMPLE.match(k)] if m)


def _mask_kind(tensors):
    weight = tensors.get('weight')
    if set(tensors) <= {'weight', 'bias'} and weight is not None and weight.dim() == 4 \
            and weight.shape[-2:] == (SCALE, SCALE):
        return 'deconv'
    return None


def _width(state_dict, conv_prefix):
    """Output channels of the last ``<conv_prefix><i>.conv.weight`` (None if there is none)."""
    found = [(int(m.group(1)), v) for k, v in state_dict.items()
             for m in [re.match(re.escape(conv_prefix) + r'(\d+)\.conv\.weight$', k)] if m]
    return max(found, key=lambda item: item[0])[1].shape[0] if found else None


def _convert_modules(conversion, modules, src_prefix, dst_prefix, expected_kind, channels):
    cfg = None
    for index, tensors in modules.items():
        where = f'{src_prefix}{index}.'
        kind = module_kind(tensors)
        if expected_kind is not None and kind != expected_kind:
            raise ConversionError(
                f'{where}* has keys {sorted(tensors)}, not a {expected_kind} module as the '
                f"source '{conversion.source}' has (--from auto recognises the source by its "
                f'keys)')
        if kind is None:
            raise ConversionError(f'{where}* has keys {sorted(tensors)}: no known upsampler')
        expected_kind = kind
        out, renamed, dropped, module_cfg = _convert_module(kind, tensors, where, channels)
        if cfg is not None and module_cfg != cfg:
            raise ConversionError(f'{where}: hyper-parameters {module_cfg} differ from the '
                                  f'previous modules\' {cfg}; one upsample_cfg cannot hold both')
        cfg = module_cfg
        for name, tensor in out.items():
            conversion.state_dict[f'{dst_prefix}{index}.{name}'] = tensor
        conversion.renamed += [(f'{where}{old}', f'{dst_prefix}{index}.{new}')
                               for old, new in renamed]
        conversion.dropped += [(f'{where}{name}', why) for name, why in dropped]
    return expected_kind, cfg


def convert_state_dict(state_dict, source='auto'):
    """Convert a source state_dict (or checkpoint dict) to dlu_mm's keys: a :class:`Conversion`.

    ``source``: one of :data:`SOURCES` or 'auto'. Tensors outside the upsampler modules keep
    their keys and values (the same tensor objects).
    """
    if source != 'auto' and source not in SOURCES:
        raise ValueError(f'source must be one of {["auto"] + list(SOURCES)}, got {source!r}')
    if not isinstance(state_dict, Mapping):
        raise TypeError(f'state_dict must be a dict, got {type(state_dict).__name__}')
    state_dict = split_checkpoint(state_dict)[0]
    detected, description = detect_source(state_dict)
    if source == 'auto':
        source = detected
    elif source != detected:
        raise ConversionError(f"--from {source}: this checkpoint is not that source; its keys "
                              f"look like '{detected}' ({description})")
    conversion = Conversion(source)
    conversion.layout['description'] = description
    converted = set()
    if source == 'uperhead-upsample':
        modules = _group_modules(state_dict, _HEAD_MODULE)
        _check_contiguous(modules, 'decode_head.upsample_modules')
        kind, cfg = _convert_modules(conversion, modules, 'decode_head.upsample_modules.',
                                     'decode_head.top_down_upsamplers.', None,
                                     _width(state_dict, 'decode_head.fpn_convs.'))
        conversion.upsamplers['model.decode_head.upsample_cfg'] = cfg
        conversion.layout.update(task='segmentation', kind=kind, num_upsamplers=len(modules))
        converted |= {k for k in state_dict if _HEAD_MODULE.match(k)}
    else:
        kind = SOURCE_KINDS[source]
        modules = _group_modules(state_dict, _NECK_MODULE)
        num_laterals, carafe_style = _neck_layout(state_dict)
        used = OrderedDict((i, m) for i, m in modules.items() if i < num_laterals - 1)
        _check_contiguous(used, 'neck.upsample_modules', num_laterals - 1)
        for index in modules:
            if index in used:
                continue
            if source == 'dysample' and not carafe_style:
                conversion.dropped += [
                    (f'neck.upsample_modules.{index}.{name}', 'FPN_UPSAMPLE builds it (extra '
                     'convs) but its forward never uses it') for name in modules[index]]
            else:
                raise ConversionError(
                    f'neck.upsample_modules.{index}.*: the neck has {num_laterals} laterals, so '
                    f'only modules 0..{num_laterals - 2} take part in the top-down path')
        _, cfg = _convert_modules(conversion, used, 'neck.upsample_modules.', 'neck.upsamplers.',
                                  kind, _width(state_dict, 'neck.fpn_convs.'))
        conversion.upsamplers['model.neck.upsample_cfg'] = cfg
        converted |= {k for k in state_dict if _NECK_MODULE.match(k)}
        mask = _group_mask(state_dict)
        mask_kind = None
        if mask:
            mask_kind = module_kind(mask) or _mask_kind(mask)
            if mask_kind in KIND_TYPES:
                out, renamed, dropped, mask_cfg = _convert_module(
                    mask_kind, mask, 'roi_head.mask_head.upsample.',
                    _width(state_dict, 'roi_head.mask_head.convs.'))
                for name, tensor in out.items():
                    conversion.state_dict[f'roi_head.mask_head.upsample.{name}'] = tensor
                conversion.renamed += [(f'roi_head.mask_head.upsample.{old}',
                                        f'roi_head.mask_head.upsample.{new}')
                                       for old, new in renamed]
                conversion.dropped += [(f'roi_head.mask_head.upsample.{name}', why)
                                       for name, why in dropped]
                conversion.upsamplers['model.roi_head.mask_head.upsample_cfg'] = mask_cfg
                converted |= {f'roi_head.mask_head.upsample.{name}' for name in mask}
            elif mask_kind is None:
                conversion.unexpected += [f'roi_head.mask_head.upsample.{n}' for n in mask]
        elif any(k.startswith('roi_head.mask_head.') for k in state_dict):
            mask_kind = 'none'
        conversion.layout.update(
            task='panoptic' if any(k.startswith('semantic_head.') for k in state_dict)
            else 'instance' if mask_kind else 'detection',
            neck='carafe_style' if carafe_style else 'standard', kind=kind,
            num_upsamplers=len(used), mask_head=mask_kind)
        conversion.unexpected += [k for k in state_dict if k.startswith('neck.')
                                  and k not in converted and not _NECK_EXPECTED.match(k)]
    if source == 'lda-aqu':
        conversion.notes.append('range_factor is not stored in the weights: the authors\' 11 '
                                '(dlu_mm\'s default) is assumed')
    # the source's key order: each converted tensor where its source was, the rest untouched
    new_key = dict(conversion.renamed)
    final = OrderedDict()
    for key, tensor in state_dict.items():
        if key not in converted:
            final[key] = tensor
        elif key in new_key:
            final[new_key[key]] = conversion.state_dict[new_key[key]]
    conversion.state_dict = final
    return conversion


def _check_contiguous(modules, where, expected=None):
    indices = list(modules)
    count = len(indices) if expected is None else expected
    if indices != list(range(count)):
        raise ConversionError(f'{where}: expected modules 0..{count - 1}, found {indices}')


# --------------------------------------------------------------------------- configs

def suggest_config(layout):
    """(config path relative to the repository or None, explanation) for a conversion layout."""
    kind = layout.get('kind')
    name = KIND_CONFIG_NAMES.get(kind)
    if layout.get('task') == 'segmentation':
        return f'configs/upernet_r50_512x512_160k_ade20k_{name}.py', 'UPerNet R50 ADE20K'
    neck, mask, task = layout.get('neck'), layout.get('mask_head'), layout.get('task')
    if task == 'panoptic':
        if neck == 'standard' and mask in ('deconv', 'none', None):
            return f'configs/panoptic_fpn_r50_{name}.py', 'Panoptic FPN, standard FPN neck'
        return None, f'no shipped Panoptic FPN config has a {neck} neck with a {mask} mask head'
    if neck == 'carafe_style':
        if task == 'detection':
            return f'configs/faster_rcnn_r50_fpn_{name}.py', 'Faster R-CNN, CARAFE-style FPN'
        if mask == kind:
            return (f'configs/mask_rcnn_r50_fpn_{name}.py',
                    f'Mask R-CNN, CARAFE-style FPN, {kind} mask head')
        if mask == 'deconv' and kind == 'dysample':
            return ('configs/mask_rcnn_r50_fpn_dysample_deconv.py',
                    "Mask R-CNN, CARAFE-style FPN, mmdet's deconv mask head")
    elif neck == 'standard' and kind == 'dysample':
        if task == 'detection':
            return ('configs/faster_rcnn_r50_fpn_dysample_std.py',
                    'Faster R-CNN, standard FPN (FPN_UPSAMPLE)')
        if mask == 'deconv':
            return ('configs/mask_rcnn_r50_fpn_dysample_std.py',
                    "Mask R-CNN, standard FPN (FPN_UPSAMPLE), mmdet's deconv mask head")
    return None, (f'no shipped config has a {neck} neck of {kind} upsamplers for {task}'
                  + (f' with a {mask} mask head' if mask else ''))


_DROP = object()


def _plain(value):
    """``value`` if it is made of str / numbers / None / lists / tuples / str-keyed dicts only
    (what a plain weights_only load reads), else ``_DROP``; dicts lose their other entries."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _DROP if any(i is _DROP for i in items) else type(value)(items)
    if isinstance(value, Mapping):
        items = {k: _plain(v) for k, v in value.items() if isinstance(k, str)}
        return {k: v for k, v in items.items() if v is not _DROP}
    return _DROP


def plain_meta(meta):
    """The version / progress entries of a source meta, as plain values."""
    kept = {}
    for key in ('mmcv_version', 'mmdet_version', 'mmseg_version', 'mmengine_version', 'time',
                'epoch', 'iter', 'experiment_name', 'seed'):
        value = _plain(meta.get(key))
        if value is not _DROP and value is not None:
            kept[key] = value
    return kept


def converted_meta(conversion, meta, container, source_file, config=None):
    """The ``meta`` of a converted checkpoint: it names the source and keeps its dataset meta."""
    from . import __version__
    out = dict(converted_from=conversion.source, source=SOURCES[conversion.source],
               source_container=container, source_file=os.path.basename(os.fspath(source_file)),
               source_meta=plain_meta(meta), converter=f'dlu_mm {__version__}',
               renamed=len(conversion.renamed), dropped=[k for k, _ in conversion.dropped])
    if config is not None:
        out['config'] = config
    dataset_meta = meta.get('dataset_meta')
    classes = meta.get('CLASSES')
    if isinstance(dataset_meta, Mapping):
        out['dataset_meta'] = _plain(dataset_meta)
    elif isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        out['dataset_meta'] = dict(classes=tuple(classes))
    return out
