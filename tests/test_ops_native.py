"""Compiled ops (dlu_mm._C_torch<X>_<Y>, sources in ops/) against the pure-PyTorch references.

Forward and backward on random inputs per dtype, odd / non-square / 1-pixel sizes, groups,
empty batch and non-contiguous inputs; float64 gradcheck; torch.library.opcheck; deterministic
CPU backward; the C++ argument checks; dispatch; CPU vs CUDA (skipped without a GPU).
"""
import pytest
import torch

from dlu_mm.ops import (dispatch, guided_reassemble, guided_reassemble_reference, reassemble,
                        reassemble_reference, use_backend)
from dlu_mm.ops import native as compiled
from dlu_mm.ops.compat import HAS_LIBRARY_REGISTER
from op_cases import (BUILDERS, CASES, CASE_IDS, DTYPES, REFERENCES, TOL, assert_all_close,
                      cast_case, check_native_matches_reference, guided_case, run_op,
                      split_differentiable)

if not compiled.available('reassemble', 'cpu'):
    pytest.skip(f'compiled ops unusable: {compiled.why_unavailable("reassemble", "cpu")}',
                allow_module_level=True)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('op,kwargs', CASES, ids=CASE_IDS)
def test_matches_reference(op, kwargs, dtype):
    check_native_matches_reference(op, kwargs, dtype)


@pytest.mark.parametrize('op', list(BUILDERS))
def test_gradcheck_float64(op):
    g = torch.Generator().manual_seed(1)
    small = {'reassemble': dict(n=1, c=2, h=3, w=4), 'guided_reassemble': dict(n=1, c=2, h=3, w=4),
             'ddf': dict(n=1, c=2, h=4, w=5, stride=2, combine='add'),
             'local_deformable_attention': dict(n=1, d=4, c=4, h=3, w=3, sh=5, sw=4, points=3),
             'subpixel_sample': dict(n=1, c=4, h=3, w=4, groups=2, s=2)}
    tensors, args = BUILDERS[op](g, **small[op])
    inputs = [t.requires_grad_() for t in split_differentiable(op, tensors, args)]
    n_tensors = len(tensors)

    def fn(*inputs):
        extra = list(args)
        if len(inputs) > n_tensors:  # LDA's rpb
            extra[0] = inputs[n_tensors]
        return getattr(compiled, op)(*inputs[:n_tensors], *extra)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.skipif(not HAS_LIBRARY_REGISTER, reason='torch.library.opcheck needs torch >= 2.4')
@pytest.mark.parametrize('op', list(BUILDERS))
def test_opcheck(op):
    g = torch.Generator().manual_seed(2)
    tensors, args = BUILDERS[op](g, n=1)
    tensors = [t.float().requires_grad_() for t in tensors]
    if op == 'local_deformable_attention':
        args = [args[0].float().requires_grad_(), *args[1:]]
    torch.library.opcheck(getattr(torch.ops.dlu_mm, op).default, (*tensors, *args))


@pytest.mark.parametrize('op', list(BUILDERS))
def test_empty_batch(op):
    g = torch.Generator().manual_seed(3)
    tensors, args = BUILDERS[op](g, n=0)
    grad_out = torch.zeros(getattr(compiled, op)(*tensors, *args).shape, dtype=torch.float64)
    actual = run_op(getattr(compiled, op), op, tensors, args, grad_out)
    expected = run_op(REFERENCES[op], op, tensors, args, grad_out)
    assert actual[0].shape[0] == 0
    assert_all_close(actual, expected, 0)


@pytest.mark.parametrize('op', list(BUILDERS))
def test_non_contiguous_inputs(op):
    g = torch.Generator().manual_seed(4)
    tensors, args = BUILDERS[op](g)
    # Same values, strided memory: channels-last copies and a transposed-back view.
    strided = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    strided[0] = tensors[0].transpose(2, 3).contiguous().transpose(2, 3)
    assert not strided[0].is_contiguous()
    grad_out = torch.randn(getattr(compiled, op)(*tensors, *args).shape, generator=g,
                           dtype=torch.float64)
    grad_out = grad_out.transpose(2, 3).contiguous().transpose(2, 3)
    actual = run_op(getattr(compiled, op), op, strided, args, grad_out)
    expected = run_op(REFERENCES[op], op, tensors, args, grad_out)
    assert_all_close(actual, expected, TOL[torch.float64])


