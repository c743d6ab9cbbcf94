"""Compiled ops (dlu_mm._C_torch<X>_<Y>, sources in ops/) against the pure-PyTorch references.

Forward and backward on random inputs per dtype, odd / non-square / 1-pixel sizes, groups,
empty batch and non-contiguous inputs; float64 gradcheck; torch.library.opcheck; deterministic
CPU backward; the C++ argument checks; dispatch; CPU vs CUDA (skipped without a GPU).
"""
import pytest
import torch

from dlu_mm.ops import (ddf_reference, dispatch, guided_reassemble,
                        guided_reassemble_reference, local_deformable_attention_reference,
                        reassemble, reassemble_reference, subpixel_sample_reference, use_backend)
from dlu_mm.ops import _native
from dlu_mm.ops._compat import HAS_LIBRARY_REGISTER

if not _native.available('reassemble', 'cpu'):
    pytest.skip(f'compiled ops unusable: {_native.why_unavailable("reassemble", "cpu")}',
                allow_module_level=True)

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DTYPES = list(TOL)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
REFERENCES = {
    'reassemble': reassemble_reference,
    'guided_reassemble': guided_reassemble_reference,
    'ddf': ddf_reference,
    'local_deformable_attention': local_deformable_attention_reference,
    'subpixel_sample': subpixel_sample_reference,
}


def _randn(generator, *shape, scale=1.0):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


# Each case builder returns (differentiable tensors, trailing non-tensor args) in float64 on CPU;
# the op is called as op(*tensors, *args).
def reassemble_case(g, n=2, c=4, h=5, w=7, k=3, groups=2, s=2):
    return [_randn(g, n, c, h, w), _randn(g, n, groups * k * k, s * h, s * w)], [k, groups, s]


def guided_case(g, n=2, c=4, h=5, w=7, k=3, groups=2, s=2):
    kernel_space = _randn(g, n, groups * k * k, h, w).view(n, groups, k * k, h, w)
    kernel_space = kernel_space.softmax(2).view(n, groups * k * k, h, w)
    offsets = _randn(g, n, 2 * groups, s * h, s * w, scale=1.5)  # some clamped at the border
    return [_randn(g, n, c, h, w), kernel_space, offsets], [k, groups, s]


