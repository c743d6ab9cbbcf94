# Faster R-CNN R50-FPN 1x COCO with the nearest-neighbour baseline in the FPN top-down path.
_base_ = './_base_/faster_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='nearest')
model = dict(neck=dict(upsample_cfg=upsample_cfg))
