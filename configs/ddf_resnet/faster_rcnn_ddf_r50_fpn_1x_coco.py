# Faster R-CNN with a DDF-ResNet-50 (ddf_mul) backbone, FPN, 1x schedule, COCO: mmdet's config
# with only the backbone swapped for mmpretrain's DDFResNet (registered by dlu_mm.pretrain,
# reached from the mmdet scope through the 'mmpretrain.' prefix).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['dlu_mm.pretrain'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.DDFResNet',
        depth=50,
        kernel_combine='mul',
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        # No ImageNet DDF-ResNet-50 checkpoint ships with this project (the torchvision
        # ResNet-50 weights of the base config do not fit its 3x3 slots). Train
        # ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py first, then point at it:
        # init_cfg=dict(type='Pretrained', prefix='backbone.',
        #               checkpoint='work_dirs/ddf_mul_resnet50_8xb32-coslr-lbs_in1k/epoch_100.pth')
        init_cfg=None))
