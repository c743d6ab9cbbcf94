"""Swap a dlu_mm upsampler into any mmdet / mmseg config, in one command.

    python tools/swap_upsampler.py mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py --upsampler DLU
    python tools/swap_upsampler.py configs/x.py --upsampler SAPA --upsampler-args embedding_dim=32 \
        --out work_dirs/x_sapa.py --cfg-options train_dataloader.batch_size=4
    python tools/swap_upsampler.py mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py \
        --upsampler CARAFE --where head            # only FPNHead, not the FPN neck
    python tools/swap_upsampler.py --list          # the module types it knows
    python tools/swap_upsampler.py --all-stock mmdet mmseg --upsampler DLU --results out.jsonl

It finds the neck, decode head or pixel decoder that upsamples, switches it to the dlu_mm class
with the upsampler, adds ``custom_imports``, writes the full config (``--out``, default
``work_dirs/<name>_<upsampler>.py``) for tools/train.py, and prints the modules that changed and
the parameters that were added (both models built on CPU, no weights loaded). ``--check`` also runs
a forward and backward pass of the swapped model on a small image. ``--all-stock`` does that for
every stock config shipped in the installed mmdet / mmseg whose modules it supports (each
distinct model once; ``--results`` keeps the outcomes for a rerun) and prints the share that runs
swapped among those whose stock model runs here (docs/upsampling_modules.md).
"""
import argparse
import copy
import glob
import hashlib
import json
import os
import os.path as osp
import signal
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

from dlu_mm.swap import (WHERES, find_upsampling_modules, forward_backward,  # noqa: E402
                         plan_swap, revert_sync_bn_cfg, supported_types,
                         without_pretrained)

SMALL_IMAGE = (128, 128)
LARGE_IMAGE = (384, 384)


def load(config):
    """A config from a path or an installed package (``mmdet::...``, ``mmseg::...``)."""
    if '::' in config:
        package, relative = config.split('::', 1)
        from mmengine.utils import get_installed_path
        path = osp.join(get_installed_path(package), '.mim', 'configs', relative)
        return Config.fromfile(path)
    return Config.fromfile(config)


def build_model(cfg, init=False):
    """The model of ``cfg`` on CPU (its default scope and custom imports applied; SyncBN /
    MMSyncBN built as BN: the same parameters, and no process group needed). ``init``: run
    ``init_weights`` without the pretrained checkpoints (nothing is downloaded)."""
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
    model_cfg = copy.deepcopy(cfg.model)  # builders write into their cfg (pretrained)
    revert_sync_bn_cfg(model_cfg)
    if not init:
        return MODELS.build(model_cfg)
    model = MODELS.build(without_pretrained(model_cfg))
    model.init_weights()
    return model


def num_parameters(model):
    return sum(p.numel() for p in model.parameters())


def swap_and_report(cfg, upsample_cfg, where=None, check=False, out=None, echo=print):
    """Swap, build both models, report the change (and run fwd+bwd with ``check``)."""
    new_cfg, changes, kept = plan_swap(cfg, upsample_cfg, where)
    before, after = num_parameters(build_model(cfg)), None
    model = build_model(new_cfg)
    after = num_parameters(model)
    modules = {path: module for path, _, module in find_upsampling_modules(new_cfg)}
    for path, old, new in changes:
        echo(f'{path}: {old} -> {new} with upsample_cfg={dict(modules[path]["upsample_cfg"])}')
    for path, name, why in kept:
        echo(f'{path}: {name} kept ({why})')
    # negative where a learned layer leaves (the mask head's deconvolution)
    echo(f'parameters: {before:,} -> {after:,} ({after - before:+,})')
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


#: config keys that only say where weights come from: the runs here load none
WEIGHT_SOURCE_KEYS = ('init_cfg', 'pretrained')