def ddf_case(g, n=2, c=3, h=6, w=7, k=3, dilation=1, stride=1, combine='mul'):
    spatial = _randn(g, n, k * k, h // stride, w // stride)
    return [_randn(g, n, c, h, w), _randn(g, n, c, k, k), spatial], [k, dilation, stride, combine]


def lda_case(g, n=2, d=8, c=6, h=4, w=5, sh=8, sw=10, points=4, heads=2, groups=2, rpb=True):
    tensors = [_randn(g, n, d, sh, sw), _randn(g, n, d, h, w), _randn(g, n, c, h, w),
               _randn(g, n, groups * 2 * points, sh, sw, scale=2.0)]
    bias = _randn(g, heads, points, d // heads) if rpb else None
    return tensors, [bias, heads, groups]


def subpixel_case(g, n=2, c=4, h=5, w=7, groups=2, s=2):
    # whole pixels in [-3, 3] (some points clamped at the border) plus a fraction in [0.1, 0.9]:
    # no coordinate lands on an integer even in bfloat16, where the position gradient has a kink
    # (and grid_sample's border test depends on its grid normalisation's rounding)
    shape = (n, 2 * groups * s * s, h, w)
    whole = torch.randint(-3, 4, shape, generator=g, dtype=torch.float64)
    positions = whole + 0.1 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)
    return [_randn(g, n, c, h, w), positions], [groups, s]


BUILDERS = {'reassemble': reassemble_case, 'guided_reassemble': guided_case, 'ddf': ddf_case,
            'local_deformable_attention': lda_case, 'subpixel_sample': subpixel_case}

# (op, builder kwargs): odd / non-square sizes, groups, H or W == 1, strides and dilations.
CASES = [
    ('reassemble', {}),
    ('reassemble', dict(c=3, h=1, w=6, k=5, groups=1, s=3)),
    ('reassemble', dict(c=6, h=4, w=1, k=1, groups=3, s=1)),
    ('guided_reassemble', {}),
    ('guided_reassemble', dict(c=3, h=1, w=6, k=5, groups=1, s=3)),
    ('guided_reassemble', dict(c=6, h=3, w=1, k=3, groups=3, s=2)),
    ('ddf', {}),
    ('ddf', dict(h=7, w=5, k=5, dilation=2, stride=2, combine='add')),
    ('ddf', dict(h=1, w=6, k=3, stride=1, combine='add')),
    ('ddf', dict(h=6, w=7, k=3, dilation=1, stride=3, combine='mul')),
    ('local_deformable_attention', {}),
    ('local_deformable_attention', dict(heads=1, groups=2, points=9, rpb=False)),
    ('local_deformable_attention', dict(d=8, c=8, h=1, w=5, sh=3, sw=9, heads=4, groups=1)),
    ('local_deformable_attention', dict(d=4, c=4, h=3, w=3, sh=1, sw=6, heads=1, groups=4)),
    ('subpixel_sample', {}),
    ('subpixel_sample', dict(c=3, h=1, w=6, groups=1, s=3)),
    ('subpixel_sample', dict(c=6, h=4, w=1, groups=3, s=1)),
    ('subpixel_sample', dict(n=1, c=8, h=6, w=5, groups=4, s=4)),
]
CASE_IDS = [f'{op}-{i}' for i, (op, _) in enumerate(CASES)]


def _split(op, tensors, args):
    """Differentiable tensors of a case (LDA's rpb sits among the trailing args)."""
    if op == 'local_deformable_attention' and args[0] is not None:
        return tensors + [args[0]]
    return tensors


def _run(fn, op, tensors, args, grad_out=None):
    """Forward (+ backward with grad_out when given); returns [out, *grads]."""
    tensors = [t.detach().requires_grad_() for t in tensors]
    if op == 'local_deformable_attention' and args[0] is not None:
        args = [args[0].detach().requires_grad_(), *args[1:]]
    out = fn(*tensors, *args)
    if grad_out is None:
        return [out]
    inputs = _split(op, tensors, args)
    grads = torch.autograd.grad(out, inputs, grad_out, allow_unused=True)
    return [out] + [torch.zeros_like(t) if gr is None else gr for t, gr in zip(inputs, grads)]


def _cast(op, tensors, args, dtype, device='cpu'):
    tensors = [t.to(device, dtype) for t in tensors]
    if op == 'local_deformable_attention' and args[0] is not None:
        args = [args[0].to(device, dtype), *args[1:]]
    return tensors, args


def _assert_all_close(actual, expected, tol):
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, (i, a.shape, e.shape, a.dtype, e.dtype)
        torch.testing.assert_close(a, e, atol=tol, rtol=tol, msg=lambda m: f'output {i}: {m}')


def check_native_matches_reference(op, kwargs, dtype, seed=0):
    """Forward and every gradient of the compiled ``op`` against its reference."""
    g = torch.Generator().manual_seed(seed)
    tensors, args = _cast(op, *BUILDERS[op](g, **kwargs), dtype)
    native = getattr(_native, op)
    out = native(*tensors, *args)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    actual = _run(native, op, tensors, args, grad_out)
    expected = _run(REFERENCES[op], op, tensors, args, grad_out)
    _assert_all_close(actual, expected, TOL[dtype])


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
    inputs = [t.requires_grad_() for t in _split(op, tensors, args)]
    n_tensors = len(tensors)

    def fn(*inputs):
        extra = list(args)
        if len(inputs) > n_tensors:  # LDA's rpb
            extra[0] = inputs[n_tensors]
        return getattr(_native, op)(*inputs[:n_tensors], *extra)

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
    grad_out = torch.zeros(getattr(_native, op)(*tensors, *args).shape, dtype=torch.float64)
    actual = _run(getattr(_native, op), op, tensors, args, grad_out)
    expected = _run(REFERENCES[op], op, tensors, args, grad_out)
    assert actual[0].shape[0] == 0
    _assert_all_close(actual, expected, 0)


@pytest.mark.parametrize('op', list(BUILDERS))
def test_non_contiguous_inputs(op):
    g = torch.Generator().manual_seed(4)
    tensors, args = BUILDERS[op](g)
    # Same values, strided memory: channels-last copies and a transposed-back view.
    strided = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    strided[0] = tensors[0].transpose(2, 3).contiguous().transpose(2, 3)
    assert not strided[0].is_contiguous()
    grad_out = torch.randn(getattr(_native, op)(*tensors, *args).shape, generator=g,
                           dtype=torch.float64)
    grad_out = grad_out.transpose(2, 3).contiguous().transpose(2, 3)
    actual = _run(getattr(_native, op), op, strided, args, grad_out)
    expected = _run(REFERENCES[op], op, tensors, args, grad_out)
    _assert_all_close(actual, expected, TOL[torch.float64])


@pytest.mark.parametrize('op', list(BUILDERS))
def test_cpu_backward_deterministic(op):
    g = torch.Generator().manual_seed(5)
    big = {'reassemble': dict(c=8, h=9, w=11), 'guided_reassemble': dict(c=8, h=9, w=11),
           'ddf': dict(c=8, h=12, w=13), 'local_deformable_attention': dict(sh=12, sw=13),
           'subpixel_sample': dict(c=8, h=9, w=11)}
    tensors, args = _cast(op, *BUILDERS[op](g, **big[op]), torch.float32)
    grad_out = torch.randn(getattr(_native, op)(*tensors, *args).shape, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        first = _run(getattr(_native, op), op, tensors, args, grad_out)
        second = _run(getattr(_native, op), op, tensors, args, grad_out)
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
    native = _native.reassemble
    monkeypatch.setattr(_native, 'reassemble', lambda *a: calls.append(a) or native(*a))
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
    monkeypatch.setitem(_native._AVAILABLE, ('reassemble', 'cpu'), False)
    monkeypatch.setitem(_native._FAILED, 'reassemble', reason)
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
    monkeypatch.setattr(_native, 'EXTENSION', 'dlu_mm._C_torch9_99')
    module, reason = _native._load_extension()
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
# CUDA: the same functors driven by the CUDA kernels, against the CPU kernels
# ---------------------------------------------------------------------------------------------
@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('op,kwargs', CASES, ids=CASE_IDS)
def test_cuda_matches_cpu(op, kwargs, dtype):
    assert _native.available(op, 'cuda'), f'dlu_mm._C_torch<X>_<Y> was built without CUDA ({op})'
    g = torch.Generator().manual_seed(6)
    tensors, args = _cast(op, *BUILDERS[op](g, **kwargs), dtype)
    grad_out = torch.randn(getattr(_native, op)(*tensors, *args).shape, generator=g).to(dtype)
    expected = _run(getattr(_native, op), op, tensors, args, grad_out)
    cuda_tensors, cuda_args = _cast(op, tensors, args, dtype, 'cuda')
    actual = _run(getattr(_native, op), op, cuda_tensors, cuda_args, grad_out.cuda())
    _assert_all_close([a.cpu() for a in actual], expected, TOL[dtype])


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('op', list(BUILDERS))
def test_cuda_gradcheck_and_empty(op):
    g = torch.Generator().manual_seed(7)
    tensors, args = _cast(op, *BUILDERS[op](g, n=1), torch.float64, 'cuda')
    inputs = [t.requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(lambda *t: getattr(_native, op)(*t, *args), inputs,
                                    eps=1e-6, atol=1e-7)
    empty, args = _cast(op, *BUILDERS[op](g, n=0), torch.float32, 'cuda')
    assert getattr(_native, op)(*empty, *args).shape[0] == 0


@CUDA
@pytest.mark.cuda
def test_cuda_deterministic_mode_is_honoured():
    """Under deterministic algorithms the atomic scatters give way to gathers: same result."""
    g = torch.Generator().manual_seed(8)
    tensors, args = _cast('guided_reassemble', *guided_case(g), torch.float32, 'cuda')
    grad_out = torch.randn(2, 4, 10, 14, generator=g).cuda()
    scattered = _run(_native.guided_reassemble, 'guided_reassemble', tensors, args, grad_out)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        gathered = _run(_native.guided_reassemble, 'guided_reassemble', tensors, args, grad_out)
    finally:
        torch.use_deterministic_algorithms(previous)
    _assert_all_close(gathered, scattered, TOL[torch.float32])
