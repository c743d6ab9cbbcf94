"""Multi-process runs on the CPU: torchrun + gloo + mmengine's CPU DDP, 2 processes.

- the tools' set-up (``dlu_mm.utils.dist``): what it configures and what it refuses (fast);
- tools/dist_train.sh trains the light synthetic DLU detector and DLU UPerNet with DDP and every
  parameter ends bitwise equal on both ranks;
- the 2-process checkpoint resumes in 1 process;
- tools/dist_test.sh (2 processes) gives exactly tools/test.py's (1 process) metrics and
  predictions;
- each of the 7 learnable upsamplers in the detector's FPN trains under
  ``find_unused_parameters=False``: every parameter gets a gradient (one launch; this file is
  also the torchrun worker for it: ``python tests/test_dist_cpu.py upsamplers OUT_DIR``).

The 2-process tests are slow (torchrun launches); each process runs with OMP_NUM_THREADS=1.
"""
import copy
import json
import os
import os.path as osp
import pickle
import re
import socket
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.join(REPO, 'tests')
DET_CONFIG = osp.join(REPO, 'configs', 'demo', 'faster_rcnn_lite_synthetic_dlu.py')
SEG_CONFIG = osp.join(REPO, 'configs', 'demo', 'upernet_r18_synthetic_ade_dlu.py')
# the 7 learnable upsamplers, with the neck settings of configs/faster_rcnn_r50_fpn_<name>.py
UPSAMPLER_CONFIGS = ('carafe', 'dlu', 'ddf_up', 'lda_aqu', 'dysample', 'fade', 'sapa')
NPROC = 2
TIMEOUT = 420


# --------------------------------------------------------------------------------------------
# a hook the 2-process runs load (custom_imports = this module): every rank saves its parameters

def _params_file(world_size, rank):
    return f'params_world{world_size}_rank{rank}.pth'


def _register_params_hook():
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS

    class RankParamsHook(Hook):
        """After training, each rank writes its parameters and how it ran to the work dir."""

        def after_train(self, runner):
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            dist = torch.distributed
            record = dict(
                rank=runner.rank, world_size=runner.world_size,
                wrapper=type(runner.model).__name__,
                backend=dist.get_backend() if dist.is_initialized() else None,
                params={name: p.detach().clone() for name, p in model.named_parameters()})
            torch.save(record, osp.join(runner.work_dir, _params_file(runner.world_size,
                                                                      runner.rank)))

    HOOKS.register_module(module=RankParamsHook, force=True)


try:
    _register_params_hook()
except ImportError:  # no mmengine: the tests below skip
    pass


# --------------------------------------------------------------------------------------------
# helpers

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _env():
    path = os.pathsep.join([REPO, TESTS] + ([os.environ['PYTHONPATH']]
                                           if os.environ.get('PYTHONPATH') else []))
    # CUDA_VISIBLE_DEVICES='': the CPU path under test, also on a machine with (fewer) GPUs
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=path, PYTHON=sys.executable,
                PORT=str(_free_port()), MASTER_ADDR='127.0.0.1', NNODES='1', NODE_RANK='0',
                CUDA_VISIBLE_DEVICES='')


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=str(cwd), env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def dist_train(config, nproc, cwd, *args):
    return _run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, str(nproc), *args],
                cwd)


def dist_test(config, checkpoint, nproc, cwd, *args):
    return _run(['bash', osp.join(REPO, 'tools', 'dist_test.sh'), config, checkpoint,
                 str(nproc), *args], cwd)


def tool(name, cwd, *args):
    return _run([sys.executable, osp.join(REPO, 'tools', name), *args], cwd)


def _with_params_hook(tmp_dir, base_config, imports):
    """A config = ``base_config`` + the RankParamsHook of this module."""
    path = osp.join(str(tmp_dir), 'with_params_hook_' + osp.basename(base_config))
    with open(path, 'w') as f:
        f.write(f'_base_ = {base_config!r}\n'
                f'custom_imports = dict(imports={imports + ["test_dist_cpu"]!r}, '
                'allow_failed_imports=False)\n'
                "custom_hooks = [dict(type='RankParamsHook')]\n")
    return path


def _rank_records(work_dir):
    records = [torch.load(osp.join(work_dir, _params_file(NPROC, rank)), map_location='cpu',
                          weights_only=False) for rank in range(NPROC)]
    assert [r['rank'] for r in records] == list(range(NPROC))
    return records


def assert_ranks_bitwise_equal(records):
    for record in records:
        assert record['world_size'] == NPROC
        assert record['wrapper'] == 'MMDistributedDataParallel'
        assert record['backend'] == 'gloo'
    reference = records[0]['params']
    assert len(reference) > 0
    for record in records[1:]:
        assert record['params'].keys() == reference.keys()
        different = [name for name, p in record['params'].items()
                     if not torch.equal(p, reference[name])]
        assert not different, f'rank {record["rank"]} differs from rank 0 in {different[:5]}'


