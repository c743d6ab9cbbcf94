# Faster R-CNN R50-FPN 1x COCO with FADE (Lu et al., ECCV 2022) in the FPN top-down path. The
# FADE paper used the standard FPN (3 upsamplers, P6 by max-pool, pad 32); the nearest baseline
# of that family is mmdet's own faster-rcnn_r50_fpn_1x_coco.py.
_base_ = './_base_/faster_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='FADE')
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    neck=dict(carafe_style=False, upsample_cfg=upsample_cfg))
