"""The 'generic' backend: the CUDA kernels' templates (ops/include/) driven on the CPU.

Every op, forward and every gradient, against the pure-PyTorch references per dtype, on the
shapes of test_ops_native plus s = 4, larger-than-a-block reductions and empty batches; the
deterministic backward (the gather formulation CUDA uses under
torch.use_deterministic_algorithms(True)) against the references and bitwise run to run on two
threads. So CI executes all CUDA-path arithmetic without a GPU.
"""
import pytest
import torch

from dlu_mm.ops import dispatch, reassemble, reassemble_reference, use_backend
from dlu_mm.ops import native as compiled
from dlu_mm.ops.compat import HAS_LIBRARY_REGISTER
from op_cases import BUILDERS, CASES, REFERENCES, TOL, assert_all_close, cast_case, run_op

if not compiled.available('generic_reassemble', 'cpu'):
    pytest.skip(f'generic backend unusable: {compiled.why_unavailable("generic_reassemble")}',
                allow_module_level=True)

GENERIC_CASES = CASES + [
    ('reassemble', dict(c=4, h=3, w=2, k=3, groups=2, s=4)),
    ('guided_reassemble', dict(c=4, h=2, w=3, k=3, groups=1, s=4)),
    ('ddf', dict(c=2, h=17, w=19, k=3)),  # H*W > 256: several partial sums of the reduction
    # channel tiles of 16: two per group, the second partial (20 = 16 + 4; 34 = 16 + 16 + 2)
    ('reassemble', dict(c=40, h=3, w=4, k=3, groups=2, s=2)),
    ('guided_reassemble', dict(c=34, h=4, w=3, k=5, groups=1, s=2)),
    ('reassemble', dict(c=2, h=4, w=5, k=7, groups=1, s=2)),  # 49 taps: 4 tap chunks of 13
    ('subpixel_sample', dict(c=4, h=2, w=3, groups=1, s=4)),
]
GENERIC_IDS = [f'{op}-{i}' for i, (op, _) in enumerate(GENERIC_CASES)]
SCATTER_CASES = [(i, case) for i, case in enumerate(GENERIC_CASES)
                 if case[0] in ('guided_reassemble', 'local_deformable_attention',
                                'subpixel_sample')]
SCATTER_IDS = [f'{op}-{i}' for i, (op, _) in SCATTER_CASES]


def generic(op):
    return lambda *args: compiled.run_generic(op, 'cpu', args)


class deterministic:
    """torch.use_deterministic_algorithms(flag) for a block, restoring the previous mode."""

    def __init__(self, flag=True):
        self.flag = flag

    def __enter__(self):
        self.previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.flag)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.previous)


def _compare(op, kwargs, dtype, seed, det):
    g = torch.Generator().manual_seed(seed)
    tensors, args = cast_case(op, *BUILDERS[op](g, **kwargs), dtype)
    out = REFERENCES[op](*tensors, *args)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    expected = run_op(REFERENCES[op], op, tensors, args, grad_out)
    with deterministic(det):
        actual = run_op(generic(op), op, tensors, args, grad_out)
    assert_all_close(actual, expected, TOL[dtype])


@pytest.mark.parametrize('dtype', list(TOL), ids=str)
@pytest.mark.parametrize('op,kwargs', GENERIC_CASES, ids=GENERIC_IDS)
def test_generic_matches_reference(op, kwargs, dtype):
    _compare(op, kwargs, dtype, seed=10, det=False)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize('index,case', SCATTER_CASES, ids=SCATTER_IDS)
def test_generic_deterministic_backward_matches_reference(index, case, dtype):
    _compare(*case, dtype, seed=11, det=True)


@pytest.mark.parametrize('op', ['guided_reassemble', 'local_deformable_attention',
                                'subpixel_sample'])
