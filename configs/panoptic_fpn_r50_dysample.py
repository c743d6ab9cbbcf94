# Panoptic FPN R50 1x COCO with DySample (Liu et al., ICCV 2023) in the (standard) FPN top-down
# path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='DySample', groups=4, style='lp')
model = dict(neck=dict(upsample_cfg=upsample_cfg))
