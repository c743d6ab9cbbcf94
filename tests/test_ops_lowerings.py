"""Each op's ONNX lowering (held beside it in its module) computes its reference, and the
dispatcher hands it over only while exporting, unless ``use_onnx_lowerings(False)``."""
import pytest
import torch

from dlu_mm.ops import dispatch, is_onnx_exporting, onnx_lowerings_enabled, use_onnx_lowerings
from dlu_mm.ops.local_deformable_attention import local_deformable_attention_onnx
from dlu_mm.ops.reassemble import (guided_reassemble_onnx, local_window_similarity,
                                   local_window_similarity_onnx, reassemble_onnx)
from op_cases import BUILDERS, REFERENCES

LOWERINGS = {'reassemble': reassemble_onnx, 'guided_reassemble': guided_reassemble_onnx,
             'local_deformable_attention': local_deformable_attention_onnx}
CASES = [('reassemble', {}), ('reassemble', dict(c=3, h=1, w=6, k=5, groups=1, s=3)),
         ('guided_reassemble', {}), ('guided_reassemble', dict(c=6, h=3, w=1, groups=3)),
         ('local_deformable_attention', {}),
         ('local_deformable_attention', dict(heads=1, groups=2, points=9, rpb=False))]


@pytest.mark.parametrize('op,kwargs', CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_lowering_computes_the_reference(op, kwargs, dtype):
    tensors, args = BUILDERS[op](torch.Generator().manual_seed(0), **kwargs)
    tensors = [t.to(dtype) for t in tensors]
    if op == 'local_deformable_attention' and args[0] is not None:
        args = [args[0].to(dtype), *args[1:]]
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(LOWERINGS[op](*tensors, *args), REFERENCES[op](*tensors, *args),
                               rtol=tol, atol=tol)


def test_window_similarity_lowering():
    g = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 10, 14, generator=g, dtype=torch.float64)
    key = torch.randn(2, 4, 5, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(local_window_similarity_onnx(query, key, 3, 2),
                               local_window_similarity(query, key, 3, 2))


def test_dispatch_takes_the_lowering_only_while_exporting(monkeypatch):
    def reference():
        return 'reference'

    def lowering():
        return 'lowering'

    assert not is_onnx_exporting() and onnx_lowerings_enabled()
    with dispatch.use_backend('reference'):
        assert dispatch.dispatch('op', 'cpu', reference, (), lowering) == 'reference'
    monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
    assert dispatch.dispatch('op', 'cpu', reference, (), lowering) == 'lowering'
    assert dispatch.dispatch('op', 'cpu', reference, (), None) == 'reference'
    with use_onnx_lowerings(False):
        assert not onnx_lowerings_enabled()
        assert dispatch.dispatch('op', 'cpu', reference, (), lowering) == 'reference'
    assert onnx_lowerings_enabled()


def test_use_onnx_lowerings_checks_its_argument():
    with pytest.raises(TypeError, match='enabled must be a bool'):
        with use_onnx_lowerings('no'):
            pass


def test_moved_names_keep_working():
    """dlu_mm.ops.export (the lowerings' old home) and dlu_mm.ops.local_attention (the op's old
    module name) still give the same objects."""
    import importlib
    import sys

    from dlu_mm.ops import export, local_deformable_attention
    assert export.lowering('reassemble', None) is reassemble_onnx
    assert export.lowering('subpixel_sample', 'reference') == 'reference'
    sys.modules.pop('dlu_mm.ops.local_attention', None)
    with pytest.warns(DeprecationWarning, match='local_deformable_attention'):
        old = importlib.import_module('dlu_mm.ops.local_attention')
    assert old.local_deformable_attention is local_deformable_attention
