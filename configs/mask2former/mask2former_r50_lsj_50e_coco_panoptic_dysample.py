# DySample (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./mask2former_r50_lsj_50e_coco_panoptic_bilinear.py']

model = dict(panoptic_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='DySample'))))
