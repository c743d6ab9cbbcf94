"""The synthetic COCO set (:mod:`dlu_mm.datasets.synthetic_coco`) in the YOLO format ultralytics reads.

Writes::

    OUT/images/{train,val}/*.png
    OUT/labels/{train,val}/*.txt     one object a line: class x_centre y_centre width height
                                     (normalised to the image size), then with ``--segments`` the
                                     instance polygon x1 y1 x2 y2 ... (normalised) instead of the box
    OUT/data.yaml                    path, train, val and the class names, for ``YOLO.train(data=)``

Images, boxes and polygons are those of the COCO generator (same arguments -> same set); class
indices are the thing classes in COCO id order (rectangle 0, ellipse 1, triangle 2). Boxes are
the rasterised masks' extents, as in the COCO annotations.

CLI: ``python -m dlu_mm.datasets.synthetic_yolo --out data/synthetic_yolo``
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile

from . import synthetic_coco

SPLITS = {'train': 'train2017', 'val': 'val2017'}  # YOLO split -> COCO split it comes from


def _label_lines(annotations, image, segments):
    width, height = image['width'], image['height']
    class_index = {cat_id: index for index, cat_id in enumerate(synthetic_coco.THING_IDS)}
    lines = []
    for ann in annotations:
        cls = class_index[ann['category_id']]
        if segments:
            polygon = ann['segmentation'][0]
            coords = [min(max(v / (width if i % 2 == 0 else height), 0.0), 1.0)
                      for i, v in enumerate(polygon)]
        else:
            x, y, w, h = ann['bbox']
            coords = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
        lines.append(' '.join([str(cls)] + [f'{v:.6f}' for v in coords]))
    return lines


def generate(out_dir, num_train=64, num_val=16, min_size=96, max_size=160, max_objects=4,
             seed=0, segments=False):
    """Write the YOLO-format set under ``out_dir``; returns the path of its ``data.yaml``.

    The arguments other than ``segments`` are those of :func:`synthetic_coco.generate` (checked
    there); ``segments=True`` writes polygon labels (for -seg models) instead of boxes.
    """
    if not isinstance(segments, bool):
        raise TypeError(f'segments must be a bool, got {segments!r}')
    out_dir = osp.abspath(out_dir)
    with tempfile.TemporaryDirectory() as coco_dir:
        synthetic_coco.generate(coco_dir, num_train, num_val, min_size, max_size, max_objects,
                                seed)
        for split, coco_split in SPLITS.items():
            with open(osp.join(coco_dir, 'annotations', f'instances_{coco_split}.json')) as f:
                coco = json.load(f)
            by_image = {image['id']: [] for image in coco['images']}
            for ann in coco['annotations']:
                by_image[ann['image_id']].append(ann)
            image_dir = osp.join(out_dir, 'images', split)
            label_dir = osp.join(out_dir, 'labels', split)
            for d in (image_dir, label_dir):
                os.makedirs(d, exist_ok=True)
            for image in coco['images']:
                shutil.copyfile(osp.join(coco_dir, coco_split, image['file_name']),
                                osp.join(image_dir, image['file_name']))
                stem = osp.splitext(image['file_name'])[0]
                lines = _label_lines(by_image[image['id']], image, segments)
                with open(osp.join(label_dir, stem + '.txt'), 'w') as f:
                    f.write(''.join(line + '\n' for line in lines))
    data_yaml = osp.join(out_dir, 'data.yaml')
    names = ''.join(f'  {index}: {name}\n'
                    for index, name in enumerate(synthetic_coco.THING_CLASSES))
    with open(data_yaml, 'w') as f:
        f.write(f'# synthetic shapes (dlu_mm.datasets.synthetic_yolo, seed {seed})\n'
                f'path: {out_dir}\ntrain: images/train\nval: images/val\nnames:\n{names}')
    return data_yaml


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    synthetic_coco.add_generation_arguments(parser, 'data/synthetic_yolo')
    parser.add_argument('--segments', action='store_true',
                        help='polygon labels (for -seg models) instead of boxes')
    args = parser.parse_args(argv)
    data_yaml = generate(args.out, args.num_train, args.num_val, args.min_size, args.max_size,
                         args.max_objects, args.seed, args.segments)
    print(f'synthetic YOLO set written to {args.out} (data: {data_yaml})')


if __name__ == '__main__':
    main()
