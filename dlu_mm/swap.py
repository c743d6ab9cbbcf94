"""Swap a learnable upsampler into any mmdet / mmseg config: ``swap_upsampler(cfg, upsample_cfg)``.

The function walks ``cfg.model`` for the modules that upsample (every ``neck``, ``decode_head`` and
``pixel_decoder`` entry, at any depth: ``model.detector.neck`` in tracking configs, lists of necks
or cascaded decode heads), switches each supported one to its dlu_mm class with
``upsample_cfg=<the new upsampler cfg>``, adds ``dlu_mm.det`` / ``dlu_mm.seg`` to
``custom_imports`` and leaves everything else of the config as it was.

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
WHERE_OF_KEY = {'neck': 'neck', 'decode_head': 'head', 'pixel_decoder': 'pixel_decoder'}
WHERES = ('neck', 'head', 'pixel_decoder')
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
    if not isinstance(upsample_cfg, dict) or 'type' not in upsample_cfg:
        raise TypeError('upsample_cfg must be a dict with a type (an upsampler of '
                        f"dlu_mm.upsamplers.UPSAMPLERS, e.g. dict(type='DLU')), got "
                        f'{upsample_cfg!r}')
    from .upsamplers import is_guided
    is_guided(dict(upsample_cfg))  # an unknown type -> ValueError listing the known ones


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
            ``'pixel_decoder'``.

    Returns:
        ``(new_cfg, changes)`` where ``changes`` lists ``(path, old type, new type)``.

    Raises:
        ValueError: nothing supported was found (the message names what was found and lists
            the supported types), or a bad ``where`` / ``upsample_cfg`` / scope.
    """
    _check_upsample_cfg(upsample_cfg)
    if where is not None and where not in WHERES:
        raise ValueError(f'where must be None or one of {WHERES}, got {where!r}')
    new_cfg = copy.deepcopy(cfg)
    default_scope = _default_scope(new_cfg)
    found = find_upsampling_modules(new_cfg)
    changes, packages = [], []
    for path, found_where, module in found:
        scope, name, prefixed = _scope_and_type(module['type'], default_scope)
        swap = SWAPS.get((scope, name))
        if swap is None or (where is not None and swap[1] != where):
            continue
        ours, _, package = swap
        for arg in _DROPPED_ARGS.get(name, ()):
            module.pop(arg, None)
        if name == 'FPN_CARAFE':
            module['carafe_style'] = True
        module['type'] = f'{scope}.{ours}' if prefixed else ours
        module['upsample_cfg'] = copy.deepcopy(dict(upsample_cfg))
        changes.append((path, f'{scope}.{name}', module['type']))
        if package not in packages:
            packages.append(package)
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
    return new_cfg, changes


def forward_backward(model, scope, size=(64, 64), batch=2):
    """Forward + backward on random images: mmdet models in ``mode='tensor'`` (the head
    outputs, summed), mmseg models through ``loss`` with random labels (mmseg's Mask2Former head
    has no tensor mode). SyncBN becomes BN (no process group here). Returns the mmseg losses or
    the mmdet head outputs; RuntimeError when nothing in them requires grad."""
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(model)
    model.train()
    h, w = size
    meta = dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    inputs = torch.randn(batch, 3, h, w)
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
    from mmdet.structures import DetDataSample
    out = model(inputs, [DetDataSample(metainfo=meta) for _ in range(batch)], mode='tensor')
    leaves = [t for t in torch.utils._pytree.tree_flatten(out)[0]
              if torch.is_tensor(t) and t.requires_grad]
    if not leaves:
        raise RuntimeError('the model returned no tensor that requires grad')
    sum(t.float().sum() for t in leaves).backward()
    return out
