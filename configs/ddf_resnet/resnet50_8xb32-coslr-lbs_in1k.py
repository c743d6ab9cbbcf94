# Plain ResNet-50 baseline trained with exactly the recipe assumed for the DDF-ResNet configs
# (see ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py), so the two compare like with like.
_base_ = 'mmpretrain::resnet/resnet50_8xb32-coslr_in1k.py'

model = dict(
    head=dict(loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1,
                        mode='original', loss_weight=1.0)))
