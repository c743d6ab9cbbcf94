# CPU demo: DDF-ResNet-50 (ddf_mul) trained for a few iterations on the tiny synthetic set of
# dlu_mm.datasets.synthetic_cls (4 classes of 32x32 stripe images), validated with top-1.
#   python -m dlu_mm.datasets.synthetic_cls --out data/synthetic_cls
#   python tools/train.py configs/ddf_resnet/demo_ddf_resnet50_synthetic.py
# R50 at 32x32 costs ~0.1 GFLOPs a sample, so a step takes about a second on 2 CPU cores.
_base_ = './ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py'

data_root = 'data/synthetic_cls'
classes = ('class_00', 'class_01', 'class_02', 'class_03')  # synthetic_cls.class_names(4)

model = dict(
    data_preprocessor=dict(num_classes=len(classes)),
    head=dict(num_classes=len(classes), topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


def _loader(split, shuffle, pipeline):
    return dict(
        batch_size=4,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=shuffle),
        dataset=dict(
            _delete_=True,
            type='CustomDataset',
            data_root=data_root,
            ann_file=f'meta/{split}.txt',
            data_prefix=dict(img_path=split),
            metainfo=dict(classes=classes),
            pipeline=pipeline))


train_dataloader = _loader('train', True, train_pipeline)
val_dataloader = _loader('val', False, test_pipeline)
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=4)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = dict(_delete_=True, type='ConstantLR', factor=1.0, by_epoch=False)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=4))
log_processor = dict(by_epoch=False)
