# Faster R-CNN R50-FPN 1x COCO with DySample (Liu et al., ICCV 2023) in the STANDARD FPN: 3
# upsamplers (P5->P4->P3->P2), P6 by max-pool, mmdet's pad 32. This is the layout of tiny-smart's
# detection fork (FPN_UPSAMPLE), the home of its checkpoints after
# `python tools/model_converters/convert.py --from dysample SRC DST`. The paper's numbers used the
# CARAFE-style neck (faster_rcnn_r50_fpn_dysample.py): never compare numbers across the two.
_base_ = './faster_rcnn_r50_fpn_dysample.py'
model = dict(data_preprocessor=dict(pad_size_divisor=32), neck=dict(carafe_style=False))
