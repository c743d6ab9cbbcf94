"""Synthetic ADE20K-format segmentation data for tests and the demo config.

Writes the directory layout mmseg's ``ADE20KDataset`` reads::

    OUT/images/training/*.jpg        OUT/annotations/training/*.png
    OUT/images/validation/*.jpg      OUT/annotations/validation/*.png

Label PNGs follow ADE20K's convention: 0 = "other" (ignored: ``reduce_zero_label=True`` maps it
to 255) and 1..K are the classes (mapped to 0..K-1). Only the first K ADE20K classes are used, so
a config restricts ``metainfo['classes']`` to :func:`class_names` ``(K)`` and sets
``num_classes=K``. Each image is a random layout of class-coloured rectangles and ellipses with
noise, so a small model can learn it; sizes vary and are often odd, like ADE20K's test images.
The output depends only on the arguments (numpy ``default_rng(seed)``).

CLI: ``python -m dlu_mm.datasets.synthetic_ade --out data/synthetic_ade``
"""
import argparse
import os
import os.path as osp

import numpy as np

# The first ADE20K classes, spelled exactly as mmseg's ADE20KDataset.METAINFO (including the
# trailing space of 'bed '), so a metainfo restricted to them is a subset mmseg accepts.
ADE20K_HEAD_CLASSES = ('wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed ',
                       'windowpane', 'grass', 'cabinet', 'sidewalk', 'person', 'earth', 'door',
                       'table')
SPLITS = ('training', 'validation')


def class_names(num_classes):
    """Class names of a synthetic set with ``num_classes`` classes (first ADE20K names)."""
    _check_num_classes(num_classes)
    return ADE20K_HEAD_CLASSES[:num_classes]


def _check_num_classes(num_classes):
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int)
            or not 2 <= num_classes <= len(ADE20K_HEAD_CLASSES)):
        raise ValueError(f'num_classes must be an integer in [2, {len(ADE20K_HEAD_CLASSES)}], '
                         f'got {num_classes!r}')


def _class_colours(num_classes, rng):
    # Well separated mean colours (one per label 0..K) so classes are learnable from colour.
    return rng.integers(20, 236, size=(num_classes + 1, 3)).astype(np.float32)


def _sample(rng, num_classes, colours, min_size, max_size):
    """One (image uint8 (H, W, 3), label uint8 (H, W)) pair."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    label = np.full((height, width), rng.integers(1, num_classes + 1), dtype=np.uint8)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    for _ in range(int(rng.integers(3, 8))):
        # label 0 ("other") appears with low probability, as unlabelled regions in ADE20K
        cls = 0 if rng.random() < 0.1 else int(rng.integers(1, num_classes + 1))
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(0.08, 0.35) * height
        rx = rng.uniform(0.08, 0.35) * width
        if rng.random() < 0.5:
            mask = (np.abs(rows - cy) <= ry) & (np.abs(cols - cx) <= rx)
        else:
            mask = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
        label[mask] = cls
    image = colours[label] + rng.normal(0.0, 12.0, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(out_dir, num_train=8, num_val=4, num_classes=6, min_size=64, max_size=128,
             seed=0):
    """Write a synthetic ADE20K-format set under ``out_dir``; returns the file counts per split.

    Args:
        out_dir (str): root, used as ``data_root`` of an ``ADE20KDataset``.
        num_train / num_val (int): images per split (>= 1).
        num_classes (int): K, labels 1..K (+ 0 = ignored "other"); 2 <= K <= 16.
        min_size / max_size (int): inclusive range of image heights and widths (>= 8).
        seed (int): the output is a function of the arguments only.
    """
    from PIL import Image  # Pillow ships with mmcv/mmengine's deps; keep module import light

    _check_num_classes(num_classes)
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    if not (isinstance(min_size, int) and isinstance(max_size, int) and 8 <= min_size <= max_size):
        raise ValueError(f'need integers 8 <= min_size <= max_size, got min_size={min_size!r}, '
                         f'max_size={max_size!r}')
    rng = np.random.default_rng(seed)
    colours = _class_colours(num_classes, rng)
    counts = {}
    for split, count in zip(SPLITS, (num_train, num_val)):
        img_dir = osp.join(out_dir, 'images', split)
        ann_dir = osp.join(out_dir, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(count):
            image, label = _sample(rng, num_classes, colours, min_size, max_size)
            stem = f'ADE_synthetic_{split}_{index:06d}'
            # ADE20KDataset fixes the suffixes: .jpg images, .png labels (lossless)
            Image.fromarray(image).save(osp.join(img_dir, stem + '.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))
        counts[split] = count
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output root (the config\'s data_root)')
    parser.add_argument('--num-train', type=int, default=8)
    parser.add_argument('--num-val', type=int, default=4)
    parser.add_argument('--num-classes', type=int, default=6)
    parser.add_argument('--min-size', type=int, default=64)
    parser.add_argument('--max-size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    counts = generate(args.out, args.num_train, args.num_val, args.num_classes, args.min_size,
                      args.max_size, args.seed)
    print(f'wrote {counts["training"]} training and {counts["validation"]} validation images '
          f'({args.num_classes} classes: {list(class_names(args.num_classes))}) to {args.out}')


if __name__ == '__main__':
    main()
