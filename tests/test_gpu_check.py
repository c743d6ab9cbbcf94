"""tools/gpu_check.sh's CPU-side part, on the extension already built in place (no rebuild):
every op has CUDA kernels registered and the CUDA tests collect. Skipped where the build has no
CUDA kernels (nvcc does not match torch's CUDA, or a CPU-only build), except under tools/dev.sh
after a build that compiled them (DLU_MM_EXPECT_CUDA=1): a lost CUDA build fails there."""
import os
import subprocess
import sys

import pytest
import torch

from dlu_mm.ops import native as compiled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CUDA_KERNELS = compiled.LOAD_ERROR is None and torch.version.cuda is not None and \
    torch._C._dispatch_has_kernel_for_dispatch_key('dlu_mm::reassemble', 'CUDA')


def test_cuda_kernels_present_when_built_with_cuda():
    if os.environ.get('DLU_MM_EXPECT_CUDA') != '1':
        pytest.skip('no build log saying the CUDA kernels were compiled (tools/dev.sh sets it)')
    assert HAS_CUDA_KERNELS, f'setup.py compiled CUDA kernels but none is registered ' \
                             f'(load error: {compiled.LOAD_ERROR})'


@pytest.mark.skipif(not HAS_CUDA_KERNELS, reason='dlu_mm was built without CUDA kernels')
def test_gpu_check_cpu_side(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    proc = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'gpu_check.sh'), '--cpu-only',
                           '--no-build'], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'CUDA kernels registered' in proc.stdout
    assert 'CPU-side checks PASSED' in proc.stdout, proc.stdout[-3000:]
