"""Convert a whole source state_dict to dlu_mm's layout, and describe the result.

:func:`detect_source` recognises the code base by its keys, :func:`convert_state_dict` renames
its upsampler modules (nothing else changes) into a :class:`Conversion`, :func:`suggest_config`
names the shipped config of that layout and :func:`converted_meta` the saved file's ``meta``.
"""
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple, Union

from ..checkpoint_loading import split_checkpoint
from ..version import __version__
from .module_conversion import ConversionError, convert_module
from .sources import (HEAD_MODULE, KIND_CONFIG_NAMES, KIND_TYPES, MASK_UPSAMPLE, NECK_EXPECTED,
                      NECK_LATERAL, NECK_MODULE, SCALE, SOURCE_KINDS, SOURCES, module_kind)


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

    def __init__(self, source: str):
        self.source = source
        self.state_dict = OrderedDict()
        self.renamed, self.dropped, self.unexpected, self.notes = [], [], [], []
        self.upsamplers = OrderedDict()
        self.layout = {}

    def suggested_config(self) -> Tuple[Optional[str], str]:
        """(path relative to the repository, or None, why) of the shipped config for it."""
        return suggest_config(self.layout)


# --------------------------------------------------------------------------- state_dicts

def _group_modules(state_dict, pattern):
    modules = OrderedDict()
    for key, tensor in state_dict.items():
        found = pattern.match(key)
        if found:
            modules.setdefault(int(found.group(1)), OrderedDict())[found.group(2)] = tensor
    return OrderedDict(sorted(modules.items()))


def detect_source(state_dict: Mapping) -> Tuple[str, str]:
    """(source, description) recognised from the state_dict's keys; ConversionError if none."""
    state_dict = split_checkpoint(state_dict)[0]
    head = _group_modules(state_dict, HEAD_MODULE)
    neck = _group_modules(state_dict, NECK_MODULE)
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
                for m in [NECK_LATERAL.match(k)] if m}
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
                       for m in [MASK_UPSAMPLE.match(k)] if m)


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
        out, renamed, dropped, module_cfg = convert_module(kind, tensors, where, channels)
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


def convert_state_dict(state_dict: Mapping, source: str = 'auto') -> Conversion:
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
        modules = _group_modules(state_dict, HEAD_MODULE)
        _check_contiguous(modules, 'decode_head.upsample_modules')
        kind, cfg = _convert_modules(conversion, modules, 'decode_head.upsample_modules.',
                                     'decode_head.top_down_upsamplers.', None,
                                     _width(state_dict, 'decode_head.fpn_convs.'))
        conversion.upsamplers['model.decode_head.upsample_cfg'] = cfg
        conversion.layout.update(task='segmentation', kind=kind, num_upsamplers=len(modules))
        converted |= {k for k in state_dict if HEAD_MODULE.match(k)}
    else:
        kind = SOURCE_KINDS[source]
        modules = _group_modules(state_dict, NECK_MODULE)
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
        converted |= {k for k in state_dict if NECK_MODULE.match(k)}
        mask = _group_mask(state_dict)
        mask_kind = None
        if mask:
            mask_kind = module_kind(mask) or _mask_kind(mask)
            if mask_kind in KIND_TYPES:
                out, renamed, dropped, mask_cfg = convert_module(
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
                                  and k not in converted and not NECK_EXPECTED.match(k)]
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

def suggest_config(layout: Mapping[str, Any]) -> Tuple[Optional[str], str]:
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


def plain_meta(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """The version / progress entries of a source meta, as plain values."""
    kept = {}
    for key in ('mmcv_version', 'mmdet_version', 'mmseg_version', 'mmengine_version', 'time',
                'epoch', 'iter', 'experiment_name', 'seed'):
        value = _plain(meta.get(key))
        if value is not _DROP and value is not None:
            kept[key] = value
    return kept


def converted_meta(conversion: Conversion, meta: Mapping[str, Any], container: str,
                   source_file: Union[str, os.PathLike], config: Optional[str] = None
                   ) -> Dict[str, Any]:
    """The ``meta`` of a converted checkpoint: it names the source and keeps its dataset meta."""
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
