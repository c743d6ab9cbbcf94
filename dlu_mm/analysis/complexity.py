"""The upsampler complexity table: params and FLOPs counted from built modules vs the spec.

For every upsampler and scale the module is built on the ``meta`` device (nothing is allocated
or computed), its parameters are counted and its forward on a 1 x C x H x W input is counted
with :func:`~dlu_mm.analysis.count_flops`; the spec formulas (:mod:`.formulas`) give the
expected numbers. Optionally each module is also built on the CPU and timed (median forward).
``tools/analysis/complexity.py`` prints the result as markdown (docs/complexity.md).
"""
import dataclasses
import os
import statistics
import time
from typing import Optional

import torch

from ..ops import native_available
from ..upsamplers import build_upsampler, is_guided
from .flop_counter import count_flops
from .formulas import spec_flops, spec_params
from .op_costs import OP_COSTS

__all__ = ['UPSAMPLER_PRESETS', 'PAPER_RESULTS', 'ComplexityRow', 'measure', 'cpu_forward_ms',
           'complexity_rows', 'reduction', 'markdown_report']

#: table label -> upsampler cfg (operator defaults unless stated)
UPSAMPLER_PRESETS = {
    'CARAFE': dict(type='CARAFE'),
    'DLU': dict(type='DLU'),
    'DDF-Up': dict(type='DDFUp'),
    'LDA-AQU': dict(type='LDAAQU'),
    'DySample': dict(type='DySample'),
    'DySample+': dict(type='DySample', dyscope=True),
    'FADE': dict(type='FADE'),
    'SAPA': dict(type='SAPA'),
    'SAPA-det (d=32, GN)': dict(type='SAPA', embedding_dim=32, norm='gn'),
    'nearest': dict(type='nearest'),
    'bilinear': dict(type='bilinear'),
    'deconv': dict(type='deconv'),
    'pixel_shuffle': dict(type='pixel_shuffle'),
}

#: what the papers report (design spec sections 1-5); never measured here
PAPER_RESULTS = [
    # (upsampler, model / dataset, metric, reported, baseline as reported, source)
    ('CARAFE', 'Faster R-CNN R50-FPN 1x, COCO val', 'box AP', '38.6', 'bilinear 37.5',
     'DLU repo README'),
    ('DLU', 'Faster R-CNN R50-FPN 1x, COCO val', 'box AP', '38.6', 'bilinear 37.5',
     'DLU repo README (abstract: +0.3 over CARAFE in its best setting)'),
    ('LDA-AQU', 'Faster R-CNN R50-FPN 1x, COCO', 'box AP', '39.2', 'nearest 37.5',
     'LDA-AQU paper (abstract: +1.7 AP)'),
    ('LDA-AQU', 'Mask R-CNN / Panoptic FPN / semantic seg.', 'AP / PQ / mIoU', '+1.5 / +2.0 / +2.5',
     'the papers\' baselines', 'LDA-AQU abstract'),
    ('DySample / DySample+', 'Faster R-CNN R50-FPN 1x, COCO', 'box AP', '38.6 / 38.7',
     'nearest 37.5', 'DySample paper'),
    ('DySample / DySample+', 'Mask R-CNN R50-FPN 1x, COCO', 'box / mask AP',
     '39.2 / 35.4 and 39.6 / 35.7', 'nearest 38.3 / 34.7', 'DySample paper'),
    ('DySample / DySample+', 'Panoptic FPN R50 1x, COCO', 'PQ', '41.4 / 41.5', 'nearest 40.2',
     'DySample paper'),
    ('FADE', 'Faster R-CNN R50-FPN 1x, COCO', 'box AP', '38.5', '', 'FADE paper'),
    ('FADE', 'SegFormer-B1, ADE20K', 'mIoU', '44.41', 'bilinear 41.68', 'FADE paper'),
    ('SAPA-det (d=32, GN)', 'Faster R-CNN R50-FPN 1x, COCO', 'box AP', '37.8', '', 'SAPA paper'),
    ('SAPA', 'UPerNet R50, ADE20K', 'mIoU', '41.47', 'bilinear 41.09', 'SAPA paper'),
]


@dataclasses.dataclass
class ComplexityRow:
    label: str
    scale_factor: int
    params: int
    spec_params: int
    flops: int  # counted, one forward on 1 x C x H x W
    spec_flops: int
    sampling_flops: int  # counted, the 'sampling' category
    pixels: int  # H * W of the counting input
    cpu_ms: Optional[float] = None

    @property
    def flops_per_pixel(self):
        return self.flops / self.pixels

    @property
    def spec_flops_per_pixel(self):
        return self.spec_flops / self.pixels

    @property
    def sampling_per_pixel(self):
        return self.sampling_flops / self.pixels


