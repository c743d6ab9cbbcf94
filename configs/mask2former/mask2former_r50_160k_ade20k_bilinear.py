# Mask2Former R50, ADE20K 512x512, 160k iterations (8 GPUs x 2 images): the pixel decoder's FPN
# step (1/8 -> 1/4 after the deformable encoder). mmseg configs name mmdet's decoders with the
# mmdet. prefix, so the dlu_mm one is 'mmdet.UpsampleMSDeformAttnPixelDecoder' (dlu_mm.det).
# Without an upsampler type the dlu_mm module is exactly the stock one, so this config
# reproduces
# mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py; the per-upsampler configs inherit it.
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)

model = dict(decode_head=dict(
    pixel_decoder=dict(type='mmdet.UpsampleMSDeformAttnPixelDecoder')))
