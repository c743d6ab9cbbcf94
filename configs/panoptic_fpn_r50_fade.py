# Panoptic FPN R50 1x COCO with FADE (Lu et al., ECCV 2022) in the (standard) FPN top-down path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='FADE')
model = dict(neck=dict(upsample_cfg=upsample_cfg))
