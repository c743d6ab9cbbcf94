# Mask2Former R50, COCO panoptic, LSJ 1024x1024, 50 epochs (8 GPUs x 2 images): the pixel
# decoder's FPN step (1/8 -> 1/4 after the deformable encoder).
# Without an upsampler type the dlu_mm module is exactly the stock one, so this config
# reproduces
# mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py; the per-upsampler configs inherit it.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py']

custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)

model = dict(panoptic_head=dict(
    pixel_decoder=dict(type='UpsampleMSDeformAttnPixelDecoder')))
