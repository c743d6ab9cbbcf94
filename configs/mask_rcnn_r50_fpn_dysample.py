# Mask R-CNN R50-FPN 1x COCO with DySample (Liu et al., ICCV 2023) in the FPN top-down path and
# as the 2x upsampler of the mask head (as CARAFE did).
_base_ = './_base_/mask_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='DySample', groups=4, style='lp')
model = dict(
    neck=dict(upsample_cfg=upsample_cfg),
    roi_head=dict(mask_head=dict(upsample_cfg=dict(scale_factor=2, **upsample_cfg))))
