# CARAFE (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./deeplabv3plus_r50-d8_512x512_160k_ade20k_bilinear.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='CARAFE')))
