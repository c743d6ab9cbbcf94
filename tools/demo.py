"""The README's main command (``bash tools/dev.sh demo``): a DLU detector end to end on a CPU.

1. generates the synthetic COCO set (``dlu_mm.datasets.synthetic_coco``) unless it exists,
2. trains the light Faster R-CNN with a DLU FPN (``configs/demo/faster_rcnn_lite_synthetic_dlu.py``)
   from scratch,
3. evaluates it with mmdet's CocoMetric on the synthetic val split,
4. prints the bbox mAP and the wall time.

    python tools/demo.py [--config CONFIG] [--data-root DIR] [--work-dir DIR] [--epochs N]
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # the sibling train.py
from train import REPO_ROOT, build_runner, load_config  # noqa: E402

DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo', 'faster_rcnn_lite_synthetic_dlu.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--data-root', default=osp.join(REPO_ROOT, 'data', 'synthetic_coco'),
                        help='where the synthetic set is (generated here when absent)')
    parser.add_argument('--work-dir', help='default: work_dirs/demo_<config name>')
    parser.add_argument('--epochs', type=int, help="override the config's max_epochs")
    parser.add_argument('--seed', type=int, default=0, help='seed of the generated data set')
    return parser.parse_args(argv)


def point_at_data(cfg, data_root):
    """Point every dataloader and CocoMetric of ``cfg`` at ``data_root``."""
    data_root = osp.join(data_root, '')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = osp.join(data_root, 'annotations', 'instances_val2017.json')


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    from dlu_mm.datasets import synthetic_coco
    if not synthetic_coco.exists(args.data_root):
        print(f'generating the synthetic COCO set in {args.data_root}')
        synthetic_coco.generate(args.data_root, seed=args.seed)
    config_name = osp.splitext(osp.basename(args.config))[0]
    cfg = load_config(argparse.Namespace(
        config=args.config, launcher='none', cfg_options=None,
        work_dir=args.work_dir or osp.join(REPO_ROOT, 'work_dirs', f'demo_{config_name}')))
    point_at_data(cfg, args.data_root)
    if args.epochs is not None:
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = args.epochs
        cfg.default_hooks.checkpoint.interval = args.epochs
    runner = build_runner(cfg)
    runner.train()  # validates with CocoMetric after the last epoch
    bbox_map = runner.message_hub.get_scalar('val/coco/bbox_mAP').current()
    bbox_map50 = runner.message_hub.get_scalar('val/coco/bbox_mAP_50').current()
    elapsed = time.time() - start
    print(f'\n[demo] {config_name}: bbox mAP {bbox_map:.3f} (mAP@0.5 {bbox_map50:.3f}) on the '
          f'synthetic val set, wall time {elapsed:.0f} s; logs and checkpoint in {cfg.work_dir}')
    return bbox_map


if __name__ == '__main__':
    main()
