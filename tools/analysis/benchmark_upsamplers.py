"""Benchmark the upsampler modules, alone and inside whole models; prints markdown tables.

Modules: every upsampler (the 7 learnable ones and the nearest / bilinear baselines) built with
``build_upsampler(dict(type=T), C=256, s=2)`` at the FPN shapes (N=2, C=256; P5..P3 of an
800x1216 image on CPU, P5..P2 on CUDA), forward and forward+backward time (median of
interleaved repeats: every repeat runs every module once, so a load change hits all of them)
and the peak memory of forward+backward, with ratios to nearest and to CARAFE from the same run.
On CPU the process CPU time of forward+backward is given too (less sensitive to a shared box).

Whole models (``--models det seg``, needs mmdet / mmseg): one training step (data preprocessor,
loss, backward) of Faster R-CNN R50-FPN (CARAFE-style neck, ``configs/faster_rcnn_r50_fpn_*``)
and UPerNet R50 (``configs/upernet_r50_*``) per upsampler, median of ``--steps`` interleaved
steps, overhead over nearest (detector) / bilinear (UPerNet) in %. The detector's RoIAlign runs
with sampling_ratio=2 (``--roi-sampling``; the configs have 0): with 0 it samples
ceil(RoI size / 7) points per bin, so its cost follows the proposals of each untrained model,
which differ by upsampler, and swung the step by -5%..+21% independently of the upsampler's own
cost (profiled: RoIAlign fwd + bwd 1.6 s with nearest, 2.5 s with DySample, whose op took 55 ms).

Peak memory: on CUDA torch.cuda.max_memory_allocated over the call; on CPU the high-water mark of
the profiler's allocation counter (every tensor the call allocates, inputs excluded).

    python tools/analysis/benchmark_upsamplers.py                      # CPU modules, P5..P3
    python tools/analysis/benchmark_upsamplers.py --levels P4 --repeats 7
    python tools/analysis/benchmark_upsamplers.py --models det seg --steps 3 --no-modules
    python tools/analysis/benchmark_upsamplers.py --device cuda
"""
import argparse
import json
import logging
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LEVELS = {'P5': (25, 38), 'P4': (50, 76), 'P3': (100, 152), 'P2': (200, 304)}  # of 800x1216
UPSAMPLERS = ('nearest', 'bilinear', 'CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE',
              'SAPA')
# whole models: config name part per upsampler (None: no such config)
DET_CONFIGS = {'nearest': 'nearest', 'CARAFE': 'carafe', 'DLU': 'dlu', 'DDFUp': 'ddf_up',
               'LDAAQU': 'lda_aqu', 'DySample': 'dysample', 'FADE': 'fade', 'SAPA': 'sapa'}
SEG_CONFIGS = {'bilinear': 'bilinear', 'CARAFE': 'carafe', 'DLU': 'dlu', 'DDFUp': 'ddf_up',
               'LDAAQU': 'lda_aqu', 'DySample': 'dysample', 'FADE': 'fade', 'SAPA': 'sapa'}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def build_module(name, channels, device):
    from dlu_mm.upsamplers import build_upsampler
    torch.manual_seed(0)
    return build_upsampler(dict(type=name), channels, 2).to(device)


def module_inputs(module, n, c, h, w, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g).to(device)
    guide = None
    if module.requires_guide:
        gs = module.guide_scale_factor
        guide = torch.randn(n, module.guide_channels, gs * h, gs * w, generator=g).to(device)
    return x, guide


