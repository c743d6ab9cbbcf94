"""ONNX export with the default backend: every upsampler and the detection / segmentation
configs lower to standard ONNX operators and match PyTorch in onnxruntime at other sizes."""
import os.path as osp
import sys
import warnings

import pytest
import torch

onnx = pytest.importorskip('onnx', reason='needs onnx (pinned in constraints*.txt)')
ort = pytest.importorskip('onnxruntime', reason='needs onnxruntime (pinned in constraints*.txt)')

from dlu_mm.ops import get_backend  # noqa: E402
from dlu_mm.ops import is_onnx_exporting  # noqa: E402
from dlu_mm.upsamplers.builder import build_upsampler  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'deployment'))
import export_onnx  # noqa: E402

HAS_DYNAMO = 'dynamo' in torch.onnx.export.__code__.co_varnames
CHANNELS = 16
# (type, extra cfg, scale factor): the defaults and a non-default variant of each
CASES = [
    ('CARAFE', {}, 2), ('CARAFE', dict(up_kernel=3, up_group=2), 4),
    ('DLU', {}, 2), ('DLU', dict(up_kernel=3, up_group=2), 3),
    ('DDFUp', {}, 2), ('DDFUp', dict(head=2, dilation=2, kernel_combine='add'), 2),
    ('LDAAQU', {}, 2), ('LDAAQU', dict(num_heads=2, groups=4, k_u=5, rpb=False), 4),
    ('DySample', {}, 2), ('DySample', dict(groups=2, dyscope=True), 4),
    ('FADE', {}, 2), ('FADE', dict(up_kernel=3, gate=False), 2),
    ('SAPA', {}, 2), ('SAPA', dict(up_kernel=3, embedding_dim=32), 2),
]


@pytest.fixture(autouse=True)
def _quiet_tracer():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TracerWarnings about Python ints taken from shapes
        yield


def _inputs(module, batch, height, width):
    x = torch.randn(batch, CHANNELS, height, width)
    if not getattr(module, 'requires_guide', False):
        return (x, )
    scale = module.guide_scale_factor
    return x, torch.randn(batch, module.guide_channels, height * scale, width * scale)


def _check_standard(path):
    model = onnx.load(path)
    domains = {node.domain for node in model.graph.node}
    assert domains <= {'', 'ai.onnx'}, domains
    assert not any('dlu_mm' in node.op_type for node in model.graph.node)
    return {node.op_type for node in model.graph.node}


def _export_and_run(module, path, dynamo=False, opset=17):
    """Export at (2, C, 7, 9), run at (3, C, 11, 5) and (1, C, 4, 6): max abs error relative
    to max(1, max |output|)."""
    args = _inputs(module, 2, 7, 9)
    names = ['x', 'guide'][:len(args)]
    with torch.no_grad():
        if dynamo:
            from torch.export import Dim
            batch, height, width = Dim('batch', max=64), Dim('height', max=512), Dim('width',
                                                                                    max=512)
            shapes = [{0: batch, 2: height, 3: width}]
            if len(args) == 2:
                scale = module.guide_scale_factor
                shapes.append({0: batch, 2: height * scale, 3: width * scale})
            torch.onnx.export(module, args, path, dynamo=True, opset_version=opset,
                              input_names=names, dynamic_shapes=tuple(shapes))
        else:
            kwargs = dict(dynamo=False) if HAS_DYNAMO else {}
            torch.onnx.export(module, args, path, opset_version=opset, input_names=names,
                              output_names=['y'],
                              dynamic_axes={name: {0: 'batch', 2: f'{name}_h', 3: f'{name}_w'}
                                            for name in names}, **kwargs)
    ops = _check_standard(path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    error = 0.0
    for shape in ((3, 11, 5), (1, 4, 6)):
        inputs = _inputs(module, *shape)
        got = session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})[0]
        with torch.no_grad():
            want = module(*inputs)
        assert got.shape == tuple(want.shape)
        scale = max(1.0, float(want.abs().max()))
        error = max(error, float(abs(got - want.numpy()).max()) / scale)
    return error, ops


@pytest.mark.parametrize('opset', [16, 17])
@pytest.mark.parametrize('upsampler_type,cfg,scale', CASES,
                         ids=[f'{t}-{"default" if not c else "variant"}' for t, c, _ in CASES])
def test_upsampler_exports_with_default_backend(tmp_path, upsampler_type, cfg, scale, opset):
    assert get_backend() in ('auto', 'native')  # no set_backend('reference') by hand
    torch.manual_seed(0)
    module = build_upsampler(dict(type=upsampler_type, **cfg), CHANNELS, scale).eval()
    error, ops = _export_and_run(module, str(tmp_path / 'up.onnx'), opset=opset)
    assert error < 1e-4, error
    # not the unfold/einsum training references: Pad/Resize/Slice/Mul/Add, GridSample, MatMul
    assert 'Einsum' not in ops


@pytest.mark.skipif(not HAS_DYNAMO, reason='torch.onnx.export(dynamo=True) needs torch >= 2.5')
@pytest.mark.parametrize('upsampler_type', ['DLU', 'DDFUp'])
def test_upsampler_exports_with_dynamo_exporter(tmp_path, upsampler_type):
    pytest.importorskip('onnxscript')
    torch.manual_seed(0)
    module = build_upsampler(dict(type=upsampler_type), CHANNELS, 2).eval()
    # DDF-Up: FilterNorm of a constant filter must stay 0/(0 + eps), not 0/0 (onnxscript's
    # optimiser drops an add of 1e-10): a zero channel-branch bias and ReLU make it constant
    error, _ = _export_and_run(module, str(tmp_path / 'up.onnx'), dynamo=True)
    assert error < 1e-4, error


def test_lowering_only_while_exporting():
    assert not is_onnx_exporting()


def test_exportable_adaptive_pool_matches_torch():
    for bins in (1, 2, 3, 6):
        pool = export_onnx.ExportableAdaptiveAvgPool2d(bins)
        for height, width in ((4, 5), (16, 16), (7, 13), (1, 3)):
            x = torch.randn(2, 3, height, width, dtype=torch.float64)
            want = torch.nn.functional.adaptive_avg_pool2d(x, bins)
            torch.testing.assert_close(pool(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize('argv,message', [
    (['--shape', '100', '96'], 'multiples of 32'),
    (['--shape', '64', '64', '--opset', '15'], 'opset must be >= 16'),
    (['--shape', '64', '64', '--batch', '0'], 'batch must be >= 1'),
])
def test_export_tool_rejects_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        export_onnx.main(['configs/faster_rcnn_r50_fpn_dlu.py', '--out', 'x.onnx'] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('config,module', [
    ('faster_rcnn_r50_fpn_dlu.py', 'mmdet.models'),
    ('upernet_r50_512x512_160k_ade20k_dlu.py', 'mmseg.models'),
])
def test_export_tool_verifies_configs(tmp_path, capsys, config, module):
    pytest.importorskip(module, reason=f'needs {module.split(".")[0]} (and mmcv)')
    out = str(tmp_path / 'model.onnx')
    code = export_onnx.main([osp.join(REPO, 'configs', config), '--shape', '64', '96', '--out',
                             out, '--verify', '--dynamic'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'verify: ok' in printed and 'FAIL' not in printed
    ops = _check_standard(out)
    assert 'GridSample' in ops  # DLU's kernel sampling
    if config.startswith('upernet'):
        assert 'seg_logits' in printed
    else:
        assert 'neck_0' in printed and 'rpn_cls_4' in printed