def _inputs(module, channels, scale_factor, height, width, device):
    x = torch.randn(1, channels, height, width, device=device)
    if getattr(module, 'joint_channels', -1) > 0:  # DDF-Up joint mode: guide at x's size
        return x, torch.randn(1, module.joint_channels, height, width, device=device)
    if is_guided(module):
        return x, torch.randn(1, module.guide_channels, scale_factor * height,
                              scale_factor * width, device=device)
    return (x,)


def measure(label, cfg, channels, scale_factor, size=64):
    """Counted and spec params / FLOPs of one upsampler (built and run on ``meta``)."""
    with torch.device('meta'):
        module = build_upsampler(cfg, channels, scale_factor).eval()
        inputs = _inputs(module, channels, scale_factor, size, size, 'meta')
    count = count_flops(module, *inputs)
    return ComplexityRow(
        label=label, scale_factor=scale_factor,
        params=sum(p.numel() for p in module.parameters()),
        spec_params=spec_params(cfg, channels, scale_factor),
        flops=count.total, spec_flops=sum(spec_flops(cfg, channels, scale_factor, size,
                                                     size).values()),
        sampling_flops=count.by_category['sampling'], pixels=size * size)


def cpu_forward_ms(cfg, channels, scale_factor, size, repeats=5, warmup=1):
    """Median wall time (ms) of ``repeats`` no-grad CPU forwards on a 1 x C x size x size input."""
    torch.manual_seed(0)
    module = build_upsampler(cfg, channels, scale_factor).eval()
    inputs = _inputs(module, channels, scale_factor, size, size, 'cpu')
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            module(*inputs)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def complexity_rows(presets=None, channels=256, scales=(2, 4, 8, 16), size=64, time_cpu=False,
                    time_output=128, repeats=5, time_max_params=50_000_000, log=None):
    """One :class:`ComplexityRow` per (scale, upsampler), scales outermost.

    With ``time_cpu`` the CPU time is measured on a 1 x C x (time_output/s)^2 input (the same
    output size at every scale); modules over ``time_max_params`` are not timed.
    """
    presets = UPSAMPLER_PRESETS if presets is None else presets
    rows = []
    for s in scales:
        for label, cfg in presets.items():
            row = measure(label, cfg, channels, s, size)
            if time_cpu and row.params <= time_max_params:
                row.cpu_ms = cpu_forward_ms(cfg, channels, s, max(time_output // s, 1), repeats)
            if log is not None:
                log(f'{label} s={s}: {row.params} params, {row.flops_per_pixel:.0f} FLOPs/px'
                    + (f', {row.cpu_ms:.1f} ms' if row.cpu_ms is not None else ''))
            rows.append(row)
    return rows


def reduction(value, reference):
    """Relative reduction of ``value`` w.r.t. ``reference`` (0.912 = 91.2% fewer)."""
    return 1.0 - value / reference if reference else float('nan')


def _int(value):
    return f'{round(value):,}'


def _pct_fewer(value, reference):
    if value == reference:
        return '0.0%'
    return f'{-100 * reduction(value, reference):+.1f}%'


def _backend_note():
    native = [op for op in OP_COSTS if native_available(op, 'cpu')]
    if not native:
        return 'pure-PyTorch reference ops (compiled dlu_mm ops not built for CPU)'
    return f'compiled dlu_mm ops for {", ".join(native)}; reference for the rest'


def _machine_note():
    # timings on a shared machine are only comparable within one table: say how busy it was
    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    return (f'Machine: {cores} CPU cores, 1-min load average {load:.1f} when the table was '
            'written; compare times within this table only.')


def markdown_report(rows, channels, size, command, time_output=128, repeats=5, threads=1,
                    paper=True):
    """The markdown document (the regenerating command on top)."""
    timed = any(r.cpu_ms is not None for r in rows)
    lines = [
        '# Upsampler complexity', '',
        f'Generated by `{command}` (regenerate with that command).', '',
        f'C = {channels}. **Params** are counted from the built modules and from the spec '
        'formulas (`dlu_mm/analysis/formulas.py`). **FLOPs** are per low-res input pixel, '
        '2 x multiply-accumulates with bias adds counted (a conv costs 2 * (fan_in + 1) * '
        'out_channels per output pixel), one bilinear sample = 8 FLOPs (DLU\'s kernel '
        'sampling, LDA-AQU\'s point sampling and query resize, grid_sample, bilinear); '
        'element-wise ops, norms, softmax and activations count 0. *Counted* = '
        '`dlu_mm.analysis.count_flops` on a 1 x C x '
        f'{size} x {size} input (dlu_mm ops counted as one unit each, whichever backend runs '
        'them); *formula* = the closed forms. *sampling* = the counted bilinear-sampling share. '
        'DDF-Up\'s channel branch runs once per image: its per-pixel share depends on H x W. '
        '*vs CARAFE* = relative change w.r.t. CARAFE at the same scale (negative = fewer).',
    ]
    if timed:
        lines += ['', f'**CPU ms**: median of {repeats} no-grad forwards (after one warm-up) of a '
                  f'1 x C x ({time_output}/s) x ({time_output}/s) input (same {time_output} x '
                  f'{time_output} output at every scale), {threads} thread(s), '
                  f'{_backend_note()}; guided upsamplers get a random guide. Modules over 50M '
                  f'params are not timed (-). {_machine_note()}']
    by_scale = {}
    for row in rows:
        by_scale.setdefault(row.scale_factor, []).append(row)
    header = ['Upsampler', 'Params (counted)', 'Params (spec)', 'FLOPs/px (counted)',
              'FLOPs/px (formula)', 'of which sampling', 'Params vs CARAFE', 'FLOPs vs CARAFE']
    if timed:
        header.append('CPU ms')
    for s, scale_rows in by_scale.items():
        carafe = next((r for r in scale_rows if r.label == 'CARAFE'), None)
        lines += ['', f'## {s}x upsampling', '', '| ' + ' | '.join(header) + ' |',
                  '|' + '---|' * len(header)]
        for r in scale_rows:
            cells = [r.label, _int(r.params), _int(r.spec_params), _int(r.flops_per_pixel),
                     _int(r.spec_flops_per_pixel), _int(r.sampling_per_pixel),
                     _pct_fewer(r.params, carafe.params) if carafe else '',
                     _pct_fewer(r.flops, carafe.flops) if carafe else '']
            if timed:
                cells.append('-' if r.cpu_ms is None else f'{r.cpu_ms:.1f}')
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += _dlu_vs_carafe(by_scale)
    if paper:
        lines += ['', '## Reported by the papers (not reproduced here)', '',
                  'Numbers as printed in the papers / their public READMEs (design spec '
                  'sections 1-5). The CARAFE, DLU, LDA-AQU and DySample detection numbers come '
                  'from the CARAFE-style FPN (4 upsamplers, P6 by a stride-2 conv in the top-down '
                  'path); do not compare them with standard-FPN numbers.', '',
                  '| Upsampler | Model, dataset | Metric | Reported | Baseline (reported) | '
                  'Source |', '|---|---|---|---|---|---|']
        lines += ['| ' + ' | '.join(entry) + ' |' for entry in PAPER_RESULTS]
    return '\n'.join(lines) + '\n'


def _dlu_vs_carafe(by_scale):
    pairs = []
    for s, scale_rows in by_scale.items():
        named = {r.label: r for r in scale_rows}
        if 'DLU' in named and 'CARAFE' in named:
            pairs.append((s, named['CARAFE'], named['DLU']))
    if not pairs:
        return []
    lines = ['', '## DLU vs CARAFE (counted)', '',
             '| s | CARAFE params | DLU params | fewer params | CARAFE FLOPs/px | DLU FLOPs/px '
             '| fewer FLOPs | fewer FLOPs without DLU\'s kernel sampling |',
             '|---|---|---|---|---|---|---|---|']
    for s, carafe, dlu in pairs:
        lines.append(
            f'| {s} | {_int(carafe.params)} | {_int(dlu.params)} | '
            f'{100 * reduction(dlu.params, carafe.params):.1f}% | '
            f'{_int(carafe.flops_per_pixel)} | {_int(dlu.flops_per_pixel)} | '
            f'{100 * reduction(dlu.flops, carafe.flops):.1f}% | '
            f'{100 * reduction(dlu.flops - dlu.sampling_flops, carafe.flops):.1f}% |')
    s, carafe, dlu = pairs[-1]
    with_sampling = 100 * reduction(dlu.flops, carafe.flops)
    without = 100 * reduction(dlu.flops - dlu.sampling_flops, carafe.flops)
    lines += ['', f'At {s}x, counted: DLU has {100 * reduction(dlu.params, carafe.params):.1f}% '
              f'fewer parameters than CARAFE (the paper: "91% fewer parameters") and '
              f'{with_sampling:.1f}% fewer FLOPs counting its bilinear kernel sampling, '
              f'{without:.1f}% without it. The paper\'s "at least 63% fewer FLOPs" matches the '
              'count *without* the sampling term; with it the reduction is '
              f'{"below" if with_sampling < 63 else "at least"} 63%.']
    return lines
