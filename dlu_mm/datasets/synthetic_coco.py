"""Synthetic COCO-format detection / instance / panoptic data for tests and the demo configs.

Writes the directory layout mmdet's ``CocoDataset`` and ``CocoPanopticDataset`` read::

    OUT/train2017/*.png    OUT/val2017/*.png
    OUT/annotations/instances_{train,val}2017.json      boxes + polygon instance masks
    OUT/annotations/panoptic_{train,val}2017.json       COCO panoptic segments_info
    OUT/annotations/panoptic_{train,val}2017/*.png      panoptic PNGs (id = R + 256 G + 256^2 B)

Each image is a background of two "stuff" regions (sky above a wavy horizon, ground below) with
a few non-overlapping "thing" shapes (rectangle, ellipse, triangle), each class with its own
mean colour plus noise, so a small detector trained from scratch can learn it. Shapes never
overlap, so every instance's polygon is exactly its visible mask. Boxes and areas are measured on
the rasterised masks (the same pixels the panoptic PNG holds). Image sizes vary and are often
odd. The output depends only on the arguments (numpy ``default_rng(seed)``).

CLI: ``python -m dlu_mm.datasets.synthetic_coco --out data/synthetic_coco``
"""
import argparse
import json
import os
import os.path as osp

import numpy as np

THING_CLASSES = ('rectangle', 'ellipse', 'triangle')
STUFF_CLASSES = ('sky', 'ground')
# COCO category ids are not contiguous; keep that property so code relying on 0..K-1 fails here
THING_IDS = (1, 3, 5)
STUFF_IDS = (101, 102)
SPLITS = ('train2017', 'val2017')

_THING_COLOURS = np.array([[220, 40, 40], [40, 200, 60], [60, 80, 230]], np.float32)
_STUFF_COLOURS = np.array([[150, 190, 220], [120, 100, 70]], np.float32)


def categories():
    """COCO ``categories`` entries (instances json uses the thing ones, panoptic json all)."""
    things = [dict(id=i, name=n, supercategory='shape', isthing=1)
              for i, n in zip(THING_IDS, THING_CLASSES)]
    stuff = [dict(id=i, name=n, supercategory='background', isthing=0)
             for i, n in zip(STUFF_IDS, STUFF_CLASSES)]
    return things + stuff


def _shape_polygon(kind, box, rng):
    """Vertices [(x, y), ...] of a shape inscribed in box (x0, y0, x1, y1) (continuous coords)."""
    x0, y0, x1, y1 = box
    if kind == 0:  # rectangle
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if kind == 1:  # ellipse as a 24-gon
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))
    apex = x0 + rng.uniform(0.2, 0.8) * (x1 - x0)  # triangle
    return [(apex, y0), (x1, y1), (x0, y1)]


def _flatten(polygon):
    return [round(float(v), 2) for point in polygon for v in point]