def test_generic_deterministic_backward_is_bitwise_reproducible(op):
    g = torch.Generator().manual_seed(12)
    big = {'guided_reassemble': dict(c=8, h=9, w=11, groups=2),
           'local_deformable_attention': dict(sh=12, sw=13),  # N*sH*sW > 256 for grad_rpb
           'subpixel_sample': dict(c=8, h=9, w=11, groups=2)}[op]
    tensors, args = cast_case(op, *BUILDERS[op](g, **big), torch.float32)
    grad_out = torch.randn(generic(op)(*tensors, *args).shape, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with deterministic():
            runs = [run_op(generic(op), op, tensors, args, grad_out) for _ in range(3)]
        scattered = run_op(generic(op), op, tensors, args, grad_out)  # atomic adds
    finally:
        torch.set_num_threads(threads)
    for i, (a, b, c, d) in enumerate(zip(*runs, scattered)):
        assert torch.equal(a, b) and torch.equal(a, c), f'output {i} differs between runs'
        torch.testing.assert_close(d, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('det', [False, True], ids=['scatter', 'gather'])
@pytest.mark.parametrize('op', list(BUILDERS))
def test_generic_empty_batch(op, det):
    g = torch.Generator().manual_seed(13)
    tensors, args = cast_case(op, *BUILDERS[op](g, n=0), torch.float32)
    with deterministic(det):
        out = generic(op)(*tensors, *args)
        out, *grads = run_op(generic(op), op, tensors, args, torch.zeros_like(out))
    assert out.shape[0] == 0 and all(grad.shape[0] == 0 for grad in grads[:4])


@pytest.mark.skipif(not HAS_LIBRARY_REGISTER, reason='torch.library.opcheck needs torch >= 2.4')
@pytest.mark.parametrize('op', list(BUILDERS))
def test_generic_opcheck(op):
    g = torch.Generator().manual_seed(16)
    tensors, args = cast_case(op, *BUILDERS[op](g, n=1), torch.float32)
    tensors = [t.requires_grad_() for t in tensors]
    if op == 'local_deformable_attention':
        args = [args[0].requires_grad_(), *args[1:]]
    torch.library.opcheck(getattr(torch.ops.dlu_mm, f'generic_{op}').default, (*tensors, *args))


def test_generic_is_a_backend_for_cpu_tensors_only():
    x, kernels = torch.randn(1, 2, 3, 3), torch.randn(1, 9, 6, 6)
    with use_backend('generic'):
        assert dispatch.get_backend() == 'generic'
        torch.testing.assert_close(reassemble(x, kernels, 3, 1, 2),
                                   reassemble_reference(x, kernels, 3, 1, 2))
    with pytest.raises(RuntimeError, match='CPU tensors only'):
        compiled.run_generic('reassemble', 'cuda', (x, kernels, 3, 1, 2))
    with pytest.raises(ValueError, match='backend'):
        dispatch.set_backend('generics')


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU): the same templates on the device, against the generic driver
# ---------------------------------------------------------------------------------------------
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('det', [False, True], ids=['scatter', 'gather'])
@pytest.mark.parametrize('op,kwargs', GENERIC_CASES, ids=GENERIC_IDS)
def test_cuda_matches_generic(op, kwargs, det):
    assert compiled.available(op, 'cuda'), f'dlu_mm._C_torch<X>_<Y> was built without CUDA ({op})'
    g = torch.Generator().manual_seed(14)
    tensors, args = cast_case(op, *BUILDERS[op](g, **kwargs), torch.float64)
    grad_out = torch.randn(generic(op)(*tensors, *args).shape, generator=g, dtype=torch.float64)
    cuda_tensors, cuda_args = cast_case(op, tensors, args, torch.float64, 'cuda')
    with deterministic(det):
        expected = run_op(generic(op), op, tensors, args, grad_out)
        actual = run_op(getattr(compiled, op), op, cuda_tensors, cuda_args, grad_out.cuda())
    assert_all_close([a.cpu() for a in actual], expected, 1e-12)


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('op', ['guided_reassemble', 'local_deformable_attention',
                                'subpixel_sample'])
def test_cuda_deterministic_backward_is_bitwise_reproducible(op):
    g = torch.Generator().manual_seed(15)
    big = {'guided_reassemble': dict(c=64, h=24, w=31, groups=2),
           'local_deformable_attention': dict(c=32, sh=40, sw=52),
           'subpixel_sample': dict(c=64, h=24, w=31, groups=4)}[op]
    tensors, args = cast_case(op, *BUILDERS[op](g, **big), torch.float32, 'cuda')
    out = getattr(compiled, op)(*tensors, *args)
    grad_out = torch.randn(out.shape, generator=g).cuda()
    with deterministic():
        runs = [run_op(getattr(compiled, op), op, tensors, args, grad_out) for _ in range(3)]
    for i, (a, b, c) in enumerate(zip(*runs)):
        assert torch.equal(a, b) and torch.equal(a, c), f'output {i} differs between runs'