def _metrics_line(output):
    """The metrics of the last 'Epoch(test) [i/n]' summary line, as the logger prints them."""
    lines = [line for line in output.splitlines() if 'Epoch(test)' in line and ':' in line
             and ('mAP' in line or 'mIoU' in line)]
    assert lines, output[-4000:]
    return re.sub(r'^.*?Epoch\(test\) \[\d+/\d+\]\s*', '', lines[-1]).split('  data_time')[0]


def _assert_same_predictions(a, b):
    """Exactly the same predictions (nested dicts / lists of tensors, arrays, numbers)."""
    import numpy as np
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_predictions(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_predictions(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(getattr(a, 'tensor', None), torch.Tensor):  # mmdet boxes
        assert torch.equal(a.tensor, b.tensor)
    else:
        assert a == b


def _count_boxes(predictions):
    return sum(int(p['pred_instances']['bboxes'].shape[0]) for p in predictions)


# --------------------------------------------------------------------------------------------
# the set-up itself (fast, no process group)

def test_setup_is_a_no_op_without_launcher_or_with_cuda(monkeypatch):
    pytest.importorskip('mmengine')
    from mmengine.config import Config

    from dlu_mm.utils import dist
    cfg = Config(dict(launcher='none'))
    assert dist.setup_cpu_distributed(cfg) is False and 'model_wrapper_cfg' not in cfg
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    before = cfg.to_dict()
    assert dist.setup_cpu_distributed(cfg) is False  # GPU machines: mmengine's nccl path as is
    assert cfg.to_dict() == before
    assert dist.init_cpu_process_group('pytorch') is False
    assert not torch.distributed.is_initialized()


def test_cpu_model_wrapper_cfg(monkeypatch):
    pytest.importorskip('mmengine')
    from mmengine.config import Config

    from dlu_mm.utils import dist
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = dist.set_cpu_model_wrapper(Config(dict(launcher='pytorch')))
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)
    cfg = dist.set_cpu_model_wrapper(Config(dict(launcher='pytorch',
                                                 find_unused_parameters=True)))
    assert cfg.model_wrapper_cfg.find_unused_parameters is True
    # a user wrapper keeps its settings and only loses the GPU
    cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=dict(
        type='MMDistributedDataParallel', find_unused_parameters=True, static_graph=False)))
    dist.set_cpu_model_wrapper(cfg)
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         find_unused_parameters=True, static_graph=False)
    cfg = Config(dict(launcher='none'))
    assert 'model_wrapper_cfg' not in dist.set_cpu_model_wrapper(cfg)


def test_bad_input_is_refused(monkeypatch):
    pytest.importorskip('mmengine')
    from mmengine.config import Config

    from dlu_mm.utils import dist
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match='launcher must be one of'):
        dist.is_cpu_distributed('torchrun')
    with pytest.raises(TypeError, match='launcher must be a str'):
        dist.is_cpu_distributed(None)
    with pytest.raises(ValueError, match='--launcher slurm needs GPUs.*--launcher pytorch'):
        dist.init_cpu_process_group('slurm')
    with pytest.raises(TypeError, match='dist_cfg must be a dict'):
        dist.init_cpu_process_group('pytorch', ['gloo'])
    for name in dist.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match='RANK, WORLD_SIZE.*missing.*dist_train.sh'):
        dist.init_cpu_process_group('pytorch')
    for name, value in (('RANK', '0'), ('WORLD_SIZE', '1'), ('LOCAL_RANK', '0'),
                        ('MASTER_ADDR', '127.0.0.1'), ('MASTER_PORT', '1')):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match='timeout must be a positive number'):
        dist.init_cpu_process_group('pytorch', dict(backend='nccl', timeout='30'))
    assert not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match='device_ids must be None'):
        dist.set_cpu_model_wrapper(Config(dict(
            launcher='pytorch', model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                                       device_ids=[0]))))
    with pytest.raises(ValueError, match='not a registered model wrapper'):
        dist.set_cpu_model_wrapper(Config(dict(
            launcher='pytorch', model_wrapper_cfg=dict(type='NoSuchWrapper'))))
    with pytest.raises(TypeError, match='find_unused_parameters must be a bool'):
        dist.set_cpu_model_wrapper(Config(dict(launcher='pytorch', find_unused_parameters=1)))


# --------------------------------------------------------------------------------------------
# detector: 2-process training, 1-process resume, 2- vs 1-process evaluation

@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    pytest.importorskip('mmdet.models')
    from dlu_mm.datasets import synthetic_coco
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    # 5 validation images: 2 processes get 3 + 3 (one padded), which the gather must drop
    synthetic_coco.generate(root, num_train=8, num_val=5, min_size=64, max_size=96, seed=1)
    return root + '/'


