"""Synthetic classification data (deterministic, mmpretrain-readable) and an end-to-end CPU run
of tools/train.py on the DDF-ResNet-50 demo config."""
import filecmp
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from dlu_mm.datasets.synthetic_cls import class_names, generate

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = 'configs/ddf_resnet/demo_ddf_resnet50_synthetic.py'


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic_cls'))
    assert generate(root, num_classes=4, num_train_per_class=2, num_val_per_class=1,
                    seed=3) == dict(train=8, val=4)
    return root


def test_generator_is_deterministic_and_readable(synthetic_root, tmp_path):
    again = str(tmp_path / 'again')
    generate(again, num_classes=4, num_train_per_class=2, num_val_per_class=1, seed=3)
    files = sorted(osp.relpath(osp.join(d, f), again)
                   for d, _, names in os.walk(again) for f in names)
    assert len(files) == 8 + 4 + 3
    match, mismatch, errors = filecmp.cmpfiles(synthetic_root, again, files, shallow=False)
    assert not mismatch and not errors
    other = str(tmp_path / 'other')
    generate(other, num_classes=4, num_train_per_class=2, num_val_per_class=1, seed=4)
    assert not filecmp.cmp(osp.join(again, 'train/class_00/class_00_00000.png'),
                           osp.join(other, 'train/class_00/class_00_00000.png'), shallow=False)
    with open(osp.join(again, 'meta', 'val.txt')) as f:
        assert f.read().split('\n')[:2] == ['class_00/class_00_00000.png 0',
                                            'class_01/class_01_00000.png 1']

    pytest.importorskip('mmpretrain')
    from mmpretrain.datasets import CustomDataset
    from_ann = CustomDataset(data_root=again, ann_file='meta/train.txt', data_prefix='train',
                             metainfo=dict(classes=class_names(4)))
    from_folders = CustomDataset(data_root=again, data_prefix='train')
    assert len(from_ann) == len(from_folders) == 8
    assert from_folders.CLASSES == class_names(4)
    assert sorted(from_ann.get_gt_labels().tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize('kwargs', [dict(num_classes=1), dict(size=4),
                                    dict(num_train_per_class=0)])
def test_generator_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        generate(str(tmp_path), **kwargs)


@pytest.mark.slow
def test_train_demo_end_to_end(synthetic_root, tmp_path):
    pytest.importorskip('mmpretrain')
    work_dir = str(tmp_path / 'work')
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1')
    options = [f'{loader}.dataset.data_root={synthetic_root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), DEMO_CONFIG, '--work-dir',
         work_dir, '--cfg-options', *options, 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'default_hooks.checkpoint.interval=2'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'Iter(train) [2/2]' in out, out[-3000:]
    losses = [float(v) for v in re.findall(r'Iter\(train\).*?loss: (\d+\.\d+)', out)]
    assert len(losses) == 2 and all(0 < v < 20 for v in losses)
    top1 = re.findall(r'accuracy/top1: (\d+\.\d+)', out)
    assert top1 and 0.0 <= float(top1[-1]) <= 100.0, out[-3000:]
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
