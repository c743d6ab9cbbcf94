# FADE (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./rtmdet_tiny_300e_coco_nearest.py']

model = dict(neck=dict(upsample_cfg=dict(type='FADE')))
