# Mask R-CNN R50-FPN 1x COCO with dlu_mm's UpsampleFPN (CARAFE-style neck, pad 64) and the
# UpsampleFCNMaskHead; per-upsampler configs (mask_rcnn_r50_fpn_<upsampler>.py) set
# neck.upsample_cfg and, as CARAFE's Mask R-CNN did, the mask head's 2x upsampler
# (default here: mmdet's deconv).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    neck=dict(type='UpsampleFPN', carafe_style=True, upsample_cfg=dict(type='nearest')),
    roi_head=dict(mask_head=dict(type='UpsampleFCNMaskHead')))
