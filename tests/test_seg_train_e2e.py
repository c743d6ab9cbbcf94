"""End to end: tools/train.py (+ resume) and tools/test.py on the synthetic ADE20K-format set."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

pytest.importorskip('mmseg')

from dlu_mm.datasets.synthetic_ade import generate  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = 'configs/demo/upernet_r18_synthetic_ade_dlu.py'
pytestmark = pytest.mark.slow


def run_tool(tool, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', tool), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def data_options(data_root):
    return [f'{loader}.dataset.data_root={data_root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_ade')
    generate(str(root), num_train=4, num_val=2, num_classes=6, min_size=48, max_size=71, seed=0)
    return str(root)


def train_options(max_iters):
    return ['train_dataloader.batch_size=2', f'train_cfg.max_iters={max_iters}',
            f'train_cfg.val_interval={max_iters}', 'default_hooks.checkpoint.interval=2',
            'default_hooks.logger.interval=1']


def miou(output):
    found = re.findall(r'mIoU: (\d+\.\d+)', output)
    assert found, output[-3000:]
    return float(found[-1])


def test_train_resume_and_test(synthetic_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    rc, out = run_tool('train.py', DEMO_CONFIG, '--work-dir', work_dir, '--cfg-options',
                       *data_options(synthetic_root), *train_options(4))
    assert rc == 0, out[-5000:]
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))
    assert 'Iter(train) [4/4]' in out
    assert 0.0 <= miou(out) <= 100.0  # IoUMetric ran on the validation split

    # resume from the latest checkpoint (iter 4) and train to 6
    rc, out = run_tool('train.py', DEMO_CONFIG, '--work-dir', work_dir, '--resume',
                       '--cfg-options', *data_options(synthetic_root), *train_options(6))
    assert rc == 0, out[-5000:]
    assert re.search(r'resumed .*iter: 4', out, re.IGNORECASE), out[-5000:]
    assert 'Iter(train) [5/6]' in out and 'Iter(train) [1/6]' not in out
    assert osp.isfile(osp.join(work_dir, 'iter_6.pth'))

    rc, out = run_tool('test.py', DEMO_CONFIG, osp.join(work_dir, 'iter_6.pth'), '--work-dir',
                       str(tmp_path / 'test'), '--cfg-options', *data_options(synthetic_root))
    assert rc == 0, out[-5000:]
    assert 'IoU' in out and 'wall' in out  # per-class table of IoUMetric
    assert 0.0 <= miou(out) <= 100.0


def test_missing_data_root_names_path_and_generator(tmp_path):
    missing = str(tmp_path / 'synthetic_ade_missing')
    rc, out = run_tool('train.py', DEMO_CONFIG, '--work-dir', str(tmp_path / 'work'),
                       '--cfg-options', *data_options(missing))
    assert rc != 0
    assert missing in out
    assert 'dlu_mm.datasets.synthetic_ade' in out, out[-3000:]
