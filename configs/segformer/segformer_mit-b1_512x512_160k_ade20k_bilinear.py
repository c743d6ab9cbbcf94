# SegFormer-B1, ADE20K 512x512, 160k iterations (8 GPUs x 2 images), the setup of FADE's and
# SAPA's papers: the all-MLP head's one-shot resizes of the 1/8, 1/16, 1/32 levels to 1/4 become
# chains of 2x upsamplers (6 for 4 levels; guided ones take the projected finer level).
# Without an upsampler type the dlu_mm module is exactly the stock one, so this config
# reproduces
# mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py; the per-upsampler configs inherit it.
_base_ = ['mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dlu_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='UpsampleSegformerHead'))
