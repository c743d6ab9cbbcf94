"""Export the tensor part of an mmdet detector or mmseg segmentor config to ONNX.

    python tools/deployment/export_onnx.py configs/faster_rcnn_r50_fpn_dlu.py \
        --checkpoint work_dirs/faster_rcnn_r50_fpn_dlu/epoch_12.pth --shape 800 1216 \
        --out faster_rcnn_dlu.onnx --dynamic --verify
    python tools/deployment/export_onnx.py configs/upernet_r50_512x512_160k_ade20k_dlu.py \
        --shape 512 512 --out upernet_dlu.onnx --verify

What is exported (mmdeploy's "tensor" mode: no pre-processing, no NMS, no post-processing):
  * mmdet: backbone + neck + the dense heads' raw maps, for an input image (N, 3, H, W) already
    normalised and padded to a multiple of 32: outputs ``neck_<i>`` (the FPN levels),
    ``rpn_cls_<i>`` / ``rpn_bbox_<i>`` (two-stage) or ``cls_<i>`` / ``bbox_<i>`` (one-stage), and
    ``semantic`` (Panoptic FPN's semantic-head logits). RoI heads run on NMS-ed proposals through
    RoIAlign, which is not a standard ONNX operator; mmdeploy adds them with its own plugins.
  * mmseg: the segmentor's logits ``seg_logits`` (N, num_classes, H/4, W/4) (UPerNet,
    SegFormer, Semantic FPN, DeepLabV3+).
  * YOLOv3: ``neck_<i>`` and the head's raw prediction maps ``pred_<i>``.
  * MaskFormer / Mask2Former (mmdet panoptic and mmseg): backbone + pixel decoder: ``mask_feature``
    (N, C, H/4, W/4, where the decoder's upsampler works) and the decoder's multi-scale
    features ``memory_<i>``; the transformer decoder's queries and the mask/class post-processing
    are not exported. MaskFormer's COCO decoder (a DETR encoder: TransformerEncoderPixelDecoder)
    exports at a fixed shape only: its padding mask is built from Python sizes.
Every dlu_mm op is lowered to standard ONNX operators (the lowering beside each op in
dlu_mm.ops; docs/deployment.md); the graph has no custom domain. ``--verify`` runs the graph in
onnxruntime on a random image of the shape (with ``--dynamic`` also on one of batch + 1 and
shape + (32, 64)) and prints, per output, the max abs error against PyTorch; it exits with status
1 above the printed tolerance.
"""
import argparse
import os.path as osp
import sys
import time
import warnings

import torch
import torch.nn as nn

MIN_OPSET = 16  # GridSample (DLU, DySample, LDA-AQU) is opset 16


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a detector / segmentor to ONNX')
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('--checkpoint', help='weights to load (default: the init weights)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), required=True,
                        help='input image size, multiples of 32')
    parser.add_argument('--out', required=True, help='.onnx file to write')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch on a random image')
    parser.add_argument('--opset', type=int, default=17, help=f'ONNX opset (>= {MIN_OPSET})')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width (else the graph is fixed to --shape)')
    parser.add_argument('--exporter', choices=('torchscript', 'dynamo'), default='torchscript',
                        help='torch.onnx exporter (dynamo: torch >= 2.5 and onnxscript)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the traced input')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='--verify fails above tolerance * max(1, max |PyTorch output|)')
    args = parser.parse_args(argv)
    height, width = args.shape
    if height < 32 or width < 32 or height % 32 or width % 32:
        parser.error(f'--shape must be two multiples of 32 (the backbone stride; mmdet and mmseg '
                     f'pad inputs to it), got {height} {width}')
    if args.opset < MIN_OPSET:
        parser.error(f'--opset must be >= {MIN_OPSET} (GridSample), got {args.opset}')
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    return args


