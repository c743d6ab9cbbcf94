# LDAAQU (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./yolox_s_300e_coco_nearest.py']

model = dict(neck=dict(upsample_cfg=dict(_delete_=True, type='LDAAQU')))
