# Panoptic FPN R50 1x COCO with dlu_mm's UpsampleFPN. The papers (DySample: 3 upsamplers,
# +24.6K params) replaced the upsamplers of the standard FPN here, so this family keeps the
# standard neck (P6 by max-pool) and mmdet's pad 32; the semantic head is unchanged.
# Per-upsampler configs (panoptic_fpn_r50_<upsampler>.py) set neck.upsample_cfg.
_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)
model = dict(neck=dict(type='UpsampleFPN', upsample_cfg=dict(type='nearest')))
