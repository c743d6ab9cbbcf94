"""Benchmark the compiled dlu_mm ops against their pure-PyTorch references (and mmcv's CARAFE).

For reassemble there is a third baseline, 'unfold': the naive CARAFE-by-unfold form most public
PyTorch ports use (unfold X with padding -> repeat nearest by s -> weight -> sum), which holds
k*k copies of the output. Our reference is a smarter einsum, so the table gives both ratios.

The 'copy' row is the bandwidth limit: torch.clone of as many bytes as the op must at least move
(forward: its inputs + its output; forward+backward: 3 x inputs + 2 x output, i.e. the forward,
then reading inputs and grad_out and writing the input gradients). The '% of copy' columns read
each implementation's time as a fraction of that limit (100% = as fast as a copy of its bytes).

For each op, dtype, device and FPN shape (N=2, C=256, the P5..P2 maps of an 800x1216 image,
upsampled x2) it measures the forward and forward+backward time (median of repeats) and peak
memory, and prints a markdown table.

Peak memory is measured honestly for ATen: every (op, shape, dtype, implementation, mode) runs
in its own subprocess. On CPU the peak is the growth of the process's resident-set high-water
mark (ru_maxrss) over the first call, taken after the inputs exist; on CUDA it is
torch.cuda.max_memory_allocated minus what was allocated before the call.

    python tools/analysis/benchmark_ops.py --device cpu --quick
    python tools/analysis/benchmark_ops.py --device cuda
    python tools/analysis/benchmark_ops.py --ops reassemble --shapes 50x76 --dtypes float32
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

IMPL_LABELS = {'unfold': 'unfold (naive CARAFE)', 'copy': 'copy limit (clone of its bytes)'}
OPS = ('reassemble', 'guided_reassemble', 'ddf', 'local_deformable_attention', 'subpixel_sample')
FPN_SHAPES = ('25x38', '50x76', '100x152', '200x304')  # P5..P2 of 800x1216
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16,
          'float64': torch.float64}
K_UP, LDA_D, LDA_POINTS, LDA_GROUPS = 5, 64, 9, 2


def make_inputs(op, n, c, h, w, dtype, device):
    """Inputs of ``op`` at FPN level (h, w), x2 upsampling; returns (tensors, trailing args)."""
    g = torch.Generator(device='cpu').manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)

    if op == 'reassemble':
        kernels = randn(n, K_UP * K_UP, 2 * h, 2 * w).softmax(1)
        return [randn(n, c, h, w), kernels], [K_UP, 1, 2]
    if op == 'guided_reassemble':
        kernel_space = randn(n, K_UP * K_UP, h, w).softmax(1)
        return [randn(n, c, h, w), kernel_space, randn(n, 2, 2 * h, 2 * w, scale=0.5)], [K_UP, 1, 2]
    if op == 'ddf':  # one DDF-Up branch: 3x3 filters at the input resolution
        return [randn(n, c, h, w), randn(n, c, 3, 3, scale=0.3), randn(n, 9, h, w, scale=0.3)], \
            [3, 1, 1, 'mul']
    if op == 'subpixel_sample':  # DySample: 4 groups, init positions + 0.25 x small offsets
        s = 2
        init = (torch.arange(s) - (s - 1) / 2) / s
        dy, dx = torch.meshgrid(init, init, indexing='ij')
        init = torch.stack((dx, dy))[:, None].expand(2, 4, s, s).reshape(1, 2 * 4 * s * s, 1, 1)
        positions = init + 0.25 * torch.randn(n, 2 * 4 * s * s, h, w, generator=g)
        return [randn(n, c, h, w), positions.to(device, dtype)], [4, s]
    # LDA-AQU: D = C/4 query/key channels, 3x3 points per group, offsets = base grid + noise
    base = torch.stack(torch.meshgrid(torch.arange(3.) - 1, torch.arange(3.) - 1, indexing='ij'),
                       -1).reshape(1, 1, LDA_POINTS * 2, 1, 1)
    offsets = (base + torch.randn(n, LDA_GROUPS, LDA_POINTS * 2, 2 * h, 2 * w, generator=g))
    offsets = offsets.reshape(n, LDA_GROUPS * LDA_POINTS * 2, 2 * h, 2 * w).to(device, dtype)
    tensors = [randn(n, LDA_D, 2 * h, 2 * w), randn(n, LDA_D, h, w), randn(n, c, h, w), offsets]
    return tensors, [randn(1, LDA_POINTS, LDA_D, scale=0.02), 1, LDA_GROUPS]


def reassemble_unfold(x, kernels, k, groups=1, scale_factor=2):
    """Naive CARAFE by unfold: materialises the (N, C, k*k, sH, sW) neighbourhood tensor."""
    n, c, h, w = x.shape
    s = scale_factor
    cols = torch.nn.functional.unfold(x, k, padding=(k - 1) // 2)  # (N, C*k*k, H*W)
    cols = cols.view(n, c * k * k, h, w).repeat_interleave(s, 2).repeat_interleave(s, 3)
    cols = cols.view(n, groups, c // groups, k * k, h * s, w * s)
    weights = kernels.view(n, groups, 1, k * k, h * s, w * s)
    return (cols * weights).sum(3).view(n, c, h * s, w * s)


def copy_bytes(tensors, out_numel, backward):
    """Bytes an op must at least move: inputs + output (forward), 3 x inputs + 2 x output."""
    elem = tensors[0].element_size()
    inputs = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor)) * elem
    out = out_numel * elem
    return 3 * inputs + 2 * out if backward else inputs + out


def output_numel(op, n, c, h, w):
    return n * c * h * w if op == 'ddf' else n * c * 4 * h * w


def implementation(op, impl):
    if impl == 'unfold':  # reassemble only
        return reassemble_unfold
    if impl == 'native':
        from dlu_mm.ops import native as compiled
        return getattr(compiled, op)
    if impl == 'reference':
        import dlu_mm.ops as ops
        return getattr(ops, f'{op}_reference')
    from mmcv.ops import carafe  # impl == 'mmcv', reassemble only

    def mmcv_carafe(x, kernels, k, groups, scale_factor):
        return carafe(x, kernels, k, groups, scale_factor)

    return mmcv_carafe


def mmcv_carafe_available():
    try:
        from mmcv.ops import carafe  # noqa: F401
        return torch.cuda.is_available()
    except Exception:  # mmcv absent or built without its ops
        return False


def measure(spec):
    """One measurement in this process: {'ms': median time, 'peak_mb': peak memory}."""
    device = spec['device']
    h, w = map(int, spec['shape'].split('x'))
    backward = spec['mode'] == 'fwd+bwd'
    fn = None if spec['impl'] == 'copy' else implementation(spec['op'], spec['impl'])
    copy_source = torch.empty(64, dtype=torch.uint8, device=device)
    cuda = device == 'cuda'

    def step():
        if spec['impl'] == 'copy':  # clone reads and writes its bytes: half of them
            return copy_source.clone()
        out = fn(*tensors, *args)
        if backward:
            out.backward(torch.ones_like(out))
            for t in tensors:
                t.grad = None
        return out

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # Warm up on a tiny input first, so thread pools, the autograd engine and the CUDA context
    # are not counted as the op's memory.
    tensors, args = make_inputs(spec['op'], 1, 8, 5, 6, DTYPES[spec['dtype']], device)
    tensors = [t.requires_grad_(backward) for t in tensors]
    step()
    sync()
    tensors, args = make_inputs(spec['op'], spec['batch'], spec['channels'], h, w,
                                DTYPES[spec['dtype']], device)
    tensors = [t.requires_grad_(backward) for t in tensors]
    if spec['impl'] == 'copy':
        nbytes = copy_bytes(tensors, output_numel(spec['op'], spec['batch'], spec['channels'], h,
                                                  w), backward)
        copy_source = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    if cuda:
        step()  # kernels loaded at this size
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    times = []
    for i in range(spec['repeats']):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
        if i == 0:
            if cuda:
                peak = (torch.cuda.max_memory_allocated() - before) / 2**20
            else:
                peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    # The first CPU call pays page faults for fresh memory: leave it out of the median.
    times = times[1:] if len(times) > 2 else times
    return {'ms': 1e3 * statistics.median(times), 'peak_mb': peak}


def run_child(spec, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), '--child', json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'error': f'timeout {timeout}s'}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {'error': lines[-1][:80] if lines else f'exit {proc.returncode}'}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(result, key, digits=1):
    if 'error' in result:
        return 'n/a'
    return f'{result[key]:.{digits}f}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--ops', nargs='+', default=list(OPS), choices=OPS)
    parser.add_argument('--dtypes', nargs='+', default=None, choices=list(DTYPES),
                        help='default: float32 (cpu), float32 float16 (cuda)')
    parser.add_argument('--shapes', nargs='+', default=None,
                        help='input HxW of the FPN levels (default: all of P5..P2 on CUDA, '
                             'P5..P3 on CPU; --quick: P5, P4)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--impls', nargs='+', default=['native', 'reference', 'unfold', 'copy'],
                        choices=['native', 'reference', 'unfold', 'copy'],
                        help="'unfold' (naive CARAFE by unfold) runs for reassemble only")
    parser.add_argument('--quick', action='store_true', help='P5 and P4 only, 3 repeats')
    parser.add_argument('--timeout', type=int, default=600, help='seconds per measurement')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    from dlu_mm.ops import native as compiled
    if not compiled.available('reassemble', args.device):
        sys.exit(f'no compiled {args.device} kernels: '
                 f'{compiled.why_unavailable("reassemble", args.device)}')
    dtypes = args.dtypes or (['float32'] if args.device == 'cpu' else ['float32', 'float16'])
    shapes = args.shapes or (FPN_SHAPES[:2] if args.quick else
                             FPN_SHAPES if args.device == 'cuda' else FPN_SHAPES[:3])
    repeats = args.repeats or (3 if args.quick or args.device == 'cpu' else 20)
    with_mmcv = args.device == 'cuda' and mmcv_carafe_available()

    rows = []
    for op in args.ops:
        impls = [i for i in args.impls if i != 'unfold' or op == 'reassemble']
        impls += ['mmcv'] if with_mmcv and op == 'reassemble' else []
        for dtype in dtypes:
            for shape in shapes:
                results = {}
                for impl in impls:
                    for mode in ('fwd', 'fwd+bwd'):
                        spec = dict(op=op, impl=impl, mode=mode, dtype=dtype, shape=shape,
                                    device=args.device, batch=args.batch,
                                    channels=args.channels, repeats=repeats)
                        results[impl, mode] = run_child(spec, args.timeout)
                        print(f'# {op} {shape} {dtype} {impl} {mode}: {results[impl, mode]}',
                              file=sys.stderr, flush=True)
                for impl in impls:
                    fwd, both = results[impl, 'fwd'], results[impl, 'fwd+bwd']
                    ratios = []
                    for base in ('reference', 'unfold'):
                        ref = results.get((base, 'fwd+bwd'), {'error': ''})
                        if impl in ('reference', 'copy', base) or 'error' in ref or 'error' in both:
                            ratios += ['-', '-']
                        else:
                            ratios += [f'{ref["ms"] / both["ms"]:.1f}x',
                                       f'{ref["peak_mb"] / max(both["peak_mb"], 0.1):.1f}x']
                    limits = []
                    for mode, result in (('fwd', fwd), ('fwd+bwd', both)):
                        copy = results.get(('copy', mode), {'error': ''})
                        limits.append('-' if 'error' in copy or 'error' in result else
                                      f'{100 * copy["ms"] / result["ms"]:.0f}%')
                    rows.append([op, f'({args.batch},{args.channels},{shape.replace("x", ",")}) x2',
                                 dtype, args.device, IMPL_LABELS.get(impl, impl), fmt(fwd, 'ms'),
                                 fmt(both, 'ms'), fmt(fwd, 'peak_mb'), fmt(both, 'peak_mb'),
                                 *ratios, *limits])
    header = ['op', 'input (N,C,H,W)', 'dtype', 'device', 'impl', 'fwd ms', 'fwd+bwd ms',
              'fwd peak MB', 'fwd+bwd peak MB', 'fwd+bwd speed-up vs ref',
              'fwd+bwd memory ref/this', 'fwd+bwd speed-up vs unfold',
              'fwd+bwd memory unfold/this', 'fwd % of copy', 'fwd+bwd % of copy']
    print(f'\ntorch {torch.__version__}, threads {torch.get_num_threads()}, '
          f'repeats {repeats} (median)'
          + (f', {torch.cuda.get_device_name()}' if args.device == 'cuda' else ''))
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
    main()
