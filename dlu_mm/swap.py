"""Swap a learnable upsampler into any mmdet / mmseg config: ``swap_upsampler(cfg, upsample_cfg)``.

The function walks ``cfg.model`` for the modules that upsample (every ``neck``, ``decode_head``,
``pixel_decoder`` and ``mask_head`` entry, at any depth: ``model.detector.neck`` in tracking
configs, lists of necks, cascaded decode heads or mask heads), switches each supported one to its
dlu_mm class with ``upsample_cfg=<the new upsampler cfg>``, adds ``dlu_mm.det`` / ``dlu_mm.seg``
to ``custom_imports`` and leaves everything else of the config as it was.

Mask heads (``FCNMaskHead``: Mask R-CNN's 2x deconvolution, which CARAFE replaced) keep their
``scale_factor``; they have no finer map to guide FADE / SAPA, so with a guided upsampler they stay
stock and ``plan_swap`` lists them under ``kept``.

Importing this module needs mmengine only; mmdet / mmseg are imported by the tools that build the
models (``count_parameters``, ``tools/swap_upsampler.py``), so ``import dlu_mm`` stays light.
"""
import copy

import torch

#: (registry scope, stock type) -> (dlu_mm type, where, the package that registers it)
SWAPS = {
    ('mmdet', 'FPN'): ('UpsampleFPN', 'neck', 'dlu_mm.det'),
    ('mmdet', 'FPN_CARAFE'): ('UpsampleFPN', 'neck', 'dlu_mm.det'),
    ('mmdet', 'PAFPN'): ('UpsamplePAFPN', 'neck', 'dlu_mm.det'),
    ('mmdet', 'YOLOXPAFPN'): ('UpsampleYOLOXPAFPN', 'neck', 'dlu_mm.det'),
    ('mmdet', 'CSPNeXtPAFPN'): ('UpsampleCSPNeXtPAFPN', 'neck', 'dlu_mm.det'),
    ('mmdet', 'PixelDecoder'): ('UpsamplePixelDecoder', 'pixel_decoder', 'dlu_mm.det'),
    ('mmdet', 'MSDeformAttnPixelDecoder'): ('UpsampleMSDeformAttnPixelDecoder', 'pixel_decoder',
                                            'dlu_mm.det'),
    ('mmdet', 'TransformerEncoderPixelDecoder'): ('UpsampleTransformerEncoderPixelDecoder',
                                                  'pixel_decoder', 'dlu_mm.det'),
    ('mmdet', 'YOLOV3Neck'): ('UpsampleYOLOV3Neck', 'neck', 'dlu_mm.det'),
    ('mmdet', 'FCNMaskHead'): ('UpsampleFCNMaskHead', 'mask_head', 'dlu_mm.det'),
    ('mmseg', 'FPN'): ('UpsampleFPN', 'neck', 'dlu_mm.seg'),
    ('mmseg', 'UPerHead'): ('UpsampleUPerHead', 'head', 'dlu_mm.seg'),
    ('mmseg', 'SegformerHead'): ('UpsampleSegformerHead', 'head', 'dlu_mm.seg'),
    ('mmseg', 'FPNHead'): ('UpsampleFPNHead', 'head', 'dlu_mm.seg'),
    ('mmseg', 'DepthwiseSeparableASPPHead'): ('UpsampleDepthwiseSeparableASPPHead', 'head',
                                              'dlu_mm.seg'),
}
# a dlu_mm module already in the config only gets the new upsample_cfg
SWAPS.update({(scope, ours): (ours, where, package)
              for (scope, _), (ours, where, package) in list(SWAPS.items())})
#: the config keys whose values are searched, and the ``where`` each one is
WHERE_OF_KEY = {'neck': 'neck', 'decode_head': 'head', 'pixel_decoder': 'pixel_decoder',
                'mask_head': 'mask_head'}
WHERES = ('neck', 'head', 'pixel_decoder', 'mask_head')
# stock arguments that have no meaning in the dlu_mm class
_DROPPED_ARGS = {'FPN_CARAFE': ('order', )}


def supported_types():
    """``{where: sorted 'scope.Type' names}`` of the stock modules ``swap_upsampler`` knows."""
    table = {where: [] for where in WHERES}
    for (scope, stock), (ours, where, _) in SWAPS.items():
        if stock != ours:
            table[where].append(f'{scope}.{stock}')
    return {where: sorted(names) for where, names in table.items()}


def _scope_and_type(type_name, default_scope):
    if not isinstance(type_name, str):  # a class object in a Python-built config
        type_name = getattr(type_name, '__name__', repr(type_name))
    if '.' in type_name:
        scope, name = type_name.split('.', 1)
        return scope, name, True
    return default_scope, type_name, False


