# UPerNet R50 ADE20K 512x512 160k with DLU in the 3 top-down 2x steps (operator defaults).
_base_ = ['./upernet_r50_512x512_160k_ade20k_bilinear.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='DLU')))
