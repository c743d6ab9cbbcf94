"""Convert a released upsampler checkpoint of another code base to dlu_mm's layout.

    python tools/model_converters/convert.py --from mmdet-carafe SRC.pth DST.pth
    python tools/model_converters/convert.py SRC.pth DST.pth            # --from auto
    python tools/test.py configs/faster_rcnn_r50_fpn_carafe.py DST.pth

Sources (``--from``): mmdet-carafe (mmdet's CARAFE zoo), dlu, lda-aqu, dysample (the authors'
code bases), uperhead-upsample (the segmentation fork's UPerHead_Upsample); ``auto`` recognises
the source by its keys. Reads mmdet 2.x (mmcv runner) and mmengine files with
``weights_only=True`` plus dlu_mm's allow-list (torch >= 2.6; a restricted unpickler before),
renames the upsampler modules' keys (nothing else changes), checks that the result loads
strictly into the config's model (``--config``, default: the shipped config for the source's
layout, named in the output) and writes ``{'state_dict', 'meta'}`` (meta names the source).
What has no exact counterpart is refused, and a SRC that is empty, truncated, not a torch
checkpoint or in need of a pickle global outside the allow-list is named as such: one
``error: ...`` line on stderr, exit status 1.
"""
import argparse
import inspect
import os
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from dlu_mm.checkpoint_loading import (CheckpointFileError,  # noqa: E402
                                       UnsafeCheckpointError, load_checkpoint, split_checkpoint)
from dlu_mm.converters import (SOURCES, ConversionError, convert_state_dict,  # noqa: E402
                               converted_meta, detect_source)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a CARAFE / DLU / LDA-AQU / DySample / UPerHead_Upsample checkpoint '
        "to dlu_mm's state_dict layout")
    parser.add_argument('--from', dest='source', default='auto',
                        choices=['auto'] + list(SOURCES),
                        help='the code base that wrote SRC (default: auto, recognised by keys)')
    parser.add_argument('src', help='checkpoint to convert (mmdet 2.x or mmengine file)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--config', help='the dlu_mm config the result must load into strictly '
                        '(default: the shipped config for the source layout)')
    parser.add_argument('--no-check', action='store_true',
                        help='skip building the config\'s model and the strict-load check')
    return parser.parse_args(argv)


def _config_node(cfg, path):
    node = cfg
    for part in path.split('.'):
        if not hasattr(node, 'get'):
            return None
        node = node.get(part)
        if node is None:
            return None
    return node


def config_overrides(cfg, upsamplers):
    """``{'model.neck.upsample_cfg.<arg>': value}`` where the file's upsamplers differ from the
    config's (hyper-parameters read off the weights, e.g. DySample+ or another group count),
    and a list of problems overrides cannot fix (another upsampler type)."""
    from dlu_mm import upsamplers as registry
    overrides, problems = {}, []
    for path, inferred in upsamplers.items():
        configured = _config_node(cfg, path)
        configured_type = configured.get('type') if hasattr(configured, 'get') else None
        if configured_type != inferred['type']:
            problems.append(f'{path}: the file holds {inferred["type"]} upsamplers, the config '
                            f'has {configured_type!r}')
            continue
        defaults = {name: p.default for name, p in inspect.signature(
            getattr(registry, inferred['type'])).parameters.items()}
        for key, value in inferred.items():
            if key != 'type' and configured.get(key, defaults.get(key)) != value:
                overrides[f'{path}.{key}'] = value
    return overrides, problems


def build_model(cfg):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def check_against_config(state_dict, conversion, config):
    """(cfg overrides, problems): the converted state_dict against the config's model."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)  # imports the config's custom_imports (dlu_mm.det / .seg)
    overrides, problems = config_overrides(cfg, conversion.upsamplers)
    if problems:
        return overrides, problems
    if overrides:
        cfg.merge_from_dict(overrides)
    expected = build_model(cfg).state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}'
                  for k, v in expected.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    for label, keys in (('missing in the file', missing), ('not in the model', unexpected),
                        ('shape mismatch', mismatched)):
        if keys:
            problems.append(f'{label} ({len(keys)}): ' + ', '.join(keys[:8])
                            + (' ...' if len(keys) > 8 else ''))
    return overrides, problems


def _shown(config):
    """A config path as the user types it: relative to the repository when inside it."""
    path = osp.abspath(config)
    return osp.relpath(path, REPO) if path.startswith(REPO + os.sep) else config


def _format_option(key, value):
    return f'{key}={value}'


def main(argv=None):
    args = parse_args(argv)
    if osp.abspath(args.src) == osp.abspath(args.dst):
        sys.exit('error: DST must differ from SRC (the source file is never overwritten)')
    if args.config is not None and not osp.isfile(args.config):
        sys.exit(f'error: --config not found: {args.config!r}')
    try:
        state_dict, meta, container = split_checkpoint(load_checkpoint(args.src))
        if args.source == 'auto':
            source, description = detect_source(state_dict)
            print(f'--from auto: found {source} ({SOURCES[source]}): {description}')
        conversion = convert_state_dict(state_dict, args.source)
    except (CheckpointFileError, UnsafeCheckpointError, ConversionError, OSError,
            TypeError) as error:
        sys.exit(f'error: {error}')
    print(f'read {args.src} ({container} checkpoint, {len(state_dict)} tensors); '
          f'{len(conversion.renamed)} renamed, {len(conversion.dropped)} dropped, '
          f'{len(conversion.state_dict)} written')
    for key, why in conversion.dropped:
        print(f'  dropped {key}: {why}')
    for key in conversion.unexpected:
        print(f'  warning: unexpected key {key} (not in the source layout; kept as it is)')
    for note in conversion.notes:
        print(f'  note: {note}')
    for path, cfg in conversion.upsamplers.items():
        print(f'  {path} read off the weights: {cfg}')

    config, why = args.config, 'given by --config'
    if config is None:
        suggested, why = conversion.suggested_config()
        config = osp.join(REPO, suggested) if suggested else None
    overrides = {}
    if config is None:
        print(f'warning: {why}; pass --config with a config of this layout '
              f'({conversion.layout.get("description")}) to check it')
    elif args.no_check:
        print(f'not checked against {_shown(config)} (--no-check)')
    else:
        overrides, problems = check_against_config(conversion.state_dict, conversion, config)
        if problems:
            sys.exit(f'error: the converted state_dict does not load strictly into '
                     f'{_shown(config)}:\n  '
                     + '\n  '.join(problems)
                     + '\npass --config with the config of this model (or --no-check)')
        print(f'loads strictly into {_shown(config)} ({why})'
              + (f' with --cfg-options {" ".join(_format_option(*o) for o in overrides.items())}'
                 if overrides else ''))

    out_meta = converted_meta(conversion, meta, container, args.src,
                              _shown(config) if config else None)
    if overrides:
        out_meta['cfg_options'] = dict(overrides)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': conversion.state_dict, 'meta': out_meta}, args.dst)
    print(f'wrote {args.dst}')
    if config is not None:
        command = f'python tools/test.py {_shown(config)} {args.dst}'
        if overrides:
            command += ' --cfg-options ' + ' '.join(_format_option(*o) for o in overrides.items())
        print(f'evaluate with: {command}')
    return conversion


if __name__ == '__main__':
    main()
