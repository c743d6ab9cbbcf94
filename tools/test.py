"""Evaluate a checkpoint on a config's test set with the mmengine Runner (mmdet or mmseg).

    python tools/test.py configs/faster_rcnn_r50_fpn_dlu.py \
        work_dirs/faster_rcnn_r50_fpn_dlu/epoch_12.pth
    python tools/test.py CONFIG CKPT --out results.pkl --cfg-options test_dataloader.batch_size=2
    bash tools/dist_test.sh CONFIG CKPT 8    # torchrun, 8 GPUs (no GPU: 8 CPU processes, gloo)

The metrics come from the config's ``test_evaluator`` (CocoMetric, IoUMetric, ...).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # the sibling train.py
from train import (add_common_args, build_runner, check_dataset_paths,  # noqa: E402
                   load_config, teardown_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        sys.exit(f'error: checkpoint not found: {args.checkpoint!r}')
    try:
        check_dataset_paths(cfg, ('test_dataloader',))
    except FileNotFoundError as error:
        sys.exit(f'error: {error}')
    runner = build_runner(cfg)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            sys.exit(f'error: --out must be a .pkl file, got {args.out!r}')
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()
    teardown_cpu_distributed(cfg)


if __name__ == '__main__':
    main()
