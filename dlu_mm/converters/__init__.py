"""Convert released upsampler checkpoints of other code bases to dlu_mm's state_dict layout.

Reads a checkpoint safely (:mod:`dlu_mm.checkpoint_loading`), recognises its source by its keys
and renames the upsampler modules' tensors; nothing outside the upsampler modules changes.

Sources (their key tables and the upstream files they were read from: :mod:`.sources`):

- ``mmdet-carafe``: mmdet's CARAFE zoo (``FPN_CARAFE`` neck with mmcv ``CARAFEPack`` modules,
  Mask R-CNN's ``FCNMaskHead`` with a CARAFE upsampler), mmdet 2.x or 3.x files.
- ``dlu``: DLU authors' mmdet-3 fork (``UNIFIED_FPN`` with ``DLUPack`` modules).
- ``lda-aqu``: LDA-AQU authors' mmdet-2.25 fork (``FPN_LAU`` with ``LDA_AQU`` modules).
- ``dysample``: tiny-smart's DySample modules, in a CARAFE-style FPN or the forks' standard
  ``FPN_UPSAMPLE`` (3 upsamplers, P6 by max-pool).
- ``uperhead-upsample``: the segmentation fork's ``UPerHead_Upsample`` (any of the modules above
  in ``decode_head.upsample_modules``).

Every source computes exactly dlu_mm's operator, so the conversion is a rename (plus LDA-AQU's
rpb reshape). What has no exact counterpart is refused with :class:`ConversionError` (a
ValueError): DySample's non-zero ``scope.bias``, its 'pl' style, DLU with groups > 1, keys of an
upsampler module that the source does not have.

Modules: :mod:`.sources` (key tables), :mod:`.module_conversion` (one upsampler module),
:mod:`.conversion` (a whole state_dict, the suggested config and the output meta).
Needs torch only (mmengine for the checkpoint allow-list of mmengine files).
"""
# kept importable from here, where they were before: dlu_mm.checkpoint's allow-list functions
from ..checkpoint import mmengine_safe_globals, register_mmengine_safe_globals  # noqa: F401
from ..checkpoint_loading import (LOADERS, CheckpointFileError, UnsafeCheckpointError,
                                  load_checkpoint, split_checkpoint)
from .conversion import (Conversion, convert_state_dict, converted_meta, detect_source,
                         plain_meta, suggest_config)
from .module_conversion import ConversionError, convert_module
from .sources import (KIND_CONFIG_NAMES, KIND_SIGNATURES, KIND_TYPES, OPTIONAL, RENAMES, SCALE,
                      SOURCE_KINDS, SOURCES, module_kind)

__all__ = [
    'SOURCES', 'SCALE', 'KIND_TYPES', 'KIND_CONFIG_NAMES', 'SOURCE_KINDS', 'KIND_SIGNATURES',
    'RENAMES', 'OPTIONAL', 'module_kind', 'ConversionError', 'convert_module', 'Conversion',
    'detect_source', 'convert_state_dict', 'suggest_config', 'plain_meta', 'converted_meta',
    'LOADERS', 'CheckpointFileError', 'UnsafeCheckpointError', 'load_checkpoint',
    'split_checkpoint'
]
