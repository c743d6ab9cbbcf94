"""Inference cost of each upsampler: PyTorch vs its ONNX graph in onnxruntime (CPU).

    python tools/deployment/benchmark_onnx.py                      # C=256, 50x76 (P4 of 800x1216)
    python tools/deployment/benchmark_onnx.py --shape 100 152 --threads 2 --repeat 20

Per upsampler (defaults, scale 2, batch 1, fp32), in one process:
  * ``torch``: the module in eval mode under ``torch.no_grad()`` (compiled dlu_mm kernels);
  * ``onnx``: the graph the TorchScript exporter writes with dlu_mm's lowerings, in onnxruntime;
  * ``dynamo``: the same lowerings through the dynamo exporter (torch >= 2.5);
  * ``ref``: for comparison, the training references exported as they are, through the dynamo
    exporter (the TorchScript one cannot export their unfold at all).
Time is the median of ``--repeat`` runs after 2 warm-ups; peak is the resident-memory high-water
mark of one run above the memory held before it (Linux: /proc/self/clear_refs resets the mark;
the script re-executes itself with a fixed glibc mmap threshold so freed buffers go back to the
system and every run is measured from the same floor).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

UPSAMPLERS = ('CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA')
_ENV_FLAG = 'DLU_MM_BENCH_MMAP'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--shape', type=int, nargs=2, default=(50, 76), metavar=('H', 'W'),
                        help='low-resolution input size (default: P4 of an 800x1216 image)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--types', nargs='+', default=list(UPSAMPLERS), choices=UPSAMPLERS)
    return parser.parse_args(argv)


def _status_kib(field):
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def measure(run, repeat):
    """(median ms, peak MiB above the resident memory before one run)."""
    for _ in range(2):
        run()
    peak = float('nan')
    try:
        with open('/proc/self/clear_refs', 'w') as clear:
            clear.write('5')  # reset VmHWM to the current RSS
        before = _status_kib('VmRSS')
        run()
        peak = (_status_kib('VmHWM') - before) / 1024
    except OSError:
        pass
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), peak


def main(argv=None):
    args = parse_args(argv)
    if os.environ.get(_ENV_FLAG) is None and sys.platform.startswith('linux'):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', **{_ENV_FLAG: '1'})
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] +
                  (sys.argv[1:] if argv is None else list(argv)), env)
    import onnxruntime as ort
    import torch

    from dlu_mm.ops import use_onnx_lowerings
    from dlu_mm.upsamplers.builder import build_upsampler
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # so the peak is this run's, not an arena's
    height, width = args.shape
    kwargs = dict(dynamo=False) if 'dynamo' in torch.onnx.export.__code__.co_varnames else {}
    print(f'# torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, '
          f'input (1, {args.channels}, {height}, {width}) -> x2, fp32, '
          f'load {os.getloadavg()[0]:.2f}')
    labels = ('torch', 'onnx', 'dynamo', 'ref')
    print('| upsampler | ' + ' | '.join(f'{label} ms' for label in labels) + ' | ' +
          ' | '.join(f'{label} peak MiB' for label in labels) + ' |')
    print('|---|' + '---:|' * (2 * len(labels)))
    for upsampler_type in args.types:
        torch.manual_seed(0)
        module = build_upsampler(dict(type=upsampler_type), args.channels, 2).eval()
        inputs = [torch.randn(1, args.channels, height, width)]
        names = ['x']
        if getattr(module, 'requires_guide', False):
            scale = module.guide_scale_factor
            inputs.append(torch.randn(1, module.guide_channels, height * scale, width * scale))
            names.append('guide')
        feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs)}
        row = {}
        with torch.no_grad():
            row['torch'] = measure(lambda: module(*inputs), args.repeat)
            # 'ref': every op exports through its training reference
            for label, lowerings, dynamo in (('onnx', True, False), ('dynamo', True, True),
                                             ('ref', False, True)):
                try:
                    if dynamo and not kwargs:
                        raise RuntimeError(f'no dynamo exporter in torch {torch.__version__}')
                    with tempfile.TemporaryDirectory() as tmp:
                        path = os.path.join(tmp, 'model.onnx')
                        options_ = dict(dynamo=True) if dynamo else kwargs
                        with use_onnx_lowerings(lowerings):
                            torch.onnx.export(module, tuple(inputs), path,
                                              opset_version=args.opset, input_names=names,
                                              **options_)
                        session = ort.InferenceSession(path, options,
                                                       providers=['CPUExecutionProvider'])
                    row[label] = measure(lambda: session.run(None, feeds), args.repeat)
                except Exception as error:  # noqa: BLE001 - reported in the table
                    row[label] = (float('nan'), float('nan'))
                    print(f'# {upsampler_type} {label}: {type(error).__name__}: '
                          f'{str(error)[:200]}', file=sys.stderr)
        cells = [f'{row[k][0]:.1f}' for k in labels] + [f'{row[k][1]:.0f}' for k in labels]
        print(f'| {upsampler_type} | ' + ' | '.join(cells) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
