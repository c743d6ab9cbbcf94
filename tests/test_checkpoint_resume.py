"""mmengine resume / load_from under torch >= 2.6 (weights_only=True) with dlu_mm imported."""
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import dlu_mm  # noqa: F401  (registers the safe globals)
from dlu_mm.checkpoint import _history_buffer_getattr

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
