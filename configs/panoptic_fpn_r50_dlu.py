# Panoptic FPN R50 1x COCO with DLU (Fu et al., ICPR 2024) in the (standard) FPN top-down path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='DLU', up_kernel=5, encoder_kernel=3, compressed_channels=64)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
