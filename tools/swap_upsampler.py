"""Swap a dlu_mm upsampler into any mmdet / mmseg config, in one command.

    python tools/swap_upsampler.py mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py --upsampler DLU
    python tools/swap_upsampler.py configs/x.py --upsampler SAPA --upsampler-args embedding_dim=32 \
        --out work_dirs/x_sapa.py --cfg-options train_dataloader.batch_size=4
    python tools/swap_upsampler.py mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py \
        --upsampler CARAFE --where head            # only FPNHead, not the FPN neck
    python tools/swap_upsampler.py --list          # the module types it knows
    python tools/swap_upsampler.py --all-stock mmdet --upsampler DLU [--limit N]

It finds the neck, decode head or pixel decoder that upsamples, switches it to the dlu_mm class
with the upsampler, adds ``custom_imports``, writes the full config (``--out``, default
``work_dirs/<name>_<upsampler>.py``) for tools/train.py, and prints the modules that changed and
the parameters that were added (both models built on CPU, no weights loaded). ``--check`` also runs
a forward and backward pass of the swapped model on a small image. ``--all-stock`` does that for
every stock config shipped in the installed mmdet / mmseg whose modules it supports, wherever the
stock model itself builds and runs, and prints the share that also runs swapped.
"""
import argparse
import copy
import glob
import os
import os.path as osp
import signal
import sys
import time
import traceback

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

from dlu_mm.swap import (find_upsampling_modules, forward_backward, plan_swap,  # noqa: E402
                         supported_types)

SMALL_IMAGE = (128, 128)


def load(config):
    """A config from a path or an installed package (``mmdet::...``, ``mmseg::...``)."""
    if '::' in config:
        package, relative = config.split('::', 1)
        from mmengine.utils import get_installed_path
        path = osp.join(get_installed_path(package), '.mim', 'configs', relative)
        return Config.fromfile(path)
    return Config.fromfile(config)


def build_model(cfg):
    """The model of ``cfg`` on CPU (its default scope and custom imports applied; no init)."""
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    return MODELS.build(copy.deepcopy(cfg.model))  # builders write into their cfg (pretrained)


def num_parameters(model):
    return sum(p.numel() for p in model.parameters())


def swap_and_report(cfg, upsample_cfg, where=None, check=False, out=None, echo=print):
    """Swap, build both models, report the change (and run fwd+bwd with ``check``)."""
    new_cfg, changes = plan_swap(cfg, upsample_cfg, where)
    before, after = num_parameters(build_model(cfg)), None
    model = build_model(new_cfg)
    after = num_parameters(model)
    for path, old, new in changes:
        echo(f'{path}: {old} -> {new} with upsample_cfg={dict(upsample_cfg)}')
    echo(f'parameters: {before:,} -> {after:,} (+{after - before:,})')
    if check:
        forward_backward(model, new_cfg.get('default_scope', 'mmdet'), SMALL_IMAGE)
        echo('forward + backward on a small image: ok')
    if out:
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        new_cfg.dump(out)
        echo(f'wrote {out}')
    return new_cfg, changes, after - before


def stock_configs(package):
    from mmengine.utils import get_installed_path
    root = osp.join(get_installed_path(package), '.mim', 'configs')
    return sorted(p for p in glob.glob(osp.join(root, '**', '*.py'), recursive=True)
                  if f'{os.sep}_base_{os.sep}' not in p)


class _TimeLimit:
    """Raise TimeoutError in the block after ``seconds`` (POSIX; a no-op for 0)."""

    def __init__(self, seconds):
        self.seconds = int(seconds)

    def _expire(self, *_):
        raise TimeoutError(f'over {self.seconds} s')

    def __enter__(self):
        if self.seconds > 0:
            signal.signal(signal.SIGALRM, self._expire)
            signal.alarm(self.seconds)

    def __exit__(self, *_):
        if self.seconds > 0:
            signal.alarm(0)


