# Panoptic FPN R50 1x COCO with SAPA (Lu et al., NeurIPS 2022; its detection variant, d=32 with
# GroupNorm) in the (standard) FPN top-down path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='SAPA', embedding_dim=32, norm='gn')
model = dict(neck=dict(upsample_cfg=upsample_cfg))
