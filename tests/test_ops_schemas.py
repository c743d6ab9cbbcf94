"""The compiled ops' schemas are the ones of dlu_mm.ops.schemas (the one place that defines them;
ops/include/schemas.h registers the same strings), for dlu_mm::<op>, <op>_backward, the
'generic' backend's generic_<op> and the FLOP-counting units dlu_mm_analysis::<op>."""
import pytest
import torch

from dlu_mm.ops import native as compiled
from dlu_mm.ops.schemas import (BACKWARD_SCHEMAS, GENERIC_PREFIX, OPS, SCHEMAS, fake_backward,
                                fake_forward, num_tensor_inputs)

if compiled.LOAD_ERROR is not None:
    pytest.skip(f'compiled ops unusable: {compiled.LOAD_ERROR}', allow_module_level=True)


def _schema(namespace, name):
    return str(getattr(getattr(torch.ops, namespace), name).default._schema)


@pytest.mark.parametrize('prefix', ['', GENERIC_PREFIX])
@pytest.mark.parametrize('op', OPS)
def test_compiled_schema_is_the_table(op, prefix):
    assert _schema('dlu_mm', prefix + op) == f'dlu_mm::{prefix}{op}{SCHEMAS[op]}'
    assert _schema('dlu_mm', f'{prefix}{op}_backward') == \
        f'dlu_mm::{prefix}{op}_backward{BACKWARD_SCHEMAS[op]}'


def test_table_covers_the_compiled_ops():
    """No dlu_mm op is registered that the table does not define."""
    names = {name for name in dir(torch.ops.dlu_mm) if not name.startswith('_')}
    defined = {prefix + op + suffix for op in OPS for prefix in ('', GENERIC_PREFIX)
               for suffix in ('', '_backward')}
    registered = {name for name in names
                  if isinstance(getattr(torch.ops.dlu_mm, name), torch._ops.OpOverloadPacket)}
    assert registered == defined


@pytest.mark.parametrize('op', OPS)
def test_analysis_units_use_the_table(op):
    from dlu_mm.analysis.op_units import NAMESPACE, UNIT_OPS
    assert op in UNIT_OPS
    assert _schema(NAMESPACE, op) == f'{NAMESPACE}::{op}{SCHEMAS[op]}'


@pytest.mark.parametrize('op', OPS)
def test_fake_kernels_match_the_compiled_shapes(op):
    """The table's output shapes (fake kernels) agree with the compiled op on a real call."""
    from op_cases import BUILDERS
    tensors, args = BUILDERS[op](torch.Generator().manual_seed(0))
    out = getattr(torch.ops.dlu_mm, op)(*tensors, *args)
    assert fake_forward(op)(*tensors, *args).shape == out.shape
    grads = getattr(torch.ops.dlu_mm, f'{op}_backward')(torch.ones_like(out), *tensors, *args)
    fakes = fake_backward(op)(out, *tensors, *args)
    assert len(grads) == len(fakes) == num_tensor_inputs(op)
    assert [g.shape for g in grads] == [f.shape for f in fakes]
