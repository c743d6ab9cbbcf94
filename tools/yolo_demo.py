"""Train, validate and export an ultralytics YOLO model with a dlu_mm upsampler, offline, on CPU.

    python tools/yolo_demo.py                                   # YOLOv8n with DLU, 1 epoch
    python tools/yolo_demo.py --model configs/yolo/yolo11n-fade.yaml --epochs 3

Writes the synthetic YOLO set (dlu_mm.datasets.synthetic_yolo) unless it exists, trains with
``deterministic=True`` and ``plots=False``, validates ``best.pt`` (prints mAP50 and mAP50-95),
exports it with ultralytics' own ONNX exporter and checks onnxruntime against PyTorch. Needs
torch, dlu_mm and ultralytics (AGPL-3.0, imported at run time only); ``bash tools/dev.sh
yolo-demo`` runs it in the project's yolo environment.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile

# before ultralytics is imported: no connectivity probe, settings outside the home directory
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('YOLO_CONFIG_DIR', osp.join(tempfile.gettempdir(), 'dlu_mm_yolo_settings'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='configs/yolo/yolov8n-dlu.yaml', help='model YAML')
    parser.add_argument('--data-dir', default='data/synthetic_yolo',
                        help='synthetic YOLO set (generated here unless it has a data.yaml)')
    parser.add_argument('--work-dir', default='work_dirs/yolo_demo')
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--imgsz', type=int, default=128)
    parser.add_argument('--batch', type=int, default=8)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch
    from ultralytics import YOLO

    import dlu_mm.integrations.ultralytics  # noqa: F401  (registers the YAML layer names)
    from dlu_mm.datasets import synthetic_yolo

    data = osp.join(args.data_dir, 'data.yaml')
    if not osp.isfile(data):
        data = synthetic_yolo.generate(args.data_dir)
        print(f'wrote the synthetic YOLO set to {args.data_dir}')
    common = dict(imgsz=args.imgsz, batch=args.batch, workers=0, device='cpu', plots=False,
                  project=osp.abspath(args.work_dir), exist_ok=True)
    model = YOLO(args.model)
    model.train(data=data, epochs=args.epochs, deterministic=True, seed=0, amp=False,
                name='train', **common)
    best = osp.join(args.work_dir, 'train', 'weights', 'best.pt')
    metrics = YOLO(best).val(data=data, name='val', **common)
    onnx_path = YOLO(best).export(format='onnx', imgsz=args.imgsz, device='cpu')

    import onnx
    import onnxruntime
    domains = sorted({node.domain or 'ai.onnx' for node in onnx.load(onnx_path).graph.node})
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    with torch.no_grad():
        expected = YOLO(best).model.eval()(x)[0].numpy()
    session = onnxruntime.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    relative = float(np.abs(actual - expected).max() / np.abs(expected).max())
    print(f'\n| model | epochs | mAP50 | mAP50-95 | ONNX operator domains | ONNX vs PyTorch rel. error |\n'
          f'|---|---|---|---|---|---|\n'
          f'| {osp.basename(args.model)} | {args.epochs} | {metrics.box.map50:.4f} | '
          f'{metrics.box.map:.4f} | {", ".join(domains)} | {relative:.2e} |')
    print(f'weights: {best}\nonnx: {onnx_path}')
    return 0 if domains == ['ai.onnx'] and relative < 1e-4 else 1


if __name__ == '__main__':
    sys.exit(main())
