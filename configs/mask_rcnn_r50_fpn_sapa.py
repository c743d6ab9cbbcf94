# Mask R-CNN R50-FPN 1x COCO with SAPA (Lu et al., NeurIPS 2022; its detection variant, d=32 with
# GroupNorm) in the FPN top-down path; it is guided, so the mask head (which has no finer map to
# guide it) keeps mmdet's deconv. The SAPA paper used the standard FPN (3 upsamplers, P6 by
# max-pool, pad 32); the nearest baseline of that family is mmdet's own
# mask-rcnn_r50_fpn_1x_coco.py.
_base_ = './_base_/mask_rcnn_r50_fpn_upsample.py'
upsample_cfg = dict(type='SAPA', embedding_dim=32, norm='gn')
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    neck=dict(carafe_style=False, upsample_cfg=upsample_cfg))