class TensorGraph(nn.Module):
    """The exportable, tensor-only part of a detector or segmentor (see module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.is_segmentor = hasattr(model, 'decode_head')
        head = getattr(model, 'decode_head', None) or getattr(model, 'panoptic_head', None)
        self.pixel_decoder = getattr(head, 'pixel_decoder', None)

    def forward(self, image):
        model = self.model
        if self.pixel_decoder is not None:
            mask_feature, memory = self.pixel_decoder(*self._decoder_args(
                model.extract_feat(image), image))
            memory = list(memory) if isinstance(memory, (list, tuple)) else [memory]
            return (mask_feature, *memory)
        if self.is_segmentor:
            return (model._forward(image), )
        feats = model.extract_feat(image)
        outputs = list(feats)
        _, head = self.dense_head()
        if head is not None:
            head_outputs = head(feats)
            if len(head_outputs) == 1:  # YOLOv3's head: one prediction map per level
                outputs += list(head_outputs[0])
            else:
                cls_scores, bbox_preds = head_outputs[:2]
                outputs += list(cls_scores) + list(bbox_preds)
        if getattr(model, 'semantic_head', None) is not None:
            outputs.append(model.semantic_head(feats)['seg_preds'])
        return tuple(outputs)

    def dense_head(self):
        """(output-name prefix, head): a two-stage detector's RPN, else a one-stage bbox_head."""
        for prefix, name in (('rpn_', 'rpn_head'), ('', 'bbox_head')):
            head = getattr(self.model, name, None)
            if head is not None:
                return prefix, head
        return '', None

    def _decoder_args(self, feats, image):
        # MaskFormer's decoders also take image metas (the DETR encoder's padding mask: none
        # here, every image fills the batch); Mask2Former's does not
        if 'batch_img_metas' not in self.pixel_decoder.forward.__code__.co_varnames:
            return (feats, )
        shape = tuple(image.shape[-2:])
        return feats, [dict(batch_input_shape=shape, img_shape=shape)] * image.shape[0]

    def output_names(self, num_outputs):
        model = self.model
        if self.pixel_decoder is not None:
            return ['mask_feature'] + [f'memory_{i}' for i in range(num_outputs - 1)]
        if self.is_segmentor:
            return ['seg_logits']
        # FPNs have num_outs; YOLOX's / RTMDet's PAFPN one output per input level
        levels = range(getattr(model.neck, 'num_outs', None) or len(model.neck.in_channels))
        names = [f'neck_{i}' for i in levels]
        prefix, head = self.dense_head()
        if head is not None and num_outputs == 2 * len(names):  # YOLOv3: one map per level
            names += [f'{prefix}pred_{i}' for i in levels]
        elif head is not None:
            names += [f'{prefix}cls_{i}' for i in levels] + [f'{prefix}bbox_{i}' for i in levels]
        if getattr(model, 'semantic_head', None) is not None:
            names.append('semantic')
        return names


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two pooling matrices: P_h @ x @ P_w^T.

    The exporters cannot lower adaptive pooling to bins that do not divide the input (UPerNet's
    PPM pools to 1, 2, 3 and 6 bins) or whose input size is dynamic. Bin i of an axis of size L
    averages [floor(i*L/B), ceil((i+1)*L/B)), exactly as adaptive pooling; the matrices are
    built from the traced size, so the graph stays dynamic (Range / Less / Div / MatMul).
    """

    def __init__(self, output_size):
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size, ) * 2
        if any(bins is None for bins in size):
            raise ValueError(f'output_size None (keep the input size) is not supported, got '
                             f'{output_size!r}')
        self.output_size = tuple(int(bins) for bins in size)

    @staticmethod
    def _matrix(length, bins, like):
        index = torch.arange(bins, device=like.device)
        starts = torch.div(index * length, bins, rounding_mode='floor')
        ends = -torch.div(-(index + 1) * length, bins, rounding_mode='floor')  # ceil
        positions = torch.arange(length, device=like.device)
        inside = ((positions[None, :] >= starts[:, None]) &
                  (positions[None, :] < ends[:, None])).to(like.dtype)  # (bins, length)
        return inside / inside.sum(dim=1, keepdim=True)

    def forward(self, x):
        rows = self._matrix(x.shape[-2], self.output_size[0], x)
        cols = self._matrix(x.shape[-1], self.output_size[1], x)
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def make_exportable(module):
    """Swap every nn.AdaptiveAvgPool2d of ``module`` (in place); returns how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, ExportableAdaptiveAvgPool2d(child.output_size))
            swapped += 1
        else:
            swapped += make_exportable(child)
    return swapped


def build_model(config, checkpoint=None):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)  # runs the config's custom_imports (dlu_mm.det / dlu_mm.seg)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        raise ValueError(f'config default_scope must be mmdet or mmseg, got {scope!r}')
    backbone = cfg.model.get('backbone', {})
    if checkpoint is not None or backbone.get('init_cfg') is not None:
        backbone['init_cfg'] = None  # no pretrained download: the checkpoint or random weights
    if cfg.model.get('pretrained') is not None:
        cfg.model.pretrained = None
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    else:
        torch.manual_seed(0)
        model.init_weights()
    return model.eval()


