"""Params and FLOPs of classifiers / backbones that contain :class:`DDFConv` layers.

FLOPs follow mmengine.analysis (fvcore convention: one multiply-add = 1 FLOP, elementwise ops
such as ReLU, FilterNorm's statistics and residual adds not counted). The jit-based analyzer does
not see inside the ``ddf`` op (a Python loop of elementwise ops, or an opaque native op), so each
DDFConv's op is added by :func:`ddf_op_flops`; its branches' 1x1 convs and pooling are counted
by the analyzer itself.

CLI (prints a table): ``python -m dlu_mm.pretrain.complexity CONFIG [CONFIG ...] --size 224``
"""
import argparse
import warnings

import torch

from .ddf_conv import DDFConv


def ddf_op_flops(channels, out_h, out_w, kernel_size, batch=1):
    """FLOPs of one ``ddf`` call: per output element k*k taps, each one multiply-add of the
    input with the filter plus one op combining the spatial and channel filter (mul or add)."""
    return 2 * kernel_size ** 2 * channels * out_h * out_w * batch


def count_ddf_op_flops(model, inputs):
    """Sum of :func:`ddf_op_flops` over every DDFConv call of ``model(*inputs)``."""
    total = 0

    def hook(module, args, output):
        nonlocal total
        n, c, h, w = output.shape
        total += ddf_op_flops(c, h, w, module.kernel_size, n)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DDFConv)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def model_complexity(model, input_shape=(3, 224, 224)):
    """``dict(params, flops, flops_analyzer, flops_ddf_op)`` for one ``input_shape`` image.

    ``flops = flops_analyzer + flops_ddf_op``; ``model(x)`` must run on a (1, *input_shape)
    tensor (an mmpretrain classifier does, in 'tensor' mode).
    """
    from mmengine.analysis import FlopAnalyzer

    model = model.eval()
    inputs = (torch.randn(1, *input_shape),)
    analyzer = FlopAnalyzer(model, inputs)
    # the ddf op's elementwise internals are counted by formula instead (see module doc)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # jit tracer warnings
        flops_analyzer = analyzer.total()
    flops_ddf = count_ddf_op_flops(model, inputs)
    return dict(params=sum(p.numel() for p in model.parameters()),
                flops=flops_analyzer + flops_ddf, flops_analyzer=flops_analyzer,
                flops_ddf_op=flops_ddf)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Params / FLOPs of mmpretrain configs whose '
                                     'models may contain DDFConv layers')
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--size', type=int, default=224, help='square input size')
    args = parser.parse_args(argv)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    print(f'| config | params | FLOPs @ {args.size}x{args.size} | of which ddf op |')
    print('|---|---:|---:|---:|')
    for path in args.configs:
        cfg = Config.fromfile(path)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        if cfg.get('custom_imports'):
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg.custom_imports)
        stats = model_complexity(MODELS.build(cfg.model), (3, args.size, args.size))
        print(f'| {path} | {stats["params"]:,} ({stats["params"] / 1e6:.2f}M) | '
              f'{stats["flops"] / 1e9:.3f}G | {stats["flops_ddf_op"] / 1e9:.3f}G |')


if __name__ == '__main__':
    main()