def model_fingerprint(cfg):
    """What decides whether ``cfg``'s model builds and runs here: its scope, custom imports and
    model dict without the weight sources (configs differing only in schedule, data or the
    checkpoint they start from share one run)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in WEIGHT_SOURCE_KEYS}
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        return node
    tree = cfg.to_dict()
    text = json.dumps([tree.get('default_scope'), tree.get('custom_imports'),
                       strip(tree.get('model'))], sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _run_model(cfg, seconds, size=SMALL_IMAGE, init=False):
    """``None`` when ``cfg``'s model builds and runs fwd+bwd within ``seconds``, else the error."""
    try:
        with _TimeLimit(seconds):
            forward_backward(build_model(cfg, init), cfg.get('default_scope', 'mmdet'), size)
        return None
    except Exception as error:  # noqa: BLE001
        return f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'[:300]


def _attempts(cfg):
    """``(size, init)`` to try, in order: the small image as built; then with ``init_weights``
    (random embeddings of query-based heads give boxes of negative size: Sparse R-CNN); then
    ``LARGE_IMAGE`` (a deformable conv on a 1/128 level needs 3x3 pixels: DDOD); then the
    config's ``crop_size`` (ViT position embeddings of a fixed size: BEiT, MAE)."""
    attempts = [(SMALL_IMAGE, False), (SMALL_IMAGE, True), (LARGE_IMAGE, True)]
    crop = cfg.get('crop_size')
    if isinstance(crop, (list, tuple)) and len(crop) == 2 and tuple(crop) != LARGE_IMAGE:
        attempts.append((tuple(int(v) for v in crop), True))
    return attempts


def _outcome(new_cfg, cfg, time_limit):
    """(status, detail): 'ok' (the swapped model runs), 'fail' (it does not but the stock one
    does), 'stock fails' (neither runs here: the stock error), 'too slow' (stock over the limit).
    Each of ``_attempts`` is tried until the swapped model runs; the stock model is run only
    where the swapped one fails, in the same attempts."""
    errors = []
    for size, init in _attempts(cfg):
        error = _run_model(new_cfg, 3 * time_limit, size, init)  # a hang of the swapped one fails
        if error is None:
            how = [f'{size[0]}x{size[1]}'] * (size != SMALL_IMAGE) + ['init_weights'] * init
            return 'ok', ', '.join(how)
        errors.append(error)
    stock_errors = []
    for (size, init), error in zip(_attempts(cfg), errors):
        stock_error = _run_model(cfg, time_limit, size, init)
        if stock_error is None:
            return 'fail', f'{size[0]}x{size[1]}, init={init}: {error}'
        stock_errors.append(stock_error)
    if any(error.startswith('TimeoutError') for error in stock_errors):
        return 'too slow', f'stock model over {time_limit} s ({stock_errors[0]})'
    return 'stock fails', stock_errors[0]


class _WorkingDir:
    """``os.chdir`` for a block: some stock configs name other configs relative to the package's
    root (LD's teacher: ``configs/gfl/...``), as when run from an mmdet checkout."""

    def __init__(self, path):
        self.path, self.before = path, None

    def __enter__(self):
        self.before = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *_):
        os.chdir(self.before)


def _read_results(results):
    """{fingerprint: record} of a results file; a model started but never finished (the process
    died in it, e.g. out of memory) gets status 'crashed'."""
    done, started = {}, {}
    if results and osp.exists(results):
        with open(results) as f:
            for record in map(json.loads, f):
                if 'started' in record:
                    started[record['started']] = record['config']
                else:
                    done[record['fingerprint']] = record
    for fingerprint, config in started.items():
        if fingerprint not in done:
            done[fingerprint] = dict(fingerprint=fingerprint, status='crashed', seconds=0.0,
                                     detail='the process died in this model (out of memory?)',
                                     configs=[config])
    return done


