# RTMDet-s, COCO, 300 epochs (8 GPUs x 32 images): CSPNeXtPAFPN's 2 top-down 2x steps, one
# upsampler per step with that step's channels (256, 128). No published numbers exist.
# Without an upsampler type the dlu_mm module is exactly the stock one, so this config
# reproduces
# mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py; the per-upsampler configs inherit it.
_base_ = ['mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py']

custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)

model = dict(neck=dict(type='UpsampleCSPNeXtPAFPN'))
