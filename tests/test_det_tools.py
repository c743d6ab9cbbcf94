"""tools/train.py + tools/test.py end to end on a tiny synthetic COCO set; dataset path errors."""
import hashlib
import json
import os
import os.path as osp
import subprocess

import numpy as np
import pytest

from dlu_mm.datasets import synthetic_coco
from tool_cases import load_tool, run_python

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'faster_rcnn_lite_synthetic_dlu.py')


def _tree_digest(root):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = osp.join(folder, name)
            digest.update(osp.relpath(path, root).encode())
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    synthetic_coco.generate(root, num_train=8, num_val=4, min_size=64, max_size=96, seed=1)
    return root


def test_synthetic_coco_is_deterministic_and_consistent(tiny_coco, tmp_path):
    from PIL import Image
    from pycocotools.coco import COCO
    again = str(tmp_path / 'again')
    synthetic_coco.generate(again, num_train=8, num_val=4, min_size=64, max_size=96, seed=1)
    assert _tree_digest(again) == _tree_digest(tiny_coco)
    other = str(tmp_path / 'other')
    synthetic_coco.generate(other, num_train=8, num_val=4, min_size=64, max_size=96, seed=2)
    assert _tree_digest(other) != _tree_digest(tiny_coco)
    assert synthetic_coco.exists(tiny_coco) and not synthetic_coco.exists(str(tmp_path / 'x'))

    ann_dir = osp.join(tiny_coco, 'annotations')
    coco = COCO(osp.join(ann_dir, 'instances_val2017.json'))
    with open(osp.join(ann_dir, 'panoptic_val2017.json')) as f:
        panoptic = {a['image_id']: a for a in json.load(f)['annotations']}
    assert sorted(coco.getCatIds()) == list(synthetic_coco.THING_IDS)
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) >= 4
    for image_id, image in coco.imgs.items():
        pixels = np.asarray(Image.open(osp.join(tiny_coco, 'val2017', image['file_name'])))
        assert pixels.shape == (image['height'], image['width'], 3)
        rgb = np.asarray(Image.open(osp.join(ann_dir, 'panoptic_val2017',
                                             image['file_name']))).astype(np.int64)
        segment_map = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        segments = panoptic[image_id]['segments_info']
        assert sum(s['area'] for s in segments) == segment_map.size  # every pixel labelled
        by_id = {s['id']: s for s in segments}
        for ann in coco.imgToAnns[image_id]:
            mask = coco.annToMask(ann).astype(bool)
            segment = by_id[int(segment_map[mask][0])]
            assert segment['category_id'] == ann['category_id']
            # the polygon decodes to exactly the panoptic segment, box and area
            assert np.array_equal(mask, segment_map == segment['id'])
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1] == segment['bbox']
            assert ann['area'] == mask.sum() == segment['area']


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_train'):
        synthetic_coco.generate(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match='max_size'):
        synthetic_coco.generate(str(tmp_path), min_size=64, max_size=32)


def _load_train_tool():
    return load_tool('train.py')


def test_missing_dataset_path_error(tmp_path):
    pytest.importorskip('mmdet.models')
    from mmengine.config import Config
    tool = _load_train_tool()
    cfg = Config.fromfile(DEMO_CONFIG)
    missing = str(tmp_path / 'synthetic_coco') + '/'
    cfg.train_dataloader.dataset.data_root = missing
    with pytest.raises(FileNotFoundError) as error:
        tool.check_dataset_paths(cfg)
    message = str(error.value)
    assert missing + 'annotations/instances_train2017.json' in message
    assert f'python -m dlu_mm.datasets.synthetic_coco --out {missing}' in message

    cfg = Config.fromfile(osp.join(REPO, 'configs', 'faster_rcnn_r50_fpn_dlu.py'))
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'coco') + '/'
    with pytest.raises(FileNotFoundError, match=r'(?s)coco.*cocodataset\.org'):
        tool.check_dataset_paths(cfg)


def test_missing_dataset_path_error_segmentation_config(tmp_path):
    """The same tools serve mmseg configs (their default_scope is mmseg)."""
    pytest.importorskip('mmseg.models')
    from mmengine.config import Config
    tool = _load_train_tool()
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'upernet_r50_512x512_160k_ade20k_dlu.py'))
    assert cfg.default_scope == 'mmseg'
    cfg.val_dataloader.dataset.data_root = str(tmp_path / 'ade' / 'ADEChallengeData2016')
    with pytest.raises(FileNotFoundError, match=r'(?s)val_dataloader.*ADEChallengeData2016.*'
                       r'mmsegmentation\.readthedocs'):
        tool.check_dataset_paths(cfg, ('val_dataloader',))


def _run(args, cwd):
    return run_python(args, cwd, timeout=300)


def test_train_resume_test_end_to_end(tiny_coco, tmp_path):
    pytest.importorskip('mmdet.models')
    data = tiny_coco + '/'
    ann = data + 'annotations/instances_val2017.json'
    data_options = [f'{split}_dataloader.dataset.data_root={data}'
                    for split in ('train', 'val', 'test')]
    data_options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    work_dir = str(tmp_path / 'work')
    train = [osp.join(REPO, 'tools', 'train.py'), DEMO_CONFIG, '--work-dir', work_dir,
             '--cfg-options'] + data_options + ['train_cfg.val_interval=1',
                                                'default_hooks.checkpoint.interval=1']
    # 8 images at batch 4: 2 iterations per epoch
    output = _run(train + ['train_cfg.max_epochs=1'], cwd=str(tmp_path))
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert 'coco/bbox_mAP' in output

    output = _run(train + ['train_cfg.max_epochs=2', '--resume'], cwd=str(tmp_path))
    assert 'resumed epoch: 1, iter: 2' in output
    assert 'Epoch(train) [1]' not in output
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))

    output = _run([osp.join(REPO, 'tools', 'test.py'), DEMO_CONFIG,
                   osp.join(work_dir, 'epoch_2.pth'), '--work-dir', str(tmp_path / 'test'),
                   '--out', str(tmp_path / 'preds.pkl'), '--cfg-options'] + data_options,
                  cwd=str(tmp_path))
    assert 'coco/bbox_mAP' in output and 'Average Precision' in output
    assert osp.isfile(tmp_path / 'preds.pkl')


def test_train_arguments_and_dist_scripts():
    pytest.importorskip('mmdet.models')
    tool = _load_train_tool()
    config = osp.join(REPO, 'configs', 'faster_rcnn_r50_fpn_dlu.py')
    args = tool.parse_args([config, '--amp', '--resume', '--cfg-options',
                            'train_dataloader.batch_size=3'])
    cfg = tool.apply_train_args(tool.load_config(args), args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.train_dataloader.batch_size == 3
    assert cfg.work_dir == osp.join('./work_dirs', 'faster_rcnn_r50_fpn_dlu')
    assert cfg.default_scope == 'mmdet'
    args = tool.parse_args([config, '--resume', 'x.pth', '--work-dir', 'w', '--launcher', 'pytorch'])
    cfg = tool.apply_train_args(tool.load_config(args), args)
    assert (cfg.resume, cfg.load_from, cfg.work_dir, cfg.launcher) == (True, 'x.pth', 'w', 'pytorch')
    for script in ('dist_train.sh', 'dist_test.sh'):
        path = osp.join(REPO, 'tools', script)
        assert os.access(path, os.X_OK)
        assert subprocess.run(['bash', '-n', path]).returncode == 0
        text = open(path).read()
        assert all(var in text for var in ('NNODES', 'NODE_RANK', 'PORT', 'MASTER_ADDR'))