def find_upsampling_modules(cfg):
    """Every ``(path, where, module cfg)`` under ``cfg.model`` at a neck / decode_head /
    pixel_decoder key, supported or not (``path`` like ``'model.decode_head'``)."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                where = WHERE_OF_KEY.get(key)
                entries = value if isinstance(value, (list, tuple)) else [value]
                for index, entry in enumerate(entries):
                    sub = f'{path}.{key}' if len(entries) == 1 and not isinstance(
                        value, (list, tuple)) else f'{path}.{key}[{index}]'
                    if where and isinstance(entry, dict) and 'type' in entry:
                        found.append((sub, where, entry))
                    walk(entry, sub)
        elif isinstance(node, (list, tuple)):
            for index, entry in enumerate(node):
                walk(entry, f'{path}[{index}]')

    walk(cfg.get('model'), 'model')
    return found


def _default_scope(cfg):
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"swap_upsampler supports mmdet and mmseg configs (default_scope 'mmdet' "
                         f"or 'mmseg'), got default_scope={scope!r}")
    return scope


def _check_upsample_cfg(upsample_cfg):
    """Whether ``upsample_cfg`` is a guided upsampler (TypeError / ValueError when it is bad)."""
    if not isinstance(upsample_cfg, dict) or 'type' not in upsample_cfg:
        raise TypeError('upsample_cfg must be a dict with a type (an upsampler of '
                        f"dlu_mm.upsamplers.UPSAMPLERS, e.g. dict(type='DLU')), got "
                        f'{upsample_cfg!r}')
    from .upsamplers import is_guided
    return is_guided(dict(upsample_cfg))  # an unknown type -> ValueError listing the known ones


def swap_upsampler(cfg, upsample_cfg, where=None):
    """A copy of ``cfg`` (an mmengine ``Config``) whose upsampling modules use ``upsample_cfg``.

    Same arguments and errors as :func:`plan_swap`, which also returns what changed.
    """
    return plan_swap(cfg, upsample_cfg, where)[0]


def plan_swap(cfg, upsample_cfg, where=None):
    """``swap_upsampler`` that also says what it changed.

    Args:
        cfg: the config (mmdet or mmseg, any ``_base_`` already resolved by ``Config``).
        upsample_cfg: ``dict(type=<upsampler>, **its kwargs)``.
        where: ``None`` (every supported module found) or one of ``'neck'``, ``'head'``,
            ``'pixel_decoder'``, ``'mask_head'``.

    Returns:
        ``(new_cfg, changes, kept)``: ``changes`` lists ``(path, old type, new type)``, ``kept``
        lists ``(path, type, why)`` of supported modules left stock (a mask head with a guided
        upsampler).

    Raises:
        ValueError: nothing supported was found (the message names what was found and lists
            the supported types), or a bad ``where`` / ``upsample_cfg`` / scope.
    """
    guided = _check_upsample_cfg(upsample_cfg)
    if where is not None and where not in WHERES:
        raise ValueError(f'where must be None or one of {WHERES}, got {where!r}')
    new_cfg = copy.deepcopy(cfg)
    default_scope = _default_scope(new_cfg)
    found = find_upsampling_modules(new_cfg)
    changes, kept, packages = [], [], []
    for path, found_where, module in found:
        scope, name, prefixed = _scope_and_type(module['type'], default_scope)
        swap = SWAPS.get((scope, name))
        if swap is None or (where is not None and swap[1] != where):
            continue
        ours, module_where, package = swap
        new_upsample_cfg = copy.deepcopy(dict(upsample_cfg))
        if module_where == 'mask_head':
            if guided:
                kept.append((path, f'{scope}.{name}', f'{upsample_cfg["type"]} is guided and a '
                             'mask head has no finer map to guide it'))
                continue
            stock_upsample = module.get('upsample_cfg') or {}
            new_upsample_cfg.setdefault('scale_factor', stock_upsample.get('scale_factor', 2))
        for arg in _DROPPED_ARGS.get(name, ()):
            module.pop(arg, None)
        if name == 'FPN_CARAFE':
            module['carafe_style'] = True
        module['type'] = f'{scope}.{ours}' if prefixed else ours
        module['upsample_cfg'] = new_upsample_cfg
        changes.append((path, f'{scope}.{name}', module['type']))
        if package not in packages:
            packages.append(package)
    if not changes and kept:
        raise ValueError('nothing to swap: ' + '; '.join(f'{path} ({name}) stays stock: {why}'
                                                          for path, name, why in kept))
    if not changes:
        seen = ', '.join(f'{path}: {module["type"]}' for path, _, module in found) or 'none'
        listing = '; '.join(f'{w}: {", ".join(names)}' for w, names in supported_types().items())
        restriction = f' at {where!r}' if where else ''
        raise ValueError(f'no supported upsampling module{restriction} in this config (found '
                         f'{seen}); supported types: {listing}')
    imports = new_cfg.get('custom_imports') or dict(imports=[], allow_failed_imports=False)
    imports = dict(imports)
    listed = imports.get('imports', [])
    listed = [listed] if isinstance(listed, str) else list(listed)
    imports['imports'] = listed + [p for p in packages if p not in listed]
    imports.setdefault('allow_failed_imports', False)
    new_cfg.custom_imports = imports
    return new_cfg, changes, kept


def revert_sync_bn_cfg(node):
    """SyncBN / MMSyncBN -> BN in a model cfg, in place (both need a process group when built;
    the parameters are the same)."""
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        for value in node.values():
            revert_sync_bn_cfg(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            revert_sync_bn_cfg(value)


def without_pretrained(cfg):
    """Drop every 'Pretrained' init_cfg and ``pretrained=`` path of a model cfg (recursively,
    in place; returns it): ``init_weights`` then needs no download."""
    if isinstance(cfg, dict):
        if 'pretrained' in cfg:
            cfg['pretrained'] = None
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            without_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            without_pretrained(value)
    return cfg


#: proposals / candidates per image in ``forward_backward``'s runs (a stock two-stage detector
#: keeps 1000 RPN proposals, and its mask head then runs on all of them: minutes on a CPU)
SMOKE_MAX_PER_IMG = 32


def _cap_candidates(model, cap=SMOKE_MAX_PER_IMG):
    """Lower every ``max_per_img`` / ``nms_pre`` above ``cap`` in the heads' test configs."""
    for module in model.modules():
        cfg = getattr(module, 'test_cfg', None)
        if isinstance(cfg, dict):
            for key in ('max_per_img', 'nms_pre'):
                if isinstance(cfg.get(key), int) and cfg[key] > cap:
                    cfg[key] = cap


