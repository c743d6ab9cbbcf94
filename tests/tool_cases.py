"""Shared by the tests of the scripts under ``tools/``: load one as a module, run one in a
subprocess."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(relative):
    """``tools/<relative>`` (e.g. ``'analysis/get_flops.py'``) as a new module object (not put
    in ``sys.modules``; each call executes the script again)."""
    name = 'dlu_mm_tool_' + relative[:-len('.py')].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, 'tools', relative))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_python(args, cwd, timeout):
    """``python ARGS`` in ``cwd`` on one thread with the checkout importable; its output, after
    asserting exit status 0 (the output's tail in the failure message)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output
