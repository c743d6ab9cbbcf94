"""Whole-model params and FLOPs of a dlu_mm detection or segmentation config.

    python tools/analysis/get_flops.py configs/faster_rcnn_r50_fpn_dlu.py
    python tools/analysis/get_flops.py configs/upernet_r50_512x512_160k_ade20k_dlu.py --shape 512

The model is built from the config (pretrained weights are never loaded: FLOPs do not depend on
them), a random image of ``--shape`` goes through the model's data preprocessor and the
network's 'tensor' forward (mmdet: backbone, neck, RPN + RoI heads; mmseg: backbone + decode
head) is analysed:
- mmengine convention (``--convention mmengine``): mmengine's jit ``FlopAnalyzer`` with
  dlu_mm's op handles (1 FLOP per multiply-accumulate, conv biases ignored), comparable with
  mmdet's / mmseg's own get_flops tools;
- spec convention (``--convention spec``): :func:`dlu_mm.analysis.count_flops`, 2 x MACs with
  bias adds counted (the convention of docs/complexity.md).
Either way every dlu_mm op counts as one unit whichever backend runs it, and the upsamplers'
share is printed separately.
"""
import argparse

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from dlu_mm.analysis import count_flops
from dlu_mm.analysis.mmengine_handles import model_complexity
from dlu_mm.swap import without_pretrained
from dlu_mm.upsamplers import BaseUpsampler

DEFAULT_SHAPES = {'mmdet': (800, 1333), 'mmseg': (512, 512)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'),
                        help='input image size (one value = square); default 800 x 1333 for '
                        'mmdet, the crop size (else 512 x 512) for mmseg')
    parser.add_argument('--convention', choices=['mmengine', 'spec', 'both'], default='both')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy')
    parser.add_argument('--show-unsupported', action='store_true',
                        help='list the traced ops mmengine has no FLOP handle for')
    args = parser.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or min(args.shape) < 1:
            parser.error(f'--shape takes H [W] >= 1, got {args.shape}')
        if len(args.shape) == 1:
            args.shape = args.shape * 2
    return args


def _data_sample(scope, height, width):
    metainfo = dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return DetDataSample(metainfo=metainfo)
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return SegDataSample(metainfo=metainfo)
    raise ValueError(f'get_flops supports mmdet and mmseg configs (default_scope), got {scope!r}')


class TensorForward(torch.nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` with fixed data samples, for tracing."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        head = getattr(self.model, 'decode_head', None)
        if getattr(head, 'pixel_decoder', None) is not None:
            # mmseg's MaskFormer / Mask2Former heads take the data samples, which mmseg's
            # tensor mode does not pass on: backbone (+ neck) and the head's forward
            return head(self.model.extract_feat(inputs), self.data_samples)
        return self.model(inputs, self.data_samples, mode='tensor')


def build_for_analysis(config, shape=None, cfg_options=None):
    """-> (wrapped model in eval mode, preprocessed inputs, scope, (H, W))."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if shape is None:
        crop = cfg.get('crop_size')
        shape = tuple(crop) if scope == 'mmseg' and crop else DEFAULT_SHAPES.get(scope, (512, 512))
    height, width = shape
    from mmengine.registry import MODELS
    model = MODELS.build(without_pretrained(cfg.model))
    model = revert_sync_batchnorm(model).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    data = model.data_preprocessor(
        dict(inputs=[image], data_samples=[_data_sample(scope, height, width)]), False)
    return TensorForward(model, data['data_samples']), data['inputs'], scope, (height, width)


def _upsamplers(wrapped):
    return {name: module for name, module in wrapped.named_modules()
            if isinstance(module, BaseUpsampler)}


def _fmt(value):
    for unit, size in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= size:
            return f'{value / size:.3f}{unit}'
    return f'{value:.0f}'


def analyse(config, shape=None, convention='both', cfg_options=None):
    """Returns dict(params, upsampler_params, scope, shape, input_shape[, mmengine][, spec])."""
    wrapped, inputs, scope, shape = build_for_analysis(config, shape, cfg_options)
    upsamplers = _upsamplers(wrapped)
    result = dict(scope=scope, shape=shape, input_shape=tuple(inputs.shape),
                  params=sum(p.numel() for p in wrapped.parameters()),
                  upsampler_params=sum(p.numel() for m in upsamplers.values()
                                       for p in m.parameters()),
                  upsamplers=sorted(upsamplers))
    if convention in ('mmengine', 'both'):
        mm = model_complexity(wrapped, (inputs, ))
        by_module = mm['analyzer'].by_module()
        result['mmengine'] = dict(
            flops=mm['flops'], upsampler_flops=sum(by_module.get(n, 0) for n in upsamplers),
            unsupported=dict(mm['analyzer'].unsupported_ops()))
    if convention in ('spec', 'both'):
        count = count_flops(wrapped, inputs, track_modules=upsamplers)
        result['spec'] = dict(flops=count.total,
                              upsampler_flops=sum(count.by_module.values()),
                              by_category=dict(count.by_category))
    return result


def main(argv=None):
    args = parse_args(argv)
    result = analyse(args.config, args.shape, args.convention, args.cfg_options)
    height, width = result['shape']
    n_up = len(result['upsamplers'])
    lines = [f'Config: {args.config}',
             f'Image: {height} x {width} (network input {tuple(result["input_shape"])} after '
             'the data preprocessor), pretrained weights not loaded',
             f'Params: {_fmt(result["params"])} ({result["params"]:,}); {n_up} upsampler(s): '
             f'{_fmt(result["upsampler_params"])} ({result["upsampler_params"]:,})']
    if 'mmengine' in result:
        mm = result['mmengine']
        lines.append(f'FLOPs (mmengine convention, 1 MAC = 1 FLOP): {_fmt(mm["flops"])}; '
                     f'upsamplers: {_fmt(mm["upsampler_flops"])}')
        if args.show_unsupported and mm['unsupported']:
            lines.append('  not priced by mmengine: ' + ', '.join(
                f'{op} x{n}' for op, n in sorted(mm['unsupported'].items())))
    if 'spec' in result:
        spec = result['spec']
        lines.append(f'FLOPs (2 x MACs + bias adds, docs/complexity.md convention): '
                     f'{_fmt(spec["flops"])}; upsamplers: {_fmt(spec["upsampler_flops"])}')
    print('\n'.join(lines))
    return result


if __name__ == '__main__':
    main()