def forward_backward(model, scope, size=(64, 64), batch=2):
    """Forward + backward on random images: mmdet models in ``mode='tensor'`` (the head
    outputs, summed; at most ``SMOKE_MAX_PER_IMG`` proposals per image), mmseg models through
    ``loss`` with random labels (mmseg's Mask2Former head has no tensor mode). SyncBN becomes BN
    (no process group here). Returns the mmseg losses or the mmdet head outputs; RuntimeError
    when nothing in them requires grad.

    mmdet's data samples carry two ground-truth boxes (with masks) and two proposals per image,
    which some tensor modes read (single-stage instance segmentation computes its loss there,
    Fast R-CNN has no RPN). A tracking model runs its ``detector``, a semi-supervised one its
    ``student``; a video model without a tensor mode runs backbone + pixel decoder."""
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(model)
    _cap_candidates(model)
    model.train()
    h, w = size
    meta = dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
    channels = mean.numel() if torch.is_tensor(mean) else 3  # 6: change detection's image pairs
    inputs = torch.randn(batch, channels, h, w)
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        heads = model.decode_head
        head = heads[-1] if isinstance(heads, torch.nn.ModuleList) else heads
        samples = []
        for _ in range(batch):
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=torch.randint(0, head.num_classes, (1, h, w)))
            samples.append(sample)
        losses = model.loss(inputs, samples)
        sum(v.sum() for k, v in losses.items() if 'loss' in k and torch.is_tensor(v)).backward()
        return losses
    for part in ('detector', 'student'):
        if isinstance(getattr(model, part, None), torch.nn.Module):
            model = getattr(model, part)
            break
    try:
        out = model(inputs, _det_samples(batch, meta), mode='tensor')
    except NotImplementedError:  # e.g. video Mask2Former: no tensor mode
        out = _pixel_decoder_forward(model, inputs, [meta] * batch)
    leaves = [t for t in torch.utils._pytree.tree_flatten(out)[0]
              if torch.is_tensor(t) and t.requires_grad]
    if not leaves:
        raise RuntimeError('the model returned no tensor that requires grad')
    sum(t.float().sum() for t in leaves).backward()
    return out


def _det_samples(batch, meta):
    """DetDataSamples with 2 ground-truth boxes (label 0, box-shaped masks) and 2 proposals."""
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = meta['img_shape']
    boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.6 * w, 0.7 * h],
                          [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h]])
    masks = np.zeros((2, h, w), dtype=np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=boxes.clone(),
                                           labels=torch.zeros(2, dtype=torch.long),
                                           masks=BitmapMasks(masks.copy(), h, w))
        sample.proposals = InstanceData(bboxes=boxes.clone(), scores=torch.ones(2))
        samples.append(sample)
    return samples


def _pixel_decoder_forward(model, inputs, metas):
    """Backbone (+ neck) + the head's pixel decoder, for models without a tensor mode."""
    heads = [getattr(model, name, None) for name in ('track_head', 'panoptic_head')]
    decoder = next((h.pixel_decoder for h in heads if hasattr(h, 'pixel_decoder')), None)
    if decoder is None:
        raise NotImplementedError(f'{type(model).__name__} has no tensor mode and no pixel '
                                  'decoder to run instead')
    feats = model.backbone(inputs)
    if getattr(model, 'neck', None) is not None:
        feats = model.neck(feats)
    if 'batch_img_metas' in decoder.forward.__code__.co_varnames:
        return decoder(feats, metas)
    return decoder(feats)
