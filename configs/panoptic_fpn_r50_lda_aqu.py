# Panoptic FPN R50 1x COCO with LDA-AQU (Du et al., ACM MM 2024) in the (standard) FPN top-down
# path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='LDAAQU', reduction_factor=4, groups=2, range_factor=11)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