@pytest.mark.parametrize('op', list(BUILDERS))
def test_cpu_backward_deterministic(op):
    g = torch.Generator().manual_seed(5)
    big = {'reassemble': dict(c=8, h=9, w=11), 'guided_reassemble': dict(c=8, h=9, w=11),
           'ddf': dict(c=8, h=12, w=13), 'local_deformable_attention': dict(sh=12, sw=13),
           'subpixel_sample': dict(c=8, h=9, w=11)}
    tensors, args = cast_case(op, *BUILDERS[op](g, **big[op]), torch.float32)
    grad_out = torch.randn(getattr(compiled, op)(*tensors, *args).shape, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        first = run_op(getattr(compiled, op), op, tensors, args, grad_out)
        second = run_op(getattr(compiled, op), op, tensors, args, grad_out)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_cpp_checks_name_the_argument():
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(RuntimeError, match='kernels must have shape'):
        torch.ops.dlu_mm.reassemble(x, torch.randn(1, 9, 5, 6), 3, 1, 2)
    with pytest.raises(RuntimeError, match='k must be a positive odd'):
        torch.ops.dlu_mm.reassemble(x, torch.randn(1, 4, 6, 6), 2, 1, 2)
    with pytest.raises(RuntimeError, match='offsets must have shape'):
        torch.ops.dlu_mm.guided_reassemble(x, torch.randn(1, 9, 3, 3), torch.randn(1, 1, 6, 6),
                                           3, 1, 2)
    with pytest.raises(RuntimeError, match='kernel_space must have dtype'):
        torch.ops.dlu_mm.guided_reassemble(x, torch.randn(1, 9, 3, 3, dtype=torch.float64),
                                           torch.randn(1, 2, 6, 6), 3, 1, 2)
    with pytest.raises(RuntimeError, match="combine must be 'mul' or 'add'"):
        torch.ops.dlu_mm.ddf(x, torch.randn(1, 4, 3, 3), torch.randn(1, 9, 3, 3), 3, 1, 1, 'max')
    with pytest.raises(RuntimeError, match='spatial_filter must have shape'):
        torch.ops.dlu_mm.ddf(x, torch.randn(1, 4, 3, 3), torch.randn(1, 9, 2, 3), 3, 1, 1, 'mul')
    with pytest.raises(RuntimeError, match='rpb must have shape'):
        torch.ops.dlu_mm.local_deformable_attention(
            torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), x, torch.randn(1, 8, 6, 6),
            torch.randn(1, 3, 4), 1, 2)
    with pytest.raises(RuntimeError, match='positions must have shape'):
        torch.ops.dlu_mm.subpixel_sample(x, torch.randn(1, 8, 3, 3), 2, 2)
    with pytest.raises(RuntimeError, match='must be divisible by groups'):
        torch.ops.dlu_mm.subpixel_sample(x, torch.randn(1, 24, 3, 3), 3, 2)
    with pytest.raises(RuntimeError, match='at most'):
        torch.ops.dlu_mm.local_deformable_attention(
            torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), x, torch.randn(1, 2 * 33, 6, 6),
            None, 1, 1)


def test_dispatch_selects_backend(monkeypatch):
    calls = []
    native = compiled.reassemble
    monkeypatch.setattr(compiled, 'reassemble', lambda *a: calls.append(a) or native(*a))
    x, kernels = torch.randn(1, 2, 3, 3), torch.rand(1, 9, 6, 6)
    with use_backend('native'):
        y_native = reassemble(x, kernels, 3)
    assert len(calls) == 1
    with use_backend('reference'):
        y_reference = reassemble(x, kernels, 3)
    assert len(calls) == 1
    torch.testing.assert_close(y_native, y_reference)
    assert dispatch.native_available('guided_reassemble', 'cpu')