def run_all_stock(packages, upsample_cfg, limit=None, stride=1, time_limit=0, results=None,
                  echo=print):
    """Swap every supported stock config of ``packages`` and run fwd+bwd on a small image.

    Configs whose model dicts are the same (up to the weight sources) share one run. A config
    counts as passing when its swapped model runs; where it does not, the stock model is run:
    if that fails too (or is over ``time_limit`` s), the config is excluded with the stock
    error, else it is a failure. ``results`` (a JSON-lines file) keeps every model's outcome, so
    a rerun goes on where an interrupted one stopped (a model the process died in is excluded
    as 'crashed', not retried). Returns ``(passed, failed, excluded)``,
    each a list of ``(config path, detail)``."""
    done = _read_results(results)
    paths = [p for package in packages for p in stock_configs(package)][::stride][:limit]
    groups, unsupported = {}, 0
    for path in paths:
        try:
            cfg = Config.fromfile(path)
            new_cfg = plan_swap(cfg, upsample_cfg)[0]
        except Exception:  # noqa: BLE001  (nothing supported, or not loadable: not counted)
            unsupported += 1
            continue
        groups.setdefault(model_fingerprint(new_cfg), []).append((path, cfg, new_cfg))
    echo(f'{len(paths)} stock configs, {len(paths) - unsupported} with a supported module, '
         f'{len(groups)} distinct models')
    passed, failed, excluded = [], [], []
    for number, (fingerprint, members) in enumerate(groups.items(), 1):
        record = done.get(fingerprint)
        if record is None:
            if results:  # a model that kills the process is 'crashed' when the run resumes
                with open(results, 'a') as f:
                    f.write(json.dumps(dict(started=fingerprint, config=members[0][0])) + '\n')
            start = time.time()
            path = members[0][0]
            root = path.split(f'{os.sep}configs{os.sep}')[0]  # the package's .mim folder
            with _WorkingDir(root if osp.isdir(root) else os.getcwd()):
                status, detail = _outcome(members[0][2], members[0][1], time_limit)
            record = dict(fingerprint=fingerprint, status=status, detail=detail,
                          seconds=round(time.time() - start, 1),
                          configs=[osp.relpath(p, osp.dirname(osp.dirname(p)))
                                   for p, _, _ in members])
            if results:
                with open(results, 'a') as f:
                    f.write(json.dumps(record) + '\n')
        tag = {'ok': 'ok', 'fail': 'FAIL'}.get(record['status'], 'skip')
        echo(f'[{number}/{len(groups)}] {tag:4} {record["seconds"]:6.1f}s x{len(members)} '
             f'{members[0][0]} {record["detail"]}')
        bucket = {'ok': passed, 'fail': failed}.get(record['status'], excluded)
        bucket.extend((p, f'{record["status"]}: {record["detail"]}') for p, _, _ in members)
    runs = len(passed) + len(failed)
    share = len(passed) / runs if runs else 0.0
    echo(f'swapped and ran {len(passed)} of {runs} supported stock configs whose stock model '
         f'runs here ({100 * share:.1f}%); {len(excluded)} excluded (below, with why), '
         f'{unsupported} without a supported module')
    for path, detail in failed:
        echo(f'FAIL {path}: {detail}')
    for path, detail in excluded:
        echo(f'excluded {path}: {detail}')
    return passed, failed, excluded


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='config path, or mmdet::... / mmseg::...')
    parser.add_argument('--upsampler', help='upsampler type, e.g. DLU, CARAFE, FADE, SAPA')
    parser.add_argument('--upsampler-args', nargs='+', action=DictAction, default={},
                        help='upsampler keyword arguments, key=value')
    parser.add_argument('--where', choices=WHERES,
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
    parser.add_argument('--results', help='with --all-stock: a JSON-lines file of the outcomes '
                        '(a rerun skips the models already in it)')
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
        _, failed, _ = run_all_stock(args.all_stock, upsample_cfg, limit=args.limit,
                                     stride=args.stride, time_limit=args.time_limit,
                                     results=args.results)
        return 1 if failed else 0
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
