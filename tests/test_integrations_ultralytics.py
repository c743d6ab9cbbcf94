"""dlu_mm upsamplers as ultralytics YOLO layers: the shipped model YAMLs build and train, a guide
of another channel count works, a 1-epoch deterministic training + val runs offline on the
synthetic YOLO set, best.pt loads again in a new process (also under ultralytics' restricted
weights_only loading), and ultralytics' ONNX export gives standard operators that onnxruntime
runs to PyTorch's outputs."""
import glob
import importlib.util
import os
import os.path as osp
import socket
import subprocess
import sys
import tempfile
import warnings

import pytest
import torch

if importlib.util.find_spec('ultralytics') is None:
    pytest.skip('ultralytics is not installed (the yolo stack has it: DLU_MM_STACK=yolo)',
                allow_module_level=True)
# before ultralytics is imported: no settings file in the home directory, no network probe
os.environ.setdefault('YOLO_CONFIG_DIR', tempfile.mkdtemp(prefix='dlu_mm_yolo_settings_'))
os.environ.setdefault('YOLO_OFFLINE', '1')

from ultralytics import YOLO  # noqa: E402
from ultralytics.nn import tasks  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, torch_safe_load  # noqa: E402

from dlu_mm.datasets import synthetic_yolo  # noqa: E402
from dlu_mm.integrations import ultralytics as dlu_yolo  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
YAMLS = sorted(glob.glob(osp.join(ROOT, 'configs', 'yolo', '*.yaml')))
# file suffix -> layer name
SUFFIXES = {'carafe': 'CARAFE', 'dlu': 'DLU', 'ddf_up': 'DDFUp', 'lda_aqu': 'LDAAQU',
            'dysample': 'DySample', 'fade': 'FADE', 'sapa': 'SAPA'}
TRAIN_ARGS = dict(epochs=1, imgsz=96, batch=8, workers=0, device='cpu', deterministic=True,
                  seed=0, plots=False, amp=False, verbose=False)


def _tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def _dlu_layers(model):
    return [m for m in model.modules() if isinstance(m, dlu_yolo.UpsamplerLayer)]


def test_register_is_idempotent_and_names_resolve():
    wrapped = tasks.parse_model
    dlu_yolo.register()
    assert tasks.parse_model is wrapped and wrapped.dlu_mm_wrapped
    for name, layer in dlu_yolo.LAYERS.items():
        assert getattr(tasks, name) is layer
    assert set(dlu_yolo.LAYERS) == {'CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE',
                                    'SAPA'}


def test_shipped_yamls_are_all_there():
    names = {osp.basename(p) for p in YAMLS}
    for suffix in SUFFIXES:
        assert f'yolov8n-{suffix}.yaml' in names and f'yolo11n-{suffix}.yaml' in names
    assert any('-seg-' in name for name in names)


@pytest.mark.parametrize('path', YAMLS, ids=[osp.basename(p) for p in YAMLS])
def test_shipped_yaml_builds_and_trains(path):
    torch.manual_seed(0)
    yolo = YOLO(path)
    model = yolo.model
    layers = _dlu_layers(model)
    suffix = osp.basename(path).split('-')[-1][:-len('.yaml')]
    assert [type(m).__name__ for m in layers] == [SUFFIXES[suffix]] * 2
    assert yolo.task == ('segment' if '-seg-' in path else 'detect')
    inputs = {}
    for layer in layers:  # built by the stride probe
        assert layer.upsampler is not None
        layer.register_forward_pre_hook(lambda m, args: inputs.update({m.i: args[0]}))
    model.train()
    output = model(torch.rand(2, 3, 64, 64))
    sum(t.float().square().mean() for t in _tensors(output)).backward()
    for layer in layers:
        x, guide = inputs[layer.i] if layer.guided else (inputs[layer.i], None)
        assert layer.upsampler.channels == x.shape[1]  # the channels parse_model gave the input
        if guide is not None:  # projected only where the guide has other channels than x
            assert (layer.guide_projection is not None) == (guide.shape[1] != x.shape[1])
        grads = [p.grad for p in layer.parameters()]
        assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def _tiny_model_dict(head_row, p4_channels=128):
    return {
        'nc': 3,
        'backbone': [
            [-1, 1, 'Conv', [16, 3, 2]],           # 0 P1/2
            [-1, 1, 'Conv', [32, 3, 2]],           # 1 P2/4
            [-1, 1, 'Conv', [64, 3, 2]],           # 2 P3/8, 64 channels
            [-1, 1, 'Conv', [p4_channels, 3, 2]],  # 3 P4/16
        ],
        'head': [
            head_row,                              # 4: P4 -> P3 size
            [[-1, 2], 1, 'Concat', [1]],           # 5
            [[5, 3], 1, 'Detect', ['nc']],         # 6
        ],
    }


@pytest.mark.parametrize('name', ['FADE', 'SAPA'])
@pytest.mark.parametrize('p4_channels', [128, 64])
def test_guided_layer_with_guide_of_other_channels(name, p4_channels):
    torch.manual_seed(0)
    model = DetectionModel(_tiny_model_dict([[-1, 2], 1, name, [2]], p4_channels), verbose=False)
    layer = model.model[4]
    assert layer.f == [-1, 2] and 2 in model.save
    assert layer.upsampler.channels == p4_channels
    if p4_channels == 64:  # guide (layer 2) has the input's channels: used as it is
        assert layer.guide_projection is None
    else:  # 64-channel guide projected to the input's 128 channels
        assert (layer.guide_projection.in_channels, layer.guide_projection.out_channels) == (
            64, 128)
    features = {}
    model.model[2].register_forward_hook(lambda m, i, o: features.update(guide=o))
    model.train()
    x = torch.rand(2, 3, 64, 64)
    output = model(x)
    sum(t.square().mean() for t in _tensors(output)).backward()
    assert features['guide'].shape[1] == 64
    assert all(p.grad is not None for p in layer.parameters())
    assert model.model[5].f == [-1, 2]  # the concat after it sees 128 + 64 or 64 + 64 channels