def export(graph, image, out, opset=17, dynamic=False, exporter='torchscript'):
    """torch.onnx.export of ``graph`` on ``image``; returns the output names."""
    with torch.no_grad():  # how many outputs (a decoder's multi-scale features, YOLOv3's maps)
        num_outputs = len(graph(image))
    names = graph.output_names(num_outputs)
    dynamo_ok = 'dynamo' in torch.onnx.export.__code__.co_varnames
    if exporter == 'dynamo':
        if not dynamo_ok:
            raise RuntimeError(f'--exporter dynamo needs torch >= 2.5 (this is torch '
                               f'{torch.__version__}); use --exporter torchscript')
        from torch.export import Dim
        shapes = ({0: Dim('batch', max=256), 2: 32 * Dim('h32', max=256),
                   3: 32 * Dim('w32', max=256)}, ) if dynamic else None
        torch.onnx.export(graph, (image, ), out, dynamo=True, opset_version=opset,
                          input_names=['image'], output_names=names, dynamic_shapes=shapes)
        return names
    axes = None
    if dynamic:
        axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}}
        axes.update({name: {0: 'batch', 2: f'{name}_h', 3: f'{name}_w'} for name in names})
    kwargs = dict(dynamo=False) if dynamo_ok else {}
    torch.onnx.export(graph, (image, ), out, opset_version=opset, input_names=['image'],
                      output_names=names, dynamic_axes=axes, do_constant_folding=True, **kwargs)
    return names


def check_standard_ops(path):
    """Raise if the graph has a node outside the standard ONNX domain (a dlu_mm:: op, say)."""
    import onnx
    model = onnx.load(path)
    custom = sorted({f'{node.domain}::{node.op_type}' for node in model.graph.node
                     if node.domain not in ('', 'ai.onnx')})
    if custom:
        raise RuntimeError(f'{path} has non-standard ONNX nodes: {custom}')
    return model


def verify(graph, path, images, names, tolerance):
    """Max abs error per image and output of onnxruntime vs PyTorch; returns (rows, ok)."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    rows, ok = [], True
    for image in images:
        with torch.no_grad():
            expected = graph(image)
        got = session.run(None, {'image': image.numpy()})
        for name, ref, out in zip(names, expected, got):
            ref = ref.numpy()
            if ref.shape != out.shape:
                rows.append((name, tuple(ref.shape), float('inf'), 0.0, f'shape {out.shape}'))
                ok = False
                continue
            error = float(abs(ref - out).max()) if ref.size else 0.0
            limit = tolerance * max(1.0, float(abs(ref).max()) if ref.size else 0.0)
            rows.append((name, tuple(ref.shape), error, limit, 'ok' if error <= limit else 'FAIL'))
            ok &= error <= limit
    return rows, ok


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config not found: {args.config!r}')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint not found: {args.checkpoint!r}')
    # the traces warn about every Python int taken from a shape; the checks below are what count
    warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
    warnings.filterwarnings('ignore', category=UserWarning, module=r'torch\.onnx')
    model = build_model(args.config, args.checkpoint)
    make_exportable(model)
    graph = TensorGraph(model).eval()
    if args.dynamic and hasattr(graph.pixel_decoder, 'encoder_in_proj'):
        sys.exit(f'error: --dynamic: {type(graph.pixel_decoder).__name__} (MaskFormer\'s DETR '
                 'encoder) builds its padding mask from the image sizes as Python numbers, so '
                 'its graph holds only the traced size; export it with a fixed --shape')
    image = torch.randn(args.batch, 3, *args.shape)
    start = time.perf_counter()
    with torch.no_grad():
        try:
            names = export(graph, image, args.out, args.opset, args.dynamic, args.exporter)
        except RuntimeError as error:
            if '--exporter' in str(error):
                sys.exit(f'error: {error}')
            raise
    seconds = time.perf_counter() - start
    onnx_model = check_standard_ops(args.out)
    print(f'exported {args.config} -> {args.out} ({args.exporter}, opset {args.opset}, '
          f'{"dynamic" if args.dynamic else "static"} shape, {len(onnx_model.graph.node)} nodes, '
          f'{seconds:.1f} s)')
    if not args.verify:
        return 0
    images = [image]
    if args.dynamic:  # a dynamic graph is also checked at another batch size and shape
        height, width = args.shape
        images.append(torch.randn(args.batch + 1, 3, height + 32, width + 64))
    rows, ok = verify(graph, args.out, images, names, args.tolerance)
    print(f'{"output":<12} {"shape":<22} {"max abs err":>12} {"tolerance":>10}')
    for name, shape, error, limit, status in rows:
        print(f'{name:<12} {str(shape):<22} {error:>12.3e} {limit:>10.1e} {status}')
    if not ok:
        print('verify: FAILED (onnxruntime differs from PyTorch above the tolerance)')
        return 1
    print(f'verify: ok ({len(rows)} output checks)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
