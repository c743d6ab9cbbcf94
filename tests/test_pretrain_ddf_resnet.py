"""DDF-ResNet in mmpretrain: configs build, params against a derived formula (16.8M for
DDF-ResNet-50), forward/backward on CPU, odd sizes, FLOPs."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

import dlu_mm.pretrain  # noqa: E402,F401
from dlu_mm.pretrain import DDFConv, DDFResNet  # noqa: E402
from dlu_mm.pretrain.complexity import model_complexity  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'ddf_resnet')
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def ddf_params(mid, k=3, se_ratio=0.2):
    """DDF in place of a mid -> mid k x k conv: spatial 1x1 conv mid -> k*k (+bias); channel
    branch mid -> m -> mid*k*k 1x1 convs (+bias), m = floor(se_ratio*mid); FilterNorm scale."""
    m = int(se_ratio * mid)
    return (mid * k * k + k * k) + (mid * m + m + m * mid * k * k + mid * k * k) + mid * k * k


def resnet_params(depth, conv2_params, num_classes=1000):
    """Bottleneck ResNet classifier: 7x7 stem + BN, per block 1x1 (in -> mid), conv2 (mid), 1x1
    (mid -> 4*mid), 3 BNs, a 1x1 + BN projection shortcut in each stage's first block; linear
    head 2048 -> num_classes."""
    total = 3 * 64 * 7 * 7 + 2 * 64
    in_channels = 64
    for stage, num_blocks in enumerate(BLOCKS[depth]):
        mid = 64 * 2 ** stage
        out = 4 * mid
        for block in range(num_blocks):
            total += in_channels * mid + conv2_params(mid) + mid * out + 2 * (mid + mid + out)
            if block == 0:
                total += in_channels * out + 2 * out
            in_channels = out
    return total + 2048 * num_classes + num_classes


def build(config_name, **backbone):
    cfg = Config.fromfile(osp.join(CONFIGS, config_name))
    init_default_scope('mmpretrain')
    cfg.model.backbone.update(backbone)
    return cfg, MODELS.build(cfg.model)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_formula_reproduces_known_counts():
    # the formula is the one the model is checked against: it must give ResNet's known counts
    assert resnet_params(50, lambda c: 9 * c * c) == 25_557_032
    assert resnet_params(101, lambda c: 9 * c * c) == 44_549_160


@pytest.fixture(scope='module')
def ddf_r50():
    return build('ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py')[1]


def test_ddf_resnet50_params_match_formula_and_paper(ddf_r50):
    assert type(ddf_r50.backbone) is DDFResNet
    convs = [m for m in ddf_r50.modules() if isinstance(m, DDFConv)]
    assert len(convs) == 16 and all(m.kernel_combine == 'mul' for m in convs)
    assert [m.stride for m in convs if m.stride != 1] == [2, 2, 2]  # first block of stages 2-4
    params = num_params(ddf_r50)
    assert params == resnet_params(50, ddf_params) == 16_843_748
    assert round(params / 1e6, 1) == 16.8  # the paper's figure


def test_baseline_and_add_and_101_configs():
    _, baseline = build('resnet50_8xb32-coslr-lbs_in1k.py')
    assert num_params(baseline) == 25_557_032
    cfg, add = build('ddf_add_resnet50_8xb32-coslr-lbs_in1k.py')
    assert cfg.model.head.loss.type == 'LabelSmoothLoss'
    assert {m.kernel_combine for m in add.modules() if isinstance(m, DDFConv)} == {'add'}
    assert num_params(add) == 16_843_748
    _, ddf_r101 = build('ddf_mul_resnet101_8xb32-coslr-lbs_in1k.py')
    assert num_params(ddf_r101) == resnet_params(101, ddf_params) == 28_146_912
    cfg = Config.fromfile(osp.join(CONFIGS, 'ddf_add_resnet101_8xb32-coslr-lbs_in1k.py'))
    assert (cfg.model.backbone.type, cfg.model.backbone.depth,
            cfg.model.backbone.kernel_combine) == ('DDFResNet', 101, 'add')


def test_forward_backward_cpu():
    torch.manual_seed(0)
    # zero-initialised norm3 (the default) would stop every gradient into the DDF branches
    _, ddf_r50 = build('ddf_mul_resnet50_8xb32-coslr-lbs_in1k.py', zero_init_residual=False)
    ddf_r50.init_weights()
    ddf_r50.train()
    inputs = torch.randn(2, 3, 32, 32)
    samples = [DataSample().set_gt_label(label) for label in (3, 7)]
    losses = ddf_r50(inputs, samples, mode='loss')
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in ddf_r50.backbone.named_parameters():
        if 'conv2' in name:  # every DDF branch gets a gradient
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, name
    assert ddf_r50(inputs, mode='tensor').shape == (2, 1000)


def test_odd_sizes_line_up_with_resnet_shapes():
    torch.manual_seed(0)
    ddf = DDFResNet(50, kernel_combine='add', out_indices=(0, 1, 2, 3))
    plain = MODELS.build(dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3)))
    ddf.eval()  # mmpretrain's ResNet.train() returns None: no chaining
    plain.eval()
    x = torch.randn(1, 3, 45, 71)  # stride-2 blocks see odd sizes (12x18 -> 6x9 -> 3x5 -> 2x3)
    with torch.no_grad():
        shapes = [tuple(y.shape) for y in ddf(x)]
        assert shapes == [tuple(y.shape) for y in plain(x)]
    assert shapes[-1] == (1, 2048, 2, 3)


def test_init_keeps_resnet_behaviour(ddf_r50):
    ddf_r50.init_weights()
    block = ddf_r50.backbone.layer1[0]
    assert torch.all(block.norm3.weight == 0)  # zero_init_residual still applies


def test_flops_half_of_resnet50(ddf_r50):
    _, baseline = build('resnet50_8xb32-coslr-lbs_in1k.py')
    size = 64
    ddf_stats = model_complexity(ddf_r50, (3, size, size))
    base_stats = model_complexity(baseline, (3, size, size))
    out_sizes = [size // 4 // 2 ** stage for stage in range(4)]  # 16, 8, 4, 2
    # the ddf op, mmengine convention: per tap and output value X*S*Ch = 2 multiplies + 1 add
    # (3 FLOPs at 2 x MAC), halved to MACs -> 13.5 C h w per 3x3 DDF
    expected = sum(27 * 64 * 2 ** stage * out_sizes[stage] ** 2 // 2 * num_blocks
                   for stage, num_blocks in enumerate(BLOCKS[50]))
    assert ddf_stats['flops_ddf_op'] == expected == 1_520_640
    assert base_stats['flops_ddf_op'] == 0
    # ResNet-50's 3x3 convs cost 9 mid^2 MACs per output pixel; DDF removes nearly all of it
    conv3x3 = sum(9 * (64 * 2 ** stage) ** 2 * out_sizes[stage] ** 2 * num_blocks
                  for stage, num_blocks in enumerate(BLOCKS[50]))
    saved = base_stats['flops'] - ddf_stats['flops']
    assert 0.9 * conv3x3 < saved < conv3x3
    assert 0.5 < ddf_stats['flops'] / base_stats['flops'] < 0.6  # "about half"
    assert (ddf_stats['params'], base_stats['params']) == (16_843_748, 25_557_032)


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(depth=18), ValueError, 'depth'),
    (dict(depth=50, kernel_combine='max'), ValueError, 'kernel_combine'),
    (dict(depth=50, se_ratio=0.001), ValueError, 'se_ratio'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DDFResNet(**kwargs)


def test_needs_neither_mmdet_nor_mmseg():
    # mmpretrain itself optionally imports mmdet when installed; dlu_mm.pretrain must work with
    # both hidden (a None entry in sys.modules makes their import raise ImportError)
    code = ('import sys; sys.modules["mmdet"] = sys.modules["mmseg"] = None\n'
            'import dlu_mm.pretrain\n'
            'from mmpretrain.registry import MODELS\n'
            'assert MODELS.get("DDFResNet") is dlu_mm.pretrain.DDFResNet\n'
            'assert not any(m.split(".")[0] in ("mmdet", "mmseg") and sys.modules[m]\n'
            '               for m in list(sys.modules))\n')
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
