"""Key tables of the code bases whose upsampler checkpoints dlu_mm converts.

What each source calls its upsampler modules' tensors, what dlu_mm calls them, and the key
patterns that locate those modules in a detector's or segmentor's state_dict.

The tables were read off the source code (nothing else changes: full models load with
``strict=True`` after these renames):

- ``mmdet-carafe``: open-mmlab/mmdetection ``mmdet/models/necks/fpn_carafe.py`` (``FPN_CARAFE``),
  ``mmdet/models/roi_heads/mask_heads/fcn_mask_head.py`` (``FCNMaskHead`` with
  ``upsample_cfg=dict(type='carafe')``) and open-mmlab/mmcv ``mmcv/ops/carafe.py``
  (``CARAFEPack``, commit a8073c7). mmdet's zoo files (configs/carafe) are mmdet 2.x files; 2.x
  and 3.x name these keys alike.
- ``dlu``: Fu0511/Dynamic-Lightweight-Upsampling (commit c451f6f),
  ``custom/models/necks/unified_fpn.py`` (``UNIFIED_FPN``, FPN_CARAFE's layout) with ``DLUPack``
  modules; the authors' module only runs with up_group=1.
- ``lda-aqu``: duzw9311/LDA-AQU (commit ebfb705, an mmdet 2.25 fork),
  ``mmdet/models/necks/fpn_lau.py`` (``FPN_LAU``, FPN_CARAFE's layout) with ``LDA_AQU`` modules;
  their ``relative_position_bias_table`` (1, nh, 1, k_u*k_u, D/nh) is dlu_mm's ``rpb``
  (nh, k_u*k_u, D/nh), ``base_offset`` is a non-persistent buffer (absent from files).
- ``dysample``: tiny-smart/dysample ``dysample.py`` (commit 81a1de5) modules, in a CARAFE-style
  FPN or in the tiny-smart detection-with-upsamplers fork's ``FPN_UPSAMPLE`` (mmdet's standard
  FPN, P6 by max-pool, 3 upsamplers used). ``init_pos`` is a constant buffer that dlu_mm derives;
  ``scope.bias`` exists in the forks and early dysample.py only (dlu_mm's scope conv has none).
- ``uperhead-upsample``: the tiny-smart segmentation-with-upsamplers fork's ``UPerHead_Upsample``
  (mmseg's ``UPerHead`` plus ``upsample_modules``), holding any of the modules above.

Every source module computes exactly dlu_mm's operator with the same channel order (checked in
float64 by ``tests/test_model_converters.py``), so these tables are renames only.
"""
import re
from collections import OrderedDict
from typing import Container, Optional

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

# {module kind: {source key suffix: dlu_mm key suffix}} of one upsampler module
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

# where the sources keep their upsampler modules (group 1: the module index, 2: the key suffix)
NECK_MODULE = re.compile(r'^neck\.upsample_modules\.(\d+)\.(.+)$')
HEAD_MODULE = re.compile(r'^decode_head\.upsample_modules\.(\d+)\.(.+)$')
MASK_UPSAMPLE = re.compile(r'^roi_head\.mask_head\.upsample\.(.+)$')
NECK_LATERAL = re.compile(r'^neck\.lateral_convs\.(\d+)\.conv\.weight$')
# the FPN keys next to the upsamplers that every source neck has
NECK_EXPECTED = re.compile(
    r'^neck\.(lateral_convs|fpn_convs)\.\d+\.(conv|bn|gn)\.'
    r'(weight|bias|running_mean|running_var|num_batches_tracked)$')


def module_kind(keys: Container[str]) -> Optional[str]:
    """The upsampler kind ('carafe', 'dlu', 'lda-aqu', 'dysample') of a module's key suffixes."""
    for kind, signature in KIND_SIGNATURES:
        if signature in keys:
            return kind
    return None
