# DDF-ResNet-50, ddf_add: spatial and channel filters summed instead of multiplied (same params
# and FLOPs as ddf_mul). Recipe and its assumptions: ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py.
_base_ = './ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py'

model = dict(backbone=dict(kernel_combine='add'))
