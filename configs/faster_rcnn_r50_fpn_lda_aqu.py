# Faster R-CNN R50-FPN 1x COCO with LDA-AQU (Du et al., ACM MM 2024) in the FPN top-down path.
_base_ = './_base_/faster_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='LDAAQU', reduction_factor=4, groups=2, range_factor=11)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
