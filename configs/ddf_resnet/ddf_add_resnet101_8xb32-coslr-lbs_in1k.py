# DDF-ResNet-101, ddf_add. Recipe and its assumptions: ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py.
_base_ = './ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py'

model = dict(backbone=dict(depth=101, kernel_combine='add'))
