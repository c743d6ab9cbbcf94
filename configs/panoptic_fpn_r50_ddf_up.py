# Panoptic FPN R50 1x COCO with DDF-Up (Zhou et al., CVPR 2021) in the (standard) FPN top-down
# path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='DDFUp', kernel_size=3, se_ratio=0.2)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
