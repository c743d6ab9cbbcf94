"""mmengine resume / load_from under torch >= 2.6 (weights_only=True) with dlu_mm imported.

On torch < 2.6 torch.load defaults to weights_only=False: resume and load_from must work there
too, and dlu_mm registers no allow-list (the alias tests need torch >= 2.6).
"""
import io
import pickle
import zipfile
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import dlu_mm  # noqa: F401  (registers the safe globals)
from dlu_mm.checkpoint import NUMPY_MULTIARRAY_MODULES, _history_buffer_getattr
from dlu_mm.ops.compat import TORCH_VERSION

NEEDS_ALLOW_LIST = pytest.mark.skipif(
    TORCH_VERSION < (2, 6), reason='weights_only=True by default and safe-global aliases exist '
    'from torch 2.6; older torches load mmengine checkpoints with weights_only=False')

_TOY = textwrap.dedent('''
    import torch, torch.nn as nn
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x, y, mode='tensor'):
            out = self.lin(x)
            return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else out

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return dict(x=torch.tensor([float(i), 1.0]), y=torch.tensor([float(i)]))

    def make_runner(work_dir, max_iters, resume=False, load_from=None):
        return Runner(
            model=Toy(), work_dir=work_dir,
            train_dataloader=dict(dataset=Data(), batch_size=2,
                                  sampler=dict(type='DefaultSampler', shuffle=True),
                                  collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=False),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                               by_epoch=False)),
            resume=resume, load_from=load_from, randomness=dict(seed=0),
            default_scope='mmengine')
''')


def _run(code, tmp_path):
    script = tmp_path / 'job.py'
    script.write_text(_TOY + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_resume_restores_iteration_and_optimizer(tmp_path):
    out = _run(f'''
        import dlu_mm
        runner = make_runner({str(tmp_path / 'wd')!r}, max_iters=4)
        runner.train()
        ckpt = torch.load({str(tmp_path / 'wd' / 'iter_4.pth')!r})  # weights_only default
        assert ckpt['meta']['iter'] == 4, ckpt['meta']
        resumed = make_runner({str(tmp_path / 'wd')!r}, max_iters=6, resume=True)
        resumed.train()
        print('RESUMED', resumed.iter, resumed.message_hub.get_info('iter'))
        buf = resumed.optim_wrapper.optimizer.state_dict()['state']
        assert buf and 'momentum_buffer' in buf[0], buf
    ''', tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 4' in out.stdout + out.stderr
    assert 'RESUMED 6' in out.stdout


def test_load_from_restores_weights(tmp_path):
    out = _run(f'''
        import dlu_mm
        first = make_runner({str(tmp_path / 'a')!r}, max_iters=2)
        first.train()
        second = make_runner({str(tmp_path / 'b')!r}, max_iters=2,
                             load_from={str(tmp_path / 'a' / 'iter_2.pth')!r})
        second.load_or_resume()
        assert torch.equal(first.model.lin.weight, second.model.lin.weight)
        print('LOADED')
    ''', tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'LOADED' in out.stdout


@NEEDS_ALLOW_LIST
def test_without_dlu_mm_the_checkpoint_needs_the_safe_globals(tmp_path):
    """Guards the premise: plain torch.load of an mmengine checkpoint fails under weights_only."""
    out = _run(f'''
        import pickle
        runner = make_runner({str(tmp_path / 'wd')!r}, max_iters=2)
        runner.train()
        try:
            torch.load({str(tmp_path / 'wd' / 'iter_2.pth')!r}, weights_only=True)
        except pickle.UnpicklingError:
            print('REFUSED')
    ''', tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'REFUSED' in out.stdout


@NEEDS_ALLOW_LIST
def test_getattr_stand_in_only_resolves_history_buffer_methods():
    from mmengine.logging.history_buffer import HistoryBuffer
    assert _history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, '_set_default_statistics'),
                      (torch, 'load'), (nn.Module, 'forward'), (HistoryBuffer, 'no_such')]:
        with pytest.raises(pickle.UnpicklingError, match='getattr'):
            _history_buffer_getattr(obj, name)


def test_weights_only_still_rejects_arbitrary_globals(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))

    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def _save_naming_numpy_module(obj, path, module_name):
    """torch.save(obj, path), then rewrite the pickle to name numpy's multiarray ``module_name``.

    This is the file another numpy writes: numpy 1.x pickles arrays and scalars as
    ``numpy.core.multiarray._reconstruct`` / ``.scalar``, numpy 2.x as ``numpy._core...``.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, 'w') as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith('/data.pkl'):
                for name in NUMPY_MULTIARRAY_MODULES:  # protocol 2 GLOBAL: "module\nname\n"
                    data = data.replace(f'{name}\n'.encode(), f'{module_name}\n'.encode())
                assert f'{module_name}\n_reconstruct\n'.encode() in data
                assert f'{module_name}\nscalar\n'.encode() in data
            target.writestr(item, data)


@NEEDS_ALLOW_LIST
@pytest.mark.parametrize('module_name', NUMPY_MULTIARRAY_MODULES)
def test_numpy_objects_load_under_either_numpy_module_name(tmp_path, module_name):
    import numpy as np
    state = {'array': np.arange(6, dtype=np.float32).reshape(2, 3), 'scalar': np.float64(1.5),
             'tensor': torch.ones(2)}
    path = tmp_path / 'ckpt.pth'
    _save_naming_numpy_module(state, path, module_name)
    loaded = torch.load(path, weights_only=True)
    np.testing.assert_array_equal(loaded['array'], state['array'])
    assert loaded['scalar'] == 1.5 and torch.equal(loaded['tensor'], state['tensor'])


@NEEDS_ALLOW_LIST
def test_numpy_aliases_do_not_open_other_names(tmp_path):
    """The same rewrite to a module name that is not numpy's is refused."""
    import numpy as np
    path = tmp_path / 'ckpt.pth'
    _save_naming_numpy_module({'array': np.zeros(2), 'scalar': np.float64(0)}, path,
                              'numpy.lib.multiarray')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
