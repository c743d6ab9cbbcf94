# The README demo's model: the light synthetic-COCO Faster R-CNN with DLU in its FPN.
_base_ = './_base_/faster_rcnn_lite_synthetic.py'
model = dict(neck=dict(upsample_cfg=dict(type='DLU', compressed_channels=16)))
