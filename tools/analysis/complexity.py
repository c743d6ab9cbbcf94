"""Print the upsampler complexity table (markdown): params and FLOPs per upsampler and scale,
counted from the built modules and from the spec formulas, DLU vs CARAFE, optional CPU times.

    python tools/analysis/complexity.py                       # C=256, s = 2 4 8 16
    python tools/analysis/complexity.py --time --out docs/complexity.md
    python tools/analysis/complexity.py --upsamplers DLU CARAFE --scales 2 16
"""
import argparse
import shlex
import sys

import torch

from dlu_mm.analysis.complexity import UPSAMPLER_PRESETS, complexity_rows, markdown_report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--channels', type=int, default=256, help='C (default 256)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 4, 8, 16])
    parser.add_argument('--upsamplers', nargs='+', default=list(UPSAMPLER_PRESETS),
                        choices=list(UPSAMPLER_PRESETS), metavar='NAME',
                        help=f'table rows (default: all of {", ".join(UPSAMPLER_PRESETS)})')
    parser.add_argument('--size', type=int, default=64,
                        help='H = W of the input the FLOPs are counted on (default 64)')
    parser.add_argument('--time', action='store_true', help='add a CPU forward time column')
    parser.add_argument('--time-output', type=int, default=128,
                        help='timing output size; the input is (time_output/s)^2 (default 128)')
    parser.add_argument('--repeats', type=int, default=5, help='timed forwards (median)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads for timing')
    parser.add_argument('--no-paper', action='store_true',
                        help='leave out the table of numbers reported by the papers')
    parser.add_argument('--out', help='also write the markdown to this file')
    parser.add_argument('--quiet', action='store_true', help='no progress on stderr')
    args = parser.parse_args(argv)
    for name in ('channels', 'size', 'time_output', 'repeats', 'threads'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if any(s < 1 for s in args.scales):
        parser.error('--scales must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    presets = {name: UPSAMPLER_PRESETS[name] for name in args.upsamplers}
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    rows = complexity_rows(presets, args.channels, args.scales, args.size, args.time,
                           args.time_output, args.repeats, log=log)
    argv = sys.argv[1:] if argv is None else argv
    command = ' '.join(['python tools/analysis/complexity.py'] + [shlex.quote(a) for a in argv])
    report = markdown_report(rows, args.channels, args.size, command, args.time_output,
                             args.repeats, args.threads, paper=not args.no_paper)
    print(report, end='')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(report)
    return rows


if __name__ == '__main__':
    main()