def run_once(module, x, guide, backward):
    """Seconds of wall and process CPU time of one forward (+ backward)."""
    device = x.device
    module.zero_grad(set_to_none=True)
    xi = x.detach().requires_grad_(backward)
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    if backward:
        module(xi, guide).sum().backward()
    else:
        with torch.no_grad():
            module(xi, guide)
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_memory(module, x, guide):
    """Bytes allocated at the peak of one forward+backward, above what existed before."""
    module.zero_grad(set_to_none=True)
    xi = x.detach().requires_grad_(True)
    if x.device.type == 'cuda':
        sync(x.device)
        before = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        module(xi, guide).sum().backward()
        sync(x.device)
        return torch.cuda.max_memory_allocated(x.device) - before
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        module(xi, guide).sum().backward()
    fd, path = tempfile.mkstemp(suffix='.json')
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)['traceEvents']
    finally:
        os.remove(path)
    totals = [(e['ts'], e['args']['Total Allocated'], e['args']['Bytes']) for e in events
              if e.get('name') == '[memory]' and e['args'].get('Device Type', 0) == 0]
    if not totals:
        return 0
    totals.sort()
    start = totals[0][1] - totals[0][2]
    return max(t for _, t, _ in totals) - start


def bench_modules(args, device):
    names = [u for u in args.upsamplers]
    rows = []
    for level in args.levels:
        h, w = LEVELS[level]
        modules = {name: build_module(name, args.channels, device) for name in names}
        inputs = {name: module_inputs(m, args.batch, args.channels, h, w, device)
                  for name, m in modules.items()}
        times = {(name, bwd): [] for name in names for bwd in (False, True)}
        cpu = {name: [] for name in names}
        for name in names:  # warm-up (allocator, oneDNN primitives, lazy init)
            for bwd in (False, True):
                run_once(modules[name], *inputs[name], bwd)
        for _ in range(args.repeats):
            for name in names:
                for bwd in (False, True):
                    wall, c = run_once(modules[name], *inputs[name], bwd)
                    times[name, bwd].append(wall)
                    if bwd:
                        cpu[name].append(c)
        for name in names:
            rows.append(dict(level=level, shape=f'{args.batch}x{args.channels}x{h}x{w}',
                             name=name, fwd=statistics.median(times[name, False]) * 1e3,
                             fwdbwd=statistics.median(times[name, True]) * 1e3,
                             cpu=statistics.median(cpu[name]) * 1e3,
                             mem=peak_memory(modules[name], *inputs[name]) / 2 ** 20))
        del modules, inputs
    return rows


def print_module_table(rows, device):
    cpu_col = device.type == 'cpu'
    head = ['level (input)', 'upsampler', 'fwd ms', 'fwd+bwd ms', 'x nearest', 'x CARAFE']
    if cpu_col:
        head += ['fwd+bwd CPU ms', 'CPU x CARAFE']
    head += ['peak MiB', 'mem x CARAFE']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    by_level = {}
    for r in rows:
        by_level.setdefault(r['level'], {})[r['name']] = r
    for level, table in by_level.items():
        near, car = table.get('nearest'), table.get('CARAFE')
        for name, r in table.items():
            def ratio(key, base):
                return f"{r[key] / base[key]:.2f}" if base and base[key] > 0 else '-'
            cells = [f"{level} {r['shape']}", name, f"{r['fwd']:.1f}", f"{r['fwdbwd']:.1f}",
                     ratio('fwdbwd', near), ratio('fwdbwd', car)]
            if cpu_col:
                cells += [f"{r['cpu']:.0f}", ratio('cpu', car)]
            cells += [f"{r['mem']:.1f}", ratio('mem', car)]
            print('| ' + ' | '.join(cells) + ' |')


def _batch(family, n, size, seed=0):
    sys.path.insert(0, osp.join(REPO, 'tests'))
    from mm_batches import det_batch, seg_batch
    if family == 'det':
        return det_batch(batch_size=n, size=size, seed=seed)
    return seg_batch(batch_size=n, size=size, seed=seed)


def build_model(family, part, device, roi_sampling=None):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    if family == 'det':
        import dlu_mm.det  # noqa: F401
        from mmdet.registry import MODELS
        path = osp.join(REPO, 'configs', f'faster_rcnn_r50_fpn_{part}.py')
    else:
        import dlu_mm.seg  # noqa: F401
        from mmseg.registry import MODELS
        path = osp.join(REPO, 'configs', f'upernet_r50_512x512_160k_ade20k_{part}.py')
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get('default_scope', 'mmdet' if family == 'det' else 'mmseg'))
    if cfg.model.backbone.get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None  # no pretrained download
    if family == 'det' and roi_sampling is not None:
        cfg.model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio = roi_sampling
    model_cfg = cfg.model
    if family == 'seg':
        model_cfg.pop('pretrained', None)
        model_cfg.data_preprocessor = cfg.get('data_preprocessor', model_cfg.get(
            'data_preprocessor'))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).to(device)
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    model.train()
    return model


