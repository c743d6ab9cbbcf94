"""Train a model from an mmengine config with the mmengine Runner.

Serves mmdet and mmseg configs alike: the config's ``default_scope`` (inherited from its
``mmdet::`` / ``mmseg::`` base) decides which registries build it, and its ``custom_imports``
load ``dlu_mm.det`` / ``dlu_mm.seg``.

    python tools/train.py configs/faster_rcnn_r50_fpn_dlu.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume            # resume the latest
    python tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth --amp
    python tools/train.py CONFIG --cfg-options train_dataloader.batch_size=4
    bash tools/dist_train.sh CONFIG 8                                        # torchrun, 8 GPUs
    bash tools/dist_train.sh CONFIG 2        # no GPU: 2 CPU processes, gloo, CPU DDP

With ``--launcher pytorch`` on a machine without CUDA, the gloo process group and a CPU DDP
wrapper are set up before the Runner (see ``dlu_mm.utils.dist``); with CUDA, mmengine's own
nccl set-up runs unchanged.

Outputs (logs, checkpoints) go to ``--work-dir``, default ``work_dirs/<config name>``.
"""
import argparse
import os
import os.path as osp
import sys

# make the checkout importable when dlu_mm is not installed (configs' custom_imports name it)
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import dlu_mm  # noqa: E402,F401  (registers the safe globals mmengine checkpoints need)
from dlu_mm.utils.dist import (LAUNCHERS, setup_cpu_distributed,  # noqa: E402
                               teardown_cpu_distributed)
from mmengine.config import Config, DictAction  # noqa: E402

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def add_common_args(parser):
    """Arguments train.py and test.py share."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, key=value pairs in xxx=yyy format, e.g. '
        'model.backbone.depth=18 train_dataloader.batch_size=4 "key=[a,b]"')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (--local_rank before torch 2.0); torchrun
    # sets LOCAL_RANK instead
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector or segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by batch size / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest one in the work dir')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(args):
    """Config.fromfile + the shared command-line overrides (launcher, cfg-options, work dir)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def _datasets(dataset_cfg):
    """The leaf dataset cfgs inside dataset wrappers (RepeatDataset, ConcatDataset, ...)."""
    if dataset_cfg is None:
        return
    if isinstance(dataset_cfg, (list, tuple)):
        for item in dataset_cfg:
            yield from _datasets(item)
        return
    if 'dataset' in dataset_cfg:
        yield from _datasets(dataset_cfg['dataset'])
    elif 'datasets' in dataset_cfg:
        yield from _datasets(dataset_cfg['datasets'])
    else:
        yield dataset_cfg


def _how_to_get(path, data_root):
    lowered = path.replace('\\', '/').lower()
    if 'synthetic_coco' in lowered:
        return (f'generate it with `python -m dlu_mm.datasets.synthetic_coco --out {data_root}` '
                '(or run `bash tools/dev.sh demo`, which does)')
    if 'synthetic_ade' in lowered:
        return f'generate it with `python -m dlu_mm.datasets.synthetic_ade --out {data_root}`'
    if 'coco' in lowered:
        return ('download COCO 2017 (train2017/, val2017/, annotations/ incl. the panoptic ones) '
                'from https://cocodataset.org into data/coco/, as described in '
                'https://mmdetection.readthedocs.io/en/latest/user_guides/dataset_prepare.html')
    if 'ade' in lowered:
        return ('download ADEChallengeData2016 into data/ade/, as described in https://'
                'mmsegmentation.readthedocs.io/en/latest/user_guides/2_dataset_prepare.html')
    return 'see the dataset preparation guide of mmdetection / mmsegmentation'


def check_dataset_paths(cfg, dataloaders=DATALOADERS):
    """Raise FileNotFoundError naming the first missing ann_file / data_prefix path and how to
    get the data, before the Runner builds (and fails deep inside) the datasets."""
    for loader_name in dataloaders:
        loader = cfg.get(loader_name, None)
        if not loader:
            continue
        for dataset in _datasets(loader.get('dataset')):
            data_root = dataset.get('data_root', None) or ''
            paths = []
            if dataset.get('ann_file'):
                paths.append(('ann_file', osp.join(data_root, dataset['ann_file'])))
            for key, prefix in (dataset.get('data_prefix', None) or {}).items():
                if isinstance(prefix, str) and prefix:
                    paths.append((f'data_prefix.{key}', osp.join(data_root, prefix)))
            if not paths and data_root:
                paths.append(('data_root', data_root))
            for what, path in paths:
                if '://' in path or osp.exists(path):  # remote backends are not checked
                    continue
                raise FileNotFoundError(
                    f'{loader_name}.dataset {what} not found: {path!r} (data_root={data_root!r}). '
                    f'To get the data, {_how_to_get(path, data_root or path)}; or point the '
                    f'config at your copy, e.g. --cfg-options '
                    f'{loader_name}.dataset.data_root=/path/to/data/')


def build_runner(cfg):
    """The Runner of ``cfg`` (``runner_type`` or mmengine's Runner). Without CUDA and with a
    distributed ``cfg.launcher``, first the gloo process group and the CPU DDP wrapper cfg."""
    setup_cpu_distributed(cfg)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def apply_train_args(cfg, args):
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr', None)
        if not scale_cfg or 'base_batch_size' not in scale_cfg:
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr = dict(enable=..., '
                               'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = apply_train_args(load_config(args), args)
    try:
        check_dataset_paths(cfg)
    except FileNotFoundError as error:
        sys.exit(f'error: {error}')
    runner = build_runner(cfg)
    runner.train()
    teardown_cpu_distributed(cfg)


if __name__ == '__main__':
    main()
