# DLU (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./mask2former_r50_160k_ade20k_bilinear.py']

model = dict(decode_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='DLU'))))