def train_step(model, batch, device):
    model.zero_grad(set_to_none=True)
    sync(device)
    start = time.perf_counter()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    total.backward()
    sync(device)
    return time.perf_counter() - start


def bench_models(args, device):
    results = []
    for family in args.models:
        configs = DET_CONFIGS if family == 'det' else SEG_CONFIGS
        names = [u for u in args.upsamplers if u in configs]
        base = 'nearest' if family == 'det' else 'bilinear'
        if base not in names:
            names.insert(0, base)
        size = tuple(args.det_size if family == 'det' else args.seg_size)
        batch = _batch(family, args.batch, size)
        models = {name: build_model(family, configs[name], device, args.roi_sampling)
                  for name in names}
        times = {name: [] for name in names}
        for name in names:
            train_step(models[name], batch, device)  # warm-up
        for _ in range(args.steps):
            for name in names:
                times[name].append(train_step(models[name], batch, device))
        medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        for name in names:
            results.append(dict(family=family, name=name, size=size, ms=medians[name],
                                over=(medians[name] / medians[base] - 1) * 100, base=base))
        del models
    return results


def print_model_table(results):
    print('| model (batch, image) | upsampler | train step ms | overhead vs baseline |')
    print('|---|---|---|---|')
    for r in results:
        model = 'Faster R-CNN R50-FPN' if r['family'] == 'det' else 'UPerNet R50'
        print(f"| {model} ({r['size'][0]}x{r['size'][1]}) | {r['name']} | {r['ms']:.0f} | "
              f"{r['over']:+.1f}% vs {r['base']} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (CPU)')
    parser.add_argument('--levels', nargs='+', choices=LEVELS, default=None,
                        help='FPN levels to upsample (default P5 P4 P3 on CPU, + P2 on CUDA)')
    parser.add_argument('--upsamplers', nargs='+', default=list(UPSAMPLERS))
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--no-modules', action='store_true', help='skip the module table')
    parser.add_argument('--models', nargs='*', choices=('det', 'seg'), default=[],
                        help='whole-model train steps (needs mmdet / mmseg)')
    parser.add_argument('--steps', type=int, default=3, help='timed train steps per model')
    parser.add_argument('--det-size', type=int, nargs=2, default=(512, 672))
    parser.add_argument('--roi-sampling', type=int, default=2,
                        help="the detector's RoIAlign sampling_ratio: 2 (default) fixes its cost; "
                             "the configs' 0 samples ceil(RoI size / 7) points per bin, so its "
                             "cost follows each untrained model's proposals (+-10%% of a step)")
    parser.add_argument('--seg-size', type=int, nargs=2, default=(512, 512))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.levels is None:
        args.levels = ['P5', 'P4', 'P3'] + (['P2'] if device.type == 'cuda' else [])
    for name in ('nearest', 'CARAFE'):  # the ratio baselines
        if name not in args.upsamplers:
            args.upsamplers.insert(0, name)
    import dlu_mm
    from dlu_mm.ops.dispatch import native_available
    load = os.getloadavg() if hasattr(os, 'getloadavg') else ('?',) * 3
    print(f'# dlu_mm {dlu_mm.__file__}, torch {torch.__version__}, device {device}, '
          f'threads {torch.get_num_threads()}, native ddf/lda/subpixel '
          f"{native_available('ddf', device.type)}/"
          f"{native_available('local_deformable_attention', device.type)}/"
          f"{native_available('subpixel_sample', device.type)}, "
          f'load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')
    if not args.no_modules:
        print_module_table(bench_modules(args, device), device)
    if args.models:
        print()
        print_model_table(bench_models(args, device))
    load = os.getloadavg() if hasattr(os, 'getloadavg') else ('?',) * 3
    print(f'# load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')


if __name__ == '__main__':
    main()
