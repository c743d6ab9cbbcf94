# Mask R-CNN R50-FPN 1x COCO with DySample (Liu et al., ICCV 2023) in the STANDARD FPN (3
# upsamplers, P6 by max-pool, mmdet's pad 32) and mmdet's deconv mask head: the layout of
# tiny-smart's detection fork (FPN_UPSAMPLE), the home of its Mask R-CNN checkpoints after
# `python tools/model_converters/convert.py --from dysample SRC DST`.
_base_ = './_base_/mask_rcnn_r50_fpn_upsample.py'
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    neck=dict(carafe_style=False, upsample_cfg=dict(type='DySample', groups=4, style='lp')),
    roi_head=dict(mask_head=dict(upsample_cfg=dict(type='deconv', scale_factor=2))))
