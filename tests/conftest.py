"""Test-wide isolation. Must import with torch alone: tools/gpu_check.sh runs the op tests on a
GPU box without mmengine."""
import os

import pytest

try:
    from mmengine.registry import DefaultScope
except ImportError:  # GPU box: only torch
    DefaultScope = None

_BASELINE_SCOPES = set(DefaultScope._instance_dict) if DefaultScope is not None else set()


def _reset_default_scope():
    for name in [n for n in DefaultScope._instance_dict if n not in _BASELINE_SCOPES]:
        DefaultScope._instance_dict.pop(name)


@pytest.fixture(autouse=True)
def _isolated_default_scope():
    """Every test starts without a default scope of an earlier test: mmengine's current scope is
    process-global (``init_default_scope`` in a test, a fixture or at import time), and a
    leftover 'mmpretrain' would make a later mmdet test build mmpretrain's losses."""
    if DefaultScope is None:
        yield
        return
    _reset_default_scope()
    yield
    _reset_default_scope()


def pytest_sessionstart(session):
    """tools/dev.sh sets DLU_MM_REQUIRE_NATIVE=1: then a compiled op that does not load or register
    stops the run at once (the op tests would otherwise skip and the rest fall back silently)."""
    if os.environ.get('DLU_MM_REQUIRE_NATIVE') != '1':
        return
    from dlu_mm.ops import native as compiled
    missing = {op: compiled.why_unavailable(op, 'cpu') for op in compiled.OPS
               if not compiled.available(op, 'cpu')}
    if missing:
        pytest.exit(f'DLU_MM_REQUIRE_NATIVE=1 but compiled CPU ops are unusable: {missing}',
                    returncode=1)
