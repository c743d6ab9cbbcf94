# UPerNet R50, ADE20K 512x512, 160k iterations (4 GPUs x 4 images): the bilinear baseline and the
# shared base of every configs/upernet_r50_512x512_160k_ade20k_<upsampler>.py.
# UpsampleUPerHead without an upsampler type is exactly mmseg's UPerHead (same weights, same
# outputs), so this config reproduces mmseg's upernet_r50_4xb4-160k_ade20k-512x512.
# A per-upsampler config only adds decode_head.upsample_cfg=dict(type=...): the 3 top-down 2x
# steps become that upsampler (guided ones get the finer lateral as guide); set
# decode_head.fusion_upsample=True to also replace the fusion resizes (x2, x4, x8) by chains of
# 2x upsamplers (6 more modules).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dlu_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='UpsampleUPerHead'))
