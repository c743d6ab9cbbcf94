# Faster R-CNN R50-FPN 1x COCO with dlu_mm's UpsampleFPN. Per-upsampler configs
# (faster_rcnn_r50_fpn_<upsampler>.py) set neck.upsample_cfg.
# Default: the CARAFE-style neck the CARAFE / DLU / LDA-AQU / DySample papers used (P6 from a
# 3x3 stride-2 conv on C5 inside the top-down path, 4 upsamplers; 46.8M params with nearest),
# padded to 64 as those papers did so every level halves exactly.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    neck=dict(type='UpsampleFPN', carafe_style=True, upsample_cfg=dict(type='nearest')))
