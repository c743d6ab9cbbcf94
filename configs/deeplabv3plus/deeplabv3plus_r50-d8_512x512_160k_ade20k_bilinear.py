# DeepLabV3+ R50-D8, ADE20K 512x512, 160k iterations (4 GPUs x 4 images): the decoder's 2x step
# (ASPP output, stride 8, to the c1 feature, stride 4); guided upsamplers get the 48-channel c1
# feature through a 1x1 conv to 512 channels (guide_proj).
# Without an upsampler type the dlu_mm module is exactly the stock one, so this config
# reproduces
# mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py; the per-upsampler configs inherit it.
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dlu_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='UpsampleDepthwiseSeparableASPPHead'))
