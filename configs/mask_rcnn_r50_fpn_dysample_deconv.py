# Mask R-CNN R50-FPN 1x COCO with DySample (Liu et al., ICCV 2023) in the CARAFE-style FPN (4
# upsamplers, as the paper's parameter counts imply) and mmdet's deconv mask head (DySample only
# replaced the neck's upsamplers): the home of such checkpoints after
# `python tools/model_converters/convert.py --from dysample SRC DST`.
# mask_rcnn_r50_fpn_dysample.py puts DySample in the mask head too.
_base_ = './_base_/mask_rcnn_r50_fpn_upsample.py'
model = dict(
    neck=dict(upsample_cfg=dict(type='DySample', groups=4, style='lp')),
    roi_head=dict(mask_head=dict(upsample_cfg=dict(type='deconv', scale_factor=2))))
