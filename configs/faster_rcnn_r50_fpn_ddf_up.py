# Faster R-CNN R50-FPN 1x COCO with DDF-Up (Zhou et al., CVPR 2021) in the FPN top-down path.
_base_ = './_base_/faster_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='DDFUp', kernel_size=3, se_ratio=0.2)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
