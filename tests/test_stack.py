"""The pinned stack (constraints*.txt) is installed, the OpenMMLab stack imports, its compiled
ops load, and stock models run on CPU."""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

from mm_batches import det_batch, run_loss_and_predict, seg_batch


def test_dlu_mm_import_is_light():
    code = ('import sys, dlu_mm; '
            'bad = [m for m in ("mmdet", "mmseg", "mmpretrain", "mmcv") if m in sys.modules]; '
            'print(dlu_mm.__version__); sys.exit(1 if bad else 0)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().count('.') == 2  # a real version string


def _pins(path):
    """(distribution, version) pairs of a constraints file ('name==x' or 'name===x')."""
    for line in path.read_text().splitlines():
        line = line.split('#')[0].strip()
        if line:
            name, version = re.fullmatch(r'([A-Za-z0-9_.-]+)\s*===?\s*(\S+)', line).groups()
            yield name, version


def test_stack_versions():
    """The environment is exactly the stack its constraints file pins (tools/dev.sh sets it)."""
    from importlib.metadata import version
    constraints = os.environ.get('DLU_MM_CONSTRAINTS')
    if not constraints:
        pytest.skip('not run through tools/dev.sh: no pinned stack to compare with')
    pins = dict(_pins(pathlib.Path(constraints)))
    assert 'torch' in pins, pins  # the yolo stack has no mmengine on purpose
    installed = {name: version(name).split('+')[0] for name in pins}
    assert installed == pins
    assert torch.__version__.split('+')[0] == pins['torch']


def test_dev_sh_stamp_without_built_extension(tmp_path):
    """A fresh clone has no dlu_mm/_C_torch<X>_<Y>*.so yet, and tools/dev.sh must still compute
    the stamp that decides whether it rebuilds dlu_mm (once, under set -e and pipefail, a failing
    `cat` there ended every CI stack without a message). The stamp changes with that file."""
    root = pathlib.Path(__file__).resolve().parents[1]
    checkout = tmp_path / 'checkout'
    (checkout / 'tools').mkdir(parents=True)
    (checkout / 'dlu_mm').mkdir()
    shutil.copy(root / 'tools' / 'dev.sh', checkout / 'tools')
    for name in ('pyproject.toml', 'setup.py'):
        shutil.copy(root / name, checkout)
    shutil.copytree(root / 'ops', checkout / 'ops')
    env = dict(os.environ, DLU_MM_VENV=sys.prefix, DLU_MM_STACK='main')

    def stamp():
        out = subprocess.run(['bash', str(checkout / 'tools' / 'dev.sh'), 'stamp'], env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        fields = out.stdout.split()
        assert len(fields) == 2, out.stdout
        return fields

    fresh = stamp()
    major, minor = torch.__version__.split('.')[:2]
    suffix = sysconfig.get_config_var('EXT_SUFFIX')  # what setup.py's build names it with
    library = checkout / 'dlu_mm' / f'_C_torch{major}_{minor}{suffix}'
    library.write_bytes(b'one build')
    built = stamp()
    assert built[0] == fresh[0] and built[1] != fresh[1]
    library.write_bytes(b'another build')
    assert stamp()[1] not in (fresh[1], built[1])


def test_mmcv_compiled_ops_run_on_cpu():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 3., 3.]])
    out = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=1, aligned=False)(feats, rois)
    assert out.item() == pytest.approx(7.5)  # bilinear value at the box centre (1.5, 1.5)


def test_model_packages_import():
    import mmdet.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401
    import torchvision.ops
    assert torchvision.ops.nms(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([1.]), 0.5).tolist() == [0]


def _build(cfg_path, scope):
    from mmengine.hub import get_config
    from mmengine.registry import MODELS, init_default_scope
    cfg = get_config(cfg_path)
    init_default_scope(scope)
    cfg.model.backbone.init_cfg = None  # no pretrained download
    return MODELS.build(cfg.model)


def test_stock_faster_rcnn_runs_on_cpu():
    torch.manual_seed(0)
    model = _build('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'mmdet')
    losses, preds = run_loss_and_predict(model, det_batch())
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox'} <= set(losses)
    assert all(torch.isfinite(torch.as_tensor(v if isinstance(v, torch.Tensor) else sum(v))).all()
               for v in losses.values())
    assert preds[0].pred_instances.bboxes.shape[1] == 4


def test_stock_upernet_runs_on_cpu():
    torch.manual_seed(0)
    from mmengine.hub import get_config
    cfg = get_config('mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py')
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmseg')
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.auxiliary_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.data_preprocessor.size = (64, 64)
    model = MODELS.build(cfg.model)
    losses, preds = run_loss_and_predict(model, seg_batch())
    assert 'decode.loss_ce' in losses and torch.isfinite(losses['decode.loss_ce'])
    assert preds[0].pred_sem_seg.data.shape[-2:] == (64, 64)
