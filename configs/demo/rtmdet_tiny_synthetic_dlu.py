# RTMDet-tiny with DLU in both top-down steps of its CSPNeXtPAFPN, shrunk to train from scratch
# on the synthetic COCO set (dlu_mm.datasets.synthetic_coco) on a CPU: 160 px images, no mosaic,
# no pretrained backbone, no EMA / pipeline switch. Used by the end-to-end test of the new necks.
# Generate the data first: python -m dlu_mm.datasets.synthetic_coco --out data/synthetic_coco
_base_ = '../rtmdet/rtmdet_tiny_300e_coco_dlu.py'

data_root = 'data/synthetic_coco/'
# = dlu_mm.datasets.synthetic_coco.THING_CLASSES
metainfo = dict(classes=('rectangle', 'ellipse', 'triangle'))
image_scale = (160, 160)
max_epochs = 12

model = dict(
    backbone=dict(init_cfg=None),  # offline: no ImageNet weights
    neck=dict(upsample_cfg=dict(compressed_channels=16)),
    bbox_head=dict(num_classes=len(metainfo['classes'])),
    test_cfg=dict(nms_pre=300, max_per_img=20))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_scale, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='Pad', size=image_scale, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, batch_sampler=None,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs, dynamic_intervals=None)
optim_wrapper = dict(optimizer=dict(lr=2e-3), clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.75)], gamma=0.1)
]
custom_hooks = []
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1),
                     logger=dict(interval=10))
randomness = dict(seed=0)