def test_unusable_op_says_why_once(monkeypatch):
    """A compiled op that could not register falls back with its reason, warned once; the
    'native' backend raises with the same reason."""
    reason = 'registering its autograd / fake kernels failed under torch X: test'
    monkeypatch.setitem(compiled._AVAILABLE, ('reassemble', 'cpu'), False)
    monkeypatch.setitem(compiled._FAILED, 'reassemble', reason)
    monkeypatch.setattr(dispatch, '_warned', set())
    x, kernels = torch.randn(1, 2, 3, 3), torch.rand(1, 9, 6, 6)
    with use_backend('auto'):
        with pytest.warns(UserWarning, match='no compiled .reassemble. kernel') as record:
            y = reassemble(x, kernels, 3)
            reassemble(x, kernels, 3)
    assert len(record) == 1 and reason in str(record[0].message)
    torch.testing.assert_close(y, reassemble_reference(x, kernels, 3))
    with use_backend('native'), pytest.raises(RuntimeError, match=reason):
        reassemble(x, kernels, 3)


def test_extension_of_another_torch_says_rebuild(monkeypatch):
    monkeypatch.setattr(compiled, 'EXTENSION', 'dlu_mm._C_torch9_99')
    module, reason = compiled._load_extension()
    assert module is None
    assert 'compiled for another torch' in reason and torch.__version__ in reason
    assert 'pip install --no-build-isolation -e .' in reason


def test_compile_fullgraph():
    x, kernel_space, offsets = (torch.randn(1, 2, 3, 4), torch.rand(1, 9, 3, 4),
                                torch.randn(1, 2, 6, 8))
    fn = torch.compile(lambda *a: guided_reassemble(*a, 3), fullgraph=True, backend='eager')
    with use_backend('native'):
        torch.testing.assert_close(fn(x, kernel_space, offsets),
                                   guided_reassemble_reference(x, kernel_space, offsets, 3))


# ---------------------------------------------------------------------------------------------
# CUDA (the templates of ops/include/) against the CPU row kernels
# ---------------------------------------------------------------------------------------------
@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('op,kwargs', CASES, ids=CASE_IDS)
def test_cuda_matches_cpu(op, kwargs, dtype):
    assert compiled.available(op, 'cuda'), f'dlu_mm._C_torch<X>_<Y> was built without CUDA ({op})'
    g = torch.Generator().manual_seed(6)
    tensors, args = cast_case(op, *BUILDERS[op](g, **kwargs), dtype)
    grad_out = torch.randn(getattr(compiled, op)(*tensors, *args).shape, generator=g).to(dtype)
    expected = run_op(getattr(compiled, op), op, tensors, args, grad_out)
    cuda_tensors, cuda_args = cast_case(op, tensors, args, dtype, 'cuda')
    actual = run_op(getattr(compiled, op), op, cuda_tensors, cuda_args, grad_out.cuda())
    assert_all_close([a.cpu() for a in actual], expected, TOL[dtype])


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('op', list(BUILDERS))
def test_cuda_gradcheck_and_empty(op):
    g = torch.Generator().manual_seed(7)
    tensors, args = cast_case(op, *BUILDERS[op](g, n=1), torch.float64, 'cuda')
    inputs = [t.requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(lambda *t: getattr(compiled, op)(*t, *args), inputs,
                                    eps=1e-6, atol=1e-7)
    empty, args = cast_case(op, *BUILDERS[op](g, n=0), torch.float32, 'cuda')
    assert getattr(compiled, op)(*empty, *args).shape[0] == 0


@CUDA
@pytest.mark.cuda
def test_cuda_deterministic_mode_is_honoured():
    """Under deterministic algorithms the atomic scatters give way to gathers: same result."""
    g = torch.Generator().manual_seed(8)
    tensors, args = cast_case('guided_reassemble', *guided_case(g), torch.float32, 'cuda')
    grad_out = torch.randn(2, 4, 10, 14, generator=g).cuda()
    scattered = run_op(compiled.guided_reassemble, 'guided_reassemble', tensors, args, grad_out)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        gathered = run_op(compiled.guided_reassemble, 'guided_reassemble', tensors, args, grad_out)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert_all_close(gathered, scattered, TOL[torch.float32])
