# LDAAQU (operator defaults) in every upsampling step; the rest as in the base config.
_base_ = ['./segformer_mit-b1_512x512_160k_ade20k_bilinear.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='LDAAQU')))
