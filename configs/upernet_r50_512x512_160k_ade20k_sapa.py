# UPerNet R50 ADE20K 512x512 160k with SAPA in the 3 top-down 2x steps (operator defaults).
# SAPA is guided: each step gets the finer lateral as guide.
_base_ = ['./upernet_r50_512x512_160k_ade20k_bilinear.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA')))
