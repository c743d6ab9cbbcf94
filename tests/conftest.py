"""Test-wide isolation. Must import with torch alone: tools/gpu_check.sh runs the op tests on a
GPU box without mmengine."""
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