def test_options_mapping_reaches_the_upsampler():
    model = DetectionModel(_tiny_model_dict([-1, 1, 'CARAFE', [2, {'up_kernel': 3}]]),
                           verbose=False)
    assert model.model[4].upsampler.up_kernel == 3
    assert model.model[4].upsampler.scale_factor == 2


@pytest.mark.parametrize('row, error, match', [
    ([-1, 1, 'FADE', [2]], ValueError, r'from must be \[input, guide\]'),
    ([[-1, 2], 1, 'DLU', [2]], ValueError, 'upsamples one input'),
    ([[-1, 2], 2, 'SAPA', [2]], ValueError, 'cannot be repeated'),
    ([-1, 1, 'DLU', [2, {'channels': 8}]], ValueError, 'must not set channels'),
    ([-1, 1, 'DLU', [2, {'no_such_keyword': 1}]], TypeError, 'bad DLU options'),
    ([-1, 1, 'DLU', [2, 3]], TypeError, 'options must be a mapping'),
    ([-1, 1, 'DLU', [0]], ValueError, 'scale_factor must be an integer >= 1'),
])
def test_bad_rows_fail_with_their_reason(row, error, match):
    with pytest.raises(error, match=match):
        DetectionModel(_tiny_model_dict(row), verbose=False)


# ---------------------------------------------------------------------------------------------
# training, reloading, export: one 1-epoch run shared by the tests below
# ---------------------------------------------------------------------------------------------
def _no_network(*args, **kwargs):
    raise OSError('network access is disabled in this test')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """1 epoch of YOLOv8n-FADE (guided, guides of other channel counts) with the network cut off:
    every name lookup and connection fails (ultralytics' font check tries one and goes on)."""
    work = tmp_path_factory.mktemp('yolo')
    data = synthetic_yolo.generate(str(work / 'data'), num_train=16, num_val=8)
    torch.manual_seed(0)
    model = YOLO(osp.join(ROOT, 'configs', 'yolo', 'yolov8n-fade.yaml'))
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        patch.setattr(socket, 'getaddrinfo', _no_network)
        patch.setattr(socket.socket, 'connect', _no_network)
        warnings.simplefilter('always')
        metrics = model.train(data=data, project=str(work / 'runs'), name='train', **TRAIN_ARGS)
    best = work / 'runs' / 'train' / 'weights' / 'best.pt'
    return dict(work=work, data=data, metrics=metrics, best=str(best), warnings=caught)


def test_one_epoch_deterministic_training_and_val(trained, capfd):
    assert osp.isfile(trained['best'])
    assert 0.0 <= trained['metrics'].box.map <= 1.0
    nondeterministic = [str(w.message) for w in trained['warnings']
                        if 'determinis' in str(w.message) or 'dlu_mm' in str(w.message)]
    assert nondeterministic == []
    capfd.readouterr()
    metrics = YOLO(trained['best']).val(data=trained['data'], imgsz=96, batch=8, workers=0,
                                        device='cpu', plots=False,
                                        project=str(trained['work'] / 'runs'), name='val')
    printed = ''.join(capfd.readouterr())
    assert 'mAP50-95' in printed
    assert 0.0 <= metrics.box.map <= 1.0


RELOAD_SCRIPT = r'''
import sys, torch
import dlu_mm.integrations.ultralytics  # registers the layers and allow-lists their classes
from ultralytics import YOLO
from ultralytics.nn.tasks import torch_safe_load
ckpt, _ = torch_safe_load(sys.argv[1], safe_only=True)  # torch.load(weights_only=True)
model = YOLO(sys.argv[1]).model.eval()
torch.manual_seed(0)
x = torch.rand(1, 3, 96, 96)
with torch.no_grad():
    y = model(x)[0]
torch.save(dict(y=y, restricted_type=type(ckpt['model']).__name__), sys.argv[2])
'''


def test_best_pt_reloads_in_a_new_process(trained, tmp_path):
    out = tmp_path / 'reloaded.pt'
    env = dict(os.environ, ULTRALYTICS_SAFE_LOAD='1')  # YOLO(best.pt) restricted too
    run = subprocess.run([sys.executable, '-c', RELOAD_SCRIPT, trained['best'], str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    reloaded = torch.load(out)
    assert reloaded['restricted_type'] == 'DetectionModel'
    model = YOLO(trained['best']).model.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)[0]
    torch.testing.assert_close(reloaded['y'], expected)


def test_restricted_loading_refuses_unregistered_classes(trained):
    """Without dlu_mm's allow-list the same restricted load fails: the registration matters."""
    code = ('import sys\nfrom ultralytics.nn.tasks import torch_safe_load\n'
            'torch_safe_load(sys.argv[1], safe_only=True)\n')
    run = subprocess.run([sys.executable, '-c', code, trained['best']], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert run.returncode != 0
    assert 'outside the supported Ultralytics checkpoint format' in run.stderr


def test_onnx_export_standard_ops_match_pytorch(trained):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    path = YOLO(trained['best']).export(format='onnx', imgsz=96, device='cpu')
    graph = onnx.load(path).graph
    domains = {(node.domain or 'ai.onnx') for node in graph.node}
    assert domains == {'ai.onnx'}, domains
    model = YOLO(trained['best']).model.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert actual.shape == expected.shape
    relative = abs(actual - expected).max() / abs(expected).max()
    assert relative < 1e-4, relative
