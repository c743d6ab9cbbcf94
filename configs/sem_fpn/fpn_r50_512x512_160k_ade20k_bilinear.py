# Semantic FPN R50, ADE20K 512x512, 160k iterations (4 GPUs x 4 images). It upsamples in the FPN
# neck (3 nearest top-down steps) and in FPNHead (6 bilinear 2x steps): both take the upsampler.
# Without an upsampler type the dlu_mm module is exactly the stock one, so this config
# reproduces
# mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py; the per-upsampler configs inherit it.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dlu_mm.seg'], allow_failed_imports=False)

model = dict(neck=dict(type='UpsampleFPN'), decode_head=dict(type='UpsampleFPNHead'))
