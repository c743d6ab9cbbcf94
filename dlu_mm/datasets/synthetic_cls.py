"""Synthetic ImageNet-style classification data for tests and the DDF-ResNet demo config.

Writes the layout mmpretrain's ``CustomDataset`` (and ``ImageNet``) read::

    OUT/train/<class>/<class>_<index>.png     OUT/meta/train.txt   ("<class>/<file> <label>")
    OUT/val/<class>/<class>_<index>.png       OUT/meta/val.txt
                                              OUT/meta/classes.txt (one class name a line)

so a config can use either the folder layout (``data_prefix='train'``, no ann_file) or the
annotation files (``ann_file='meta/train.txt'``). Class ``c`` is a stripe pattern of its own
orientation and frequency over a class colour, with a random phase, colour jitter and noise per
image, so a small network can learn it. Images are PNG (lossless). The output depends only on
the arguments (numpy ``default_rng(seed)``).

CLI: ``python -m dlu_mm.datasets.synthetic_cls --out data/synthetic_cls``
"""
import argparse
import os
import os.path as osp

import numpy as np

SPLITS = ('train', 'val')


def class_names(num_classes):
    """Folder / class names of a synthetic set with ``num_classes`` classes."""
    _check_positive('num_classes', num_classes, 2)
    return tuple(f'class_{index:02d}' for index in range(num_classes))


def _check_positive(name, value, min_value=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < min_value:
        raise ValueError(f'{name} must be an integer >= {min_value}, got {value!r}')
    return value


def _sample(rng, label, num_classes, colours, size):
    """One (size, size, 3) uint8 image of class ``label``."""
    angle = np.pi * label / num_classes  # orientation distinguishes the classes
    frequency = 2 * np.pi * (2 + label % 3) / size
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(frequency * (np.cos(angle) * cols + np.sin(angle) * rows) + phase)
    colour = colours[label] + rng.normal(0.0, 10.0, size=3)
    image = colour + 60.0 * stripes[..., None] + rng.normal(0.0, 8.0, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(out_dir, num_classes=4, num_train_per_class=4, num_val_per_class=2, size=32,
             seed=0):
    """Write a synthetic classification set under ``out_dir``; returns the counts per split.

    Args:
        out_dir (str): root, used as ``data_root`` of a ``CustomDataset``.
        num_classes (int): K >= 2 classes, labels 0..K-1 in :func:`class_names` order.
        num_train_per_class / num_val_per_class (int): images per class and split (>= 1).
        size (int): image height = width (>= 8).
        seed (int): the output is a function of the arguments only.
    """
    from PIL import Image  # Pillow ships with mmcv/mmengine's deps; keep module import light

    names = class_names(num_classes)
    _check_positive('num_train_per_class', num_train_per_class)
    _check_positive('num_val_per_class', num_val_per_class)
    _check_positive('size', size, 8)
    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 196, size=(num_classes, 3)).astype(np.float32)
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    with open(osp.join(out_dir, 'meta', 'classes.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    counts = {}
    for split, per_class in zip(SPLITS, (num_train_per_class, num_val_per_class)):
        lines = []
        for label, name in enumerate(names):
            class_dir = osp.join(out_dir, split, name)
            os.makedirs(class_dir, exist_ok=True)
            for index in range(per_class):
                filename = f'{name}_{index:05d}.png'
                image = _sample(rng, label, num_classes, colours, size)
                Image.fromarray(image).save(osp.join(class_dir, filename))
                lines.append(f'{name}/{filename} {label}')
        with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        counts[split] = len(lines)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output root (the config\'s data_root)')
    parser.add_argument('--num-classes', type=int, default=4)
    parser.add_argument('--num-train-per-class', type=int, default=4)
    parser.add_argument('--num-val-per-class', type=int, default=2)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    counts = generate(args.out, args.num_classes, args.num_train_per_class,
                      args.num_val_per_class, args.size, args.seed)
    print(f'wrote {counts["train"]} training and {counts["val"]} validation images '
          f'({args.num_classes} classes) to {args.out}')


if __name__ == '__main__':
    main()
