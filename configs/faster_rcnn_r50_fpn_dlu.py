# Faster R-CNN R50-FPN 1x COCO with DLU (Fu et al., ICPR 2024) in the FPN top-down path.
_base_ = './_base_/faster_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='DLU', up_kernel=5, encoder_kernel=3, compressed_channels=64)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