def run_all_stock(packages, upsample_cfg, limit=None, stride=1, time_limit=0, echo=print):
    """For every supported stock config: does the stock model build and run fwd+bwd, and the
    swapped one? A stock model over ``time_limit`` seconds counts as not running here.
    Returns ``(runs_stock, runs_swapped, failures)``."""
    runs_stock, runs_swapped, failures = 0, 0, []
    paths = [p for package in packages for p in stock_configs(package)][::stride][:limit]
    for path in paths:
        try:
            cfg = Config.fromfile(path)
            plan_swap(cfg, upsample_cfg)
        except Exception:  # noqa: BLE001  (unsupported or unloadable: not counted)
            continue
        try:
            with _TimeLimit(time_limit):
                forward_backward(build_model(cfg), cfg.get('default_scope', 'mmdet'), SMALL_IMAGE)
        except Exception as error:  # noqa: BLE001  (the stock model itself does not run here)
            echo(f'skip (stock: {type(error).__name__}) {path}')
            continue
        runs_stock += 1
        start = time.time()
        try:
            new_cfg = plan_swap(cfg, upsample_cfg)[0]
            with _TimeLimit(3 * time_limit):  # a hang of the swapped model is a failure
                forward_backward(build_model(new_cfg), new_cfg.get('default_scope', 'mmdet'),
                                 SMALL_IMAGE)
            runs_swapped += 1
            echo(f'ok   {time.time() - start:5.1f}s {path}')
        except Exception as error:  # noqa: BLE001
            failures.append((path, repr(error)))
            echo(f'FAIL {path}: {error!r}')
            traceback.print_exc()
    share = runs_swapped / runs_stock if runs_stock else 0.0
    echo(f'swapped and ran {runs_swapped} of {runs_stock} supported stock configs that run '
         f'({100 * share:.1f}%)')
    return runs_stock, runs_swapped, failures


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='config path, or mmdet::... / mmseg::...')
    parser.add_argument('--upsampler', help='upsampler type, e.g. DLU, CARAFE, FADE, SAPA')
    parser.add_argument('--upsampler-args', nargs='+', action=DictAction, default={},
                        help='upsampler keyword arguments, key=value')
    parser.add_argument('--where', choices=('neck', 'head', 'pixel_decoder'),
                        help='only the module at this place (default: every supported one)')
    parser.add_argument('--out', help='where to write the new config '
                        '(default work_dirs/<config name>_<upsampler>.py)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries before the swap, key=value')
    parser.add_argument('--check', action='store_true',
                        help='also run forward + backward of the new model on a small image')
    parser.add_argument('--list', action='store_true', help='print the supported module types')
    parser.add_argument('--all-stock', nargs='+', choices=('mmdet', 'mmseg'),
                        help='swap every supported stock config of these packages and run it')
    parser.add_argument('--limit', type=int, help='with --all-stock: at most this many configs')
    parser.add_argument('--stride', type=int, default=1,
                        help='with --all-stock: every n-th config (a sample)')
    parser.add_argument('--time-limit', type=int, default=0,
                        help='with --all-stock: seconds per stock model (0: none)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for where, names in supported_types().items():
            print(f'{where}: {", ".join(names)}')
        return 0
    if not args.upsampler:
        raise SystemExit('--upsampler is required (e.g. --upsampler DLU); --list shows the '
                         'modules it can swap')
    upsample_cfg = dict(type=args.upsampler, **args.upsampler_args)
    if args.all_stock:
        runs_stock, runs_swapped, _ = run_all_stock(args.all_stock, upsample_cfg,
                                                    limit=args.limit, stride=args.stride,
                                                    time_limit=args.time_limit)
        return 0 if runs_swapped == runs_stock else 1
    if not args.config:
        raise SystemExit('give a CONFIG (a path or mmdet::... / mmseg::...)')
    cfg = load(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    name = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
    out = args.out or osp.join('work_dirs', f'{name}_{args.upsampler.lower()}.py')
    try:
        swap_and_report(cfg, upsample_cfg, where=args.where, check=args.check, out=out)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        found = find_upsampling_modules(cfg)
        if not found:
            print('(no neck, decode_head or pixel_decoder in model)', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