def _rasterise(polygon, height, width):
    # pycocotools' own rasteriser, so the masks equal what COCO tools decode from the polygons
    from pycocotools import mask as mask_utils
    rle = mask_utils.frPyObjects([_flatten(polygon)], height, width)
    return mask_utils.decode(rle)[..., 0].astype(bool)


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _sample(rng, min_size, max_size, max_objects):
    """One image: (image uint8 (H, W, 3), segments [(mask, category_id, polygon or None)])."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    # wavy horizon: sky above, ground below
    horizon = height * rng.uniform(0.3, 0.6) + height * 0.08 * np.sin(
        np.arange(width) / width * 2 * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 2 * np.pi))
    sky = np.arange(height)[:, None] < horizon[None, :]
    image = np.where(sky[..., None], _STUFF_COLOURS[0], _STUFF_COLOURS[1])
    occupied = np.zeros((height, width), bool)
    things = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            w = int(rng.integers(max(8, width // 8), max(9, width // 2)))
            h = int(rng.integers(max(8, height // 8), max(9, height // 2)))
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            # one pixel of margin so rasterised shapes never touch
            if not occupied[max(0, y0 - 1):y0 + h + 2, max(0, x0 - 1):x0 + w + 2].any():
                break
        else:
            continue
        kind = int(rng.integers(len(THING_CLASSES)))
        polygon = _shape_polygon(kind, (x0, y0, x0 + w, y0 + h), rng)
        mask = _rasterise(polygon, height, width)
        if mask.sum() < 16:
            continue
        occupied[y0:y0 + h, x0:x0 + w] = True
        image[mask] = _THING_COLOURS[kind] + rng.normal(0, 12, 3)
        things.append((mask, THING_IDS[kind], polygon))
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    thing_union = np.zeros((height, width), bool)
    for mask, _, _ in things:
        thing_union |= mask
    segments = list(things)
    for stuff_id, region in zip(STUFF_IDS, (sky, ~sky)):
        region = region & ~thing_union
        if region.any():
            segments.append((region, stuff_id, None))
    return image, segments


def generate(out_dir, num_train=64, num_val=16, min_size=96, max_size=160, max_objects=4,
             seed=0):
    """Write the synthetic COCO set under ``out_dir``; returns ``out_dir``.

    Same arguments -> byte-identical files. ``min_size``/``max_size`` bound image height and
    width; every image has 1..``max_objects`` thing instances.
    """
    from PIL import Image
    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 1),
                             ('min_size', min_size, 32), ('max_objects', max_objects, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < min_size:
        raise ValueError(f'max_size must be an integer >= min_size ({min_size}), got {max_size!r}')
    rng = np.random.default_rng(seed)
    ann_dir = osp.join(out_dir, 'annotations')
    for split, count in zip(SPLITS, (num_train, num_val)):
        img_dir, pan_dir = osp.join(out_dir, split), osp.join(ann_dir, f'panoptic_{split}')
        for d in (img_dir, pan_dir):
            os.makedirs(d, exist_ok=True)
        images, instances, panoptic = [], [], []
        for index in range(count):
            image_id = index + 1
            image, segments = _sample(rng, min_size, max_size, max_objects)
            height, width = image.shape[:2]
            file_name = f'{image_id:06d}.png'
            Image.fromarray(image).save(osp.join(img_dir, file_name))
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
            pan = np.zeros((height, width), np.int64)  # 0 = unlabelled
            segments_info = []
            for seg_index, (mask, category_id, polygon) in enumerate(segments):
                segment_id = image_id * 1000 + seg_index + 1
                pan[mask] = segment_id
                area, bbox = int(mask.sum()), _bbox(mask)
                segments_info.append(dict(id=segment_id, category_id=category_id, iscrowd=0,
                                          bbox=bbox, area=area))
                if polygon is not None:
                    instances.append(dict(id=len(instances) + 1, image_id=image_id,
                                          category_id=category_id,
                                          segmentation=[_flatten(polygon)],
                                          area=area, bbox=bbox, iscrowd=0))
            rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536], -1).astype(np.uint8)
            Image.fromarray(rgb).save(osp.join(pan_dir, file_name))
            panoptic.append(dict(image_id=image_id, file_name=file_name,
                                 segments_info=segments_info))
        cats = categories()
        _dump(osp.join(ann_dir, f'instances_{split}.json'),
              dict(images=images, annotations=instances,
                   categories=[c for c in cats if c['isthing']]))
        _dump(osp.join(ann_dir, f'panoptic_{split}.json'),
              dict(images=images, annotations=panoptic, categories=cats))
    return out_dir


def _dump(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f)


def exists(out_dir):
    """True when ``out_dir`` holds a complete generated set (annotation files of both splits)."""
    return all(osp.isfile(osp.join(out_dir, 'annotations', f'{kind}_{split}.json'))
               for kind in ('instances', 'panoptic') for split in SPLITS)


def add_generation_arguments(parser, example_out):
    """The command-line options of the generator (shared by its YOLO-format writer)."""
    parser.add_argument('--out', required=True, help=f'output directory, e.g. {example_out}')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--min-size', type=int, default=96)
    parser.add_argument('--max-size', type=int, default=160)
    parser.add_argument('--max-objects', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    return parser


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_generation_arguments(parser, 'data/synthetic_coco')
    args = parser.parse_args(argv)
    generate(args.out, args.num_train, args.num_val, args.min_size, args.max_size,
             args.max_objects, args.seed)
    print(f'synthetic COCO set written to {args.out}')


if __name__ == '__main__':
    main()
