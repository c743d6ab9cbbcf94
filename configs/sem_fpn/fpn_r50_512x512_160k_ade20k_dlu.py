# DLU (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./fpn_r50_512x512_160k_ade20k_bilinear.py']

model = dict(
    neck=dict(upsample_cfg=dict(type='DLU')),
    decode_head=dict(upsample_cfg=dict(type='DLU')))
