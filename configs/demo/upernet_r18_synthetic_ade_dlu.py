# Demo: UPerNet R18 + DLU on the synthetic ADE20K-format set; about a minute on a laptop CPU.
#   python -m dlu_mm.datasets.synthetic_ade --out data/synthetic_ade
#   python tools/train.py configs/demo/upernet_r18_synthetic_ade_dlu.py
#   python tools/test.py configs/demo/upernet_r18_synthetic_ade_dlu.py \
#       work_dirs/upernet_r18_synthetic_ade_dlu/iter_200.pth
# Same mmseg dataset class and reduce_zero_label semantics as ADE20K, 6 classes (the first six
# ADE20K names), random init (no download), BN instead of SyncBN, a slim head (128 channels).
_base_ = ['mmseg::upernet/upernet_r18_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dlu_mm.seg'], allow_failed_imports=False)

num_classes = 6
classes = ('wall', 'building', 'sky', 'floor', 'tree', 'ceiling')
crop_size = (64, 64)
max_iters = 200
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(
        type='UpsampleUPerHead',
        upsample_cfg=dict(type='DLU'),
        channels=128,
        num_classes=num_classes,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=64, num_classes=num_classes, norm_cfg=norm_cfg))

data_root = 'data/synthetic_ade'
metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# native (often odd) image sizes at test time, like ADE20K's validation images
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
env_cfg = dict(cudnn_benchmark=False)
