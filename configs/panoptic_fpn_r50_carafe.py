# Panoptic FPN R50 1x COCO with CARAFE (Wang et al., ICCV 2019) in the (standard) FPN top-down
# path.
_base_ = './_base_/panoptic_fpn_r50_upsample.py'
upsample_cfg = dict(type='CARAFE', up_kernel=5, encoder_kernel=3, compressed_channels=64)
model = dict(neck=dict(upsample_cfg=upsample_cfg))
