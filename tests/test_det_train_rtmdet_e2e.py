"""RTMDet-tiny with DLU (UpsampleCSPNeXtPAFPN) trains through tools/train.py on the synthetic
COCO set on CPU and evaluates through tools/test.py."""
import os.path as osp

import pytest

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from dlu_mm.datasets import synthetic_coco  # noqa: E402
from tool_cases import run_python  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo', 'rtmdet_tiny_synthetic_dlu.py')


def _run(args, cwd):
    return run_python(args, cwd, timeout=600)


def test_rtmdet_tiny_dlu_trains_and_tests(tmp_path):
    data = str(tmp_path / 'synthetic_coco') + '/'
    synthetic_coco.generate(data, num_train=8, num_val=4, min_size=64, max_size=96, seed=1)
    ann = data + 'annotations/instances_val2017.json'
    options = [f'{split}_dataloader.dataset.data_root={data}'
               for split in ('train', 'val', 'test')]
    options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    work_dir = str(tmp_path / 'work')
    # 8 images at batch 4: 2 iterations, then the COCO evaluation of the 4 val images
    output = _run([osp.join(REPO, 'tools', 'train.py'), CONFIG, '--work-dir', work_dir,
                   '--cfg-options'] + options + ['train_cfg.max_epochs=1',
                                                 'train_cfg.val_interval=1',
                                                 'default_hooks.checkpoint.interval=1'],
                  cwd=str(tmp_path))
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert 'coco/bbox_mAP' in output
    output = _run([osp.join(REPO, 'tools', 'test.py'), CONFIG, osp.join(work_dir, 'epoch_1.pth'),
                   '--work-dir', str(tmp_path / 'test'), '--cfg-options'] + options,
                  cwd=str(tmp_path))
    assert 'coco/bbox_mAP' in output and 'Average Precision' in output
    import torch
    state = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    assert any(k.startswith('neck.upsamplers.1.') for k in state)  # both DLU steps were saved
