"""Roofline of the dlu_mm ops at the FPN levels of an 800x1216 image (paper numbers, no GPU).

Per op, level (P5..P2: 25x38 .. 200x304, C=256, batch 2, x2 upsampling) and dtype it prints the
bytes an implementation must at least move through HBM (every input read once, every output
written once: what a kernel achieves when its re-reads of neighbouring pixels hit L1/L2), the
FLOPs of the kernels' arithmetic (a multiply-add = 2, a bilinear sample = 4 loads + 8 FLOPs,
counted at the granularity the CUDA functors compute them), the arithmetic intensity and the
roofline time max(bytes / HBM bandwidth, FLOPs / fp32 CUDA-core throughput) on an H100 SXM and
an H200. fp16 / bf16 halve the bytes but not the arithmetic: the kernels compute in float
(at::opmath_type), so their FLOP ceiling is the fp32 one (the 2x half2 rate and the tensor cores
do not apply to these gathers). Backward: bytes 3 x inputs + 2 x outputs (forward inputs and
grad_out read, gradients written), FLOPs 2 x forward. The op configurations are those of tools/analysis/benchmark_ops.py.

    python tools/analysis/roofline_ops.py            # markdown table (docs/kernels.md)
"""
import argparse

LEVELS = {'P5': (25, 38), 'P4': (50, 76), 'P3': (100, 152), 'P2': (200, 304)}
N, C, S = 2, 256, 2
K_UP, GROUPS, TILE = 5, 1, 16           # CARAFE / DLU: k_up = 5, one kernel group
DDF_K = 3                               # one DDF-Up branch: 3x3 filters at input resolution
LDA_D, LDA_P, LDA_G, LDA_HEADS = 64, 9, 2, 1
DYS_G = 4                               # DySample: 4 groups
# (HBM bytes/s, fp32 FLOP/s of the CUDA cores): the data-sheet peaks
GPUS = {'H100 SXM': (3.35e12, 67e12), 'H200': (4.8e12, 67e12)}
ELEM = {'fp32': 4, 'fp16': 2}


def op_cost(op, h, w):
    """(input elements, output elements, forward FLOPs) of ``op`` at input size (h, w)."""
    oh, ow = S * h, S * w
    kk = K_UP * K_UP
    if op == 'reassemble':          # x, kernels (N, k*k, sH, sW)
        inputs = N * C * h * w + N * GROUPS * kk * oh * ow
        return inputs, N * C * oh * ow, 2 * kk * N * C * oh * ow
    if op == 'guided_reassemble':   # x, kernel_space (N, k*k, H, W), offsets (N, 2, sH, sW)
        inputs = N * C * h * w + N * GROUPS * kk * h * w + N * 2 * GROUPS * oh * ow
        tiles = C // GROUPS // TILE  # each tap sampled once per channel tile
        sampling = 8 * kk * N * GROUPS * tiles * oh * ow
        return inputs, N * C * oh * ow, 2 * kk * N * C * oh * ow + sampling
    if op == 'ddf':                 # x, channel filter (N, C, 3, 3), spatial filter (N, 9, H, W)
        k2 = DDF_K * DDF_K
        inputs = N * C * h * w + N * C * k2 + N * k2 * h * w
        return inputs, N * C * h * w, 3 * k2 * N * C * h * w  # weight product + multiply-add
    if op == 'subpixel_sample':     # x, positions (N, 2*G*s*s, H, W)
        inputs = N * C * h * w + N * 2 * DYS_G * S * S * h * w
        # per output value: one bilinear sample (8) and its set-up (position adds, clamps,
        # four weights: ~10), which the CUDA functor redoes for every channel
        return inputs, N * C * oh * ow, (8 + 10) * N * C * oh * ow
    # local_deformable_attention: q (N, D, sH, sW), key (N, D, H, W), value, offsets, rpb
    inputs = (N * LDA_D * oh * ow + N * LDA_D * h * w + N * C * h * w
              + N * LDA_G * 2 * LDA_P * oh * ow + LDA_HEADS * LDA_P * LDA_D)
    per_pixel = LDA_P * (LDA_D + C) * (8 + 2) + 5 * LDA_P * LDA_HEADS  # samples, dots, softmax
    return inputs, N * C * oh * ow, N * oh * ow * per_pixel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ops', nargs='+',
                        default=['reassemble', 'guided_reassemble', 'ddf',
                                 'local_deformable_attention', 'subpixel_sample'])
    args = parser.parse_args()
    header = ['op', 'level (H x W)', 'dtype', 'fwd MB', 'fwd GFLOP', 'FLOP/B',
              *(f'{gpu} fwd us' for gpu in GPUS), 'fwd+bwd MB',
              *(f'{gpu} fwd+bwd us' for gpu in GPUS), 'fwd bound (' + ' / '.join(GPUS) + ')']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for op in args.ops:
        for level, (h, w) in LEVELS.items():
            inputs, outputs, flops = op_cost(op, h, w)
            for dtype, elem in ELEM.items():
                fwd_bytes = (inputs + outputs) * elem
                both_bytes = fwd_bytes + (2 * inputs + outputs) * elem
                fwd_us, both_us, bound = [], [], []
                for bandwidth, peak in GPUS.values():
                    memory, compute = fwd_bytes / bandwidth, flops / peak
                    bound.append('memory' if memory >= compute else 'compute')
                    fwd_us.append(f'{1e6 * max(memory, compute):.1f}')
                    both_us.append(f'{1e6 * max(both_bytes / bandwidth, 3 * flops / peak):.1f}')
                print('| ' + ' | '.join([
                    op, f'{level} ({h}x{w})', dtype, f'{fwd_bytes / 1e6:.1f}',
                    f'{flops / 1e9:.2f}', f'{flops / fwd_bytes:.1f}', *fwd_us,
                    f'{both_bytes / 1e6:.1f}', *both_us, ' / '.join(bound)]) + ' |')


if __name__ == '__main__':
    main()
