# The light synthetic-COCO Faster R-CNN with nearest upsampling (the demo's baseline).
_base_ = './_base_/faster_rcnn_lite_synthetic.py'
model = dict(neck=dict(upsample_cfg=dict(type='nearest')))
