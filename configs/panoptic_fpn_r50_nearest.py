# Panoptic FPN R50 1x COCO with the nearest-neighbour baseline in the (standard) FPN top-down
# path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='nearest')
model = dict(neck=dict(upsample_cfg=upsample_cfg))
