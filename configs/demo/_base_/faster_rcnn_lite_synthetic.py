# A light Faster R-CNN for the synthetic COCO set (dlu_mm.datasets.synthetic_coco) that trains
# from scratch on a CPU in a few minutes: ResNet-18 at a quarter of its width, a 64-channel
# CARAFE-style UpsampleFPN, 160 px images. Per-upsampler demo configs set neck.upsample_cfg.
# Generate the data first: python -m dlu_mm.datasets.synthetic_coco --out data/synthetic_coco
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)

data_root = 'data/synthetic_coco/'
# = dlu_mm.datasets.synthetic_coco.THING_CLASSES
metainfo = dict(classes=('rectangle', 'ellipse', 'triangle'))
image_scale = (160, 160)
max_epochs = 16

model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    # no pretrained weights: the demo must run offline
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(type='UpsampleFPN', in_channels=[16, 32, 64, 128], out_channels=64,
              carafe_style=True, upsample_cfg=dict(type='nearest')),
    # objects are 12-80 px: anchors of 16 px at stride 4 up to 256 px at stride 64
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=len(metainfo['classes']))),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# the synthetic set mirrors COCO's layout, so ann_file / data_prefix stay mmdet's
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# from scratch with batch 4: AdamW with warmup and gradient clipping is far steadier than SGD
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.75)], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs), logger=dict(interval=10))
randomness = dict(seed=0)
