"""Params and FLOPs of mmpretrain classifiers / backbones, DDFConv's ``ddf`` op included.

FLOPs follow mmengine.analysis (fvcore convention: one multiply-add = 1 FLOP; element-wise ops
such as ReLU, FilterNorm's statistics and residual adds not counted). The jit-traced analyzer
cannot price the ``ddf`` op by itself (a loop of element-wise ops, or an opaque native node), so
this uses :func:`dlu_mm.analysis.mmengine_handles.model_complexity`, which traces every dlu_mm
op as one node and prices it with dlu_mm's cost model (ddf: 3 FLOPs = X*S*Ch's two multiplies
and one add per tap and output value in the 2 x MAC convention, halved to mmengine's).

CLI (prints a markdown table): ``python -m dlu_mm.pretrain.complexity CONFIG [...] --size 224``
(CONFIG: a path, or ``mmpretrain::resnet/resnet50_8xb32_in1k.py`` for an installed one)
"""
import argparse
import warnings

import torch


def model_complexity(model, input_shape=(3, 224, 224)):
    """``dict(params, flops, flops_ddf_op)`` of ``model`` on one (1, *input_shape) image.

    ``model(x)`` must run on the tensor (an mmpretrain classifier does, in 'tensor' mode).
    ``flops_ddf_op`` is the part of ``flops`` spent in ``ddf`` op calls.
    """
    from ..analysis.mmengine_handles import model_complexity as analyse

    model.eval()  # mmpretrain's ResNet.train() returns None: no chaining
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # jit tracer warnings
        stats = analyse(model, (torch.randn(1, *input_shape), ))
    by_operator = stats['analyzer'].by_operator()
    flops_ddf = sum(v for op, v in by_operator.items() if op.split('::')[-1] == 'ddf')
    return dict(params=stats['params'], flops=stats['flops'], flops_ddf_op=flops_ddf)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Params / FLOPs of mmpretrain configs whose '
                                     'models may contain DDFConv layers')
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--size', type=int, default=224, help='square input size')
    args = parser.parse_args(argv)
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    print(f'| config | params | FLOPs @ {args.size}x{args.size} | of which ddf op |')
    print('|---|---:|---:|---:|')
    for path in args.configs:
        # 'mmpretrain::resnet/resnet50_8xb32_in1k.py' names an installed package's config
        cfg = get_config(path) if '::' in path else Config.fromfile(path)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        stats = model_complexity(MODELS.build(cfg.model), (3, args.size, args.size))
        print(f'| {path} | {stats["params"]:,} ({stats["params"] / 1e6:.2f}M) | '
              f'{stats["flops"]:,} ({stats["flops"] / 1e9:.2f}G) | '
              f'{stats["flops_ddf_op"]:,} |')


if __name__ == '__main__':
    main()
