"""Synthetic ADE20K-format generator: layout, determinism, label semantics through mmseg."""
import filecmp
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from dlu_mm.datasets.synthetic_ade import class_names, generate, main


def tree(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, files in os.walk(root)
                  for f in files)


def test_layout_labels_and_sizes(tmp_path):
    counts = generate(str(tmp_path), num_train=5, num_val=3, num_classes=4, min_size=20,
                      max_size=41, seed=3)
    assert counts == {'training': 5, 'validation': 3}
    files = tree(tmp_path)
    for split, count in counts.items():
        images = [f for f in files if f.startswith(f'images/{split}/')]
        labels = [f for f in files if f.startswith(f'annotations/{split}/')]
        assert len(images) == len(labels) == count
        assert all(f.endswith('.jpg') for f in images) and all(f.endswith('.png') for f in labels)
        for image_file, label_file in zip(images, labels):
            assert osp.basename(image_file)[:-4] == osp.basename(label_file)[:-4]
            image = np.asarray(Image.open(tmp_path / image_file))
            label = np.asarray(Image.open(tmp_path / label_file))
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert label.dtype == np.uint8 and label.shape == image.shape[:2]
            assert 20 <= label.shape[0] <= 41 and 20 <= label.shape[1] <= 41
            assert set(np.unique(label)) <= set(range(5))  # 0 = other, 1..K classes
    assert len(files) == 16


def test_deterministic_by_seed(tmp_path):
    generate(str(tmp_path / 'a'), num_train=3, num_val=2, seed=7)
    main(['--out', str(tmp_path / 'b'), '--num-train', '3', '--num-val', '2', '--seed', '7'])
    generate(str(tmp_path / 'c'), num_train=3, num_val=2, seed=8)
    files = tree(tmp_path / 'a')
    assert files == tree(tmp_path / 'b') == tree(tmp_path / 'c')
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a', tmp_path / 'b', files,
                                               shallow=False)
    assert len(match) == len(files) and not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(tmp_path / 'a', tmp_path / 'c', files, shallow=False)
    assert len(mismatch) == len(files)


def test_odd_sizes_and_class_zero_occur(tmp_path):
    generate(str(tmp_path), num_train=12, num_val=1, seed=0)
    labels = [np.asarray(Image.open(tmp_path / f)) for f in tree(tmp_path)
              if f.startswith('annotations/training/')]
    assert any(h % 2 or w % 2 for h, w in (lb.shape for lb in labels))
    assert any((lb == 0).any() for lb in labels)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_classes'):
        generate(str(tmp_path), num_classes=1)
    with pytest.raises(ValueError, match='num_classes'):
        class_names(17)
    with pytest.raises(ValueError, match='num_train'):
        generate(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match='min_size'):
        generate(str(tmp_path), min_size=30, max_size=20)


def test_mmseg_ade20k_dataset_reads_it_with_reduce_zero_label(tmp_path):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset

    init_default_scope('mmseg')  # the pipeline's transform names are mmseg's
    generate(str(tmp_path), num_train=2, num_val=2, num_classes=6, seed=1)
    dataset = ADE20KDataset(
        data_root=str(tmp_path), metainfo=dict(classes=class_names(6)),
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')])
    assert len(dataset) == 2 and dataset.metainfo['classes'] == class_names(6)
    for index in range(2):
        item = dataset[index]
        raw = np.asarray(Image.open(item['data_samples'].seg_map_path))
        loaded = item['data_samples'].gt_sem_seg.data[0].numpy()
        expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)  # ADE20K semantics
        assert np.array_equal(loaded, expected)