def _det_data_options(root):
    ann = root + 'annotations/instances_val2017.json'
    return ([f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
            + [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'])


@pytest.fixture(scope='module')
def det_ddp_run(coco_root, tmp_path_factory):
    """2 processes x batch 2 on 8 images: 1 epoch of 2 DDP iterations, checkpoint epoch_1.pth."""
    run_dir = tmp_path_factory.mktemp('det_ddp')
    config = _with_params_hook(run_dir, DET_CONFIG, ['dlu_mm.det'])
    work_dir = str(run_dir / 'work')
    output = dist_train(config, NPROC, run_dir, '--work-dir', work_dir, '--cfg-options',
                        *_det_data_options(coco_root), 'train_dataloader.batch_size=2',
                        'train_cfg.max_epochs=1', 'train_cfg.val_interval=100',
                        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1')
    return dict(config=config, work_dir=work_dir, output=output, run_dir=run_dir)


@pytest.mark.slow
def test_det_ddp_train_ranks_bitwise_equal(det_ddp_run):
    output = det_ddp_run['output']
    assert 'Epoch(train) [1][2/2]' in output, output[-4000:]
    assert 'Found no NVIDIA driver' not in output
    records = _rank_records(det_ddp_run['work_dir'])
    assert_ranks_bitwise_equal(records)
    # the checkpoint holds exactly these parameters (the unwrapped model's)
    state = torch.load(osp.join(det_ddp_run['work_dir'], 'epoch_1.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    for name, param in records[0]['params'].items():
        assert torch.equal(state[name], param), name


@pytest.mark.slow
def test_det_ddp_checkpoint_resumes_in_one_process(det_ddp_run, coco_root):
    work_dir = det_ddp_run['work_dir']
    output = tool('train.py', det_ddp_run['run_dir'], det_ddp_run['config'], '--work-dir',
                  work_dir, '--resume', osp.join(work_dir, 'epoch_1.pth'), '--cfg-options',
                  *_det_data_options(coco_root), 'train_dataloader.batch_size=4',
                  'train_cfg.max_epochs=2', 'train_cfg.val_interval=100',
                  'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1')
    assert 'resumed epoch: 1, iter: 2' in output, output[-4000:]
    assert 'Epoch(train) [2][2/2]' in output and 'Epoch(train) [1]' not in output
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
    record = torch.load(osp.join(work_dir, _params_file(1, 0)), weights_only=False)
    assert record['world_size'] == 1 and record['wrapper'] != 'MMDistributedDataParallel'


@pytest.mark.slow
def test_det_two_process_evaluation_equals_one_process(det_ddp_run, coco_root, tmp_path):
    checkpoint = osp.join(det_ddp_run['work_dir'], 'epoch_1.pth')
    # batch 1: a batch's padding depends on which images share it, so the per-image computation
    # is the same in both runs only with one image per batch
    options = ['--cfg-options', *_det_data_options(coco_root), 'test_dataloader.batch_size=1']
    one = tool('test.py', tmp_path, DET_CONFIG, checkpoint, '--work-dir', str(tmp_path / 'one'),
               '--out', str(tmp_path / 'one.pkl'), *options)
    two = dist_test(DET_CONFIG, checkpoint, NPROC, tmp_path, '--work-dir',
                    str(tmp_path / 'two'), '--out', str(tmp_path / 'two.pkl'), *options)
    assert 'Epoch(test) [3/3]' in two and 'Epoch(test) [5/5]' in one  # 3 per rank, 5 in all
    assert 'coco/bbox_mAP' in _metrics_line(one)
    assert _metrics_line(two) == _metrics_line(one)
    with open(tmp_path / 'one.pkl', 'rb') as f:
        predictions_one = pickle.load(f)
    with open(tmp_path / 'two.pkl', 'rb') as f:
        predictions_two = pickle.load(f)
    assert len(predictions_one) == 5 and _count_boxes(predictions_one) > 0
    _assert_same_predictions(predictions_two, predictions_one)


# --------------------------------------------------------------------------------------------
# segmentation: 2-process UPerNet training

@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    pytest.importorskip('mmseg.models')
    from dlu_mm.datasets.synthetic_ade import generate
    root = str(tmp_path_factory.mktemp('synthetic_ade'))
    generate(root, num_train=4, num_val=3, num_classes=6, min_size=48, max_size=71, seed=0)
    return root


@pytest.mark.slow
def test_seg_ddp_train_ranks_bitwise_equal(ade_root, tmp_path):
    config = _with_params_hook(tmp_path, SEG_CONFIG, ['dlu_mm.seg'])
    work_dir = str(tmp_path / 'work')
    output = dist_train(config, NPROC, tmp_path, '--work-dir', work_dir, '--cfg-options',
                        *[f'{split}_dataloader.dataset.data_root={ade_root}'
                          for split in ('train', 'val', 'test')],
                        'train_dataloader.batch_size=2', 'train_cfg.max_iters=2',
                        'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
                        'default_hooks.logger.interval=1')
    assert 'Iter(train) [2/2]' in output, output[-4000:]
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    assert_ranks_bitwise_equal(_rank_records(work_dir))


# --------------------------------------------------------------------------------------------
# every upsampler in the FPN under DDP with find_unused_parameters=False (one 2-process launch)

def _upsampler_worker(out_dir):
    """torchrun worker: for each upsampler, the light detector with that upsampler in its FPN
    (settings of configs/faster_rcnn_r50_fpn_<name>.py), wrapped as the tools wrap it on CPU,
    trains 2 DDP steps; writes per rank which parameters got no gradient and whether all
    parameters equal rank 0's afterwards."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODEL_WRAPPERS, init_default_scope
    from mmdet.registry import MODELS

    from dlu_mm.utils.dist import init_cpu_process_group, set_cpu_model_wrapper
    from mm_batches import det_batch

    assert init_cpu_process_group('pytorch')  # gloo (the test hides any GPU)
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    init_default_scope('mmdet')
    import dlu_mm.det  # noqa: F401
    base = Config.fromfile(DET_CONFIG)
    base.launcher = 'pytorch'
    set_cpu_model_wrapper(base)  # what tools/train.py gives the Runner
    assert base.model_wrapper_cfg.find_unused_parameters is False
    report = {}
    for name in UPSAMPLER_CONFIGS:
        neck = Config.fromfile(osp.join(REPO, 'configs', f'faster_rcnn_r50_fpn_{name}.py'))
        cfg = copy.deepcopy(base)
        cfg.model.neck.upsample_cfg = neck.model.neck.upsample_cfg
        cfg.model.neck.carafe_style = neck.model.neck.carafe_style
        torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
        model = MODELS.build(cfg.model)
        model.init_weights()
        wrapper = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg, default_args=dict(module=model))
        optim_wrapper = build_optim_wrapper(wrapper, cfg.optim_wrapper)
        got_grad = set()
        handles = [p.register_hook(lambda grad, n=n: got_grad.add(n) or grad)
                   for n, p in model.named_parameters() if p.requires_grad]
        losses = []
        for step in range(2):  # DDP raises in step 2 if step 1 left a parameter unreduced
            batch = det_batch(batch_size=1, size=(128, 128), num_classes=3,
                              seed=10 * step + rank)
            log_vars = wrapper.train_step(batch, optim_wrapper)
            losses.append(float(log_vars['loss']))
        for handle in handles:
            handle.remove()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        reference = flat.clone()
        torch.distributed.broadcast(reference, src=0)
        report[name] = dict(
            no_grad=sorted(n for n, p in model.named_parameters()
                           if p.requires_grad and n not in got_grad),
            num_upsampler_params=sum(p.numel() for n, p in model.named_parameters()
                                     if 'upsample' in n),
            equal_to_rank0=bool(torch.equal(flat, reference)), losses=losses,
            wrapper=type(wrapper).__name__, world_size=world_size)
    with open(osp.join(out_dir, f'upsamplers_rank{rank}.json'), 'w') as f:
        json.dump(report, f)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_every_upsampler_trains_under_ddp_without_unused_parameters(tmp_path):
    pytest.importorskip('mmdet.models')
    env_port = _env()['PORT']
    _run([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={NPROC}',
          f'--master_port={env_port}', osp.abspath(__file__), 'upsamplers', str(tmp_path)],
         tmp_path)
    reports = []
    for rank in range(NPROC):
        with open(tmp_path / f'upsamplers_rank{rank}.json') as f:
            reports.append(json.load(f))
    for name in UPSAMPLER_CONFIGS:
        for report in reports:
            entry = report[name]
            assert entry['world_size'] == NPROC and entry['wrapper'] == 'MMDistributedDataParallel'
            assert entry['num_upsampler_params'] > 0, name
            assert entry['no_grad'] == [], f'{name}: no gradient for {entry["no_grad"]}'
            assert entry['equal_to_rank0'], f'{name}: ranks differ after DDP training'
            assert all(loss == loss and abs(loss) < 1e4 for loss in entry['losses']), entry
        # different data per rank: the local losses differ, the parameters do not
        assert reports[0][name]['losses'] != reports[1][name]['losses'], name


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] != 'upsamplers':
        sys.exit('usage: torchrun --nproc_per_node 2 tests/test_dist_cpu.py upsamplers OUT_DIR')
    _upsampler_worker(sys.argv[2])
