"""dlu_mm.upsamplers with torch alone: every upsampler runs forward + backward on the compiled
kernels in a process where mmengine (and the rest of OpenMMLab) cannot be imported, with the same
state-dict keys as the mmengine-based modules; with mmengine they stay BaseModules in its root
MODELS registry.

In a stack without mmengine (DLU_MM_STACK=yolo) the hiding is a no-op and the test checks the
real thing; in the other stacks it hides the installed mmengine (``sys.modules[name] = None``
makes both ``import`` and ``importlib.util.find_spec`` report it missing).
"""
import json
import subprocess
import sys

import pytest
import torch

HIDDEN = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain')

# class name -> (constructor kwargs besides channels=16, scale_factor=2; guided)
CASES = {
    'CARAFE': ({}, False), 'DLU': ({}, False), 'DDFUp': ({}, False), 'LDAAQU': ({}, False),
    'DySample': ({}, False), 'FADE': ({}, True), 'SAPA': ({}, True),
}

TORCH_ONLY_SCRIPT = r'''
import json, sys
for name in sys.argv[1].split(','):
    sys.modules[name] = None  # import and find_spec now report it missing
import torch
from dlu_mm.ops import use_backend
from dlu_mm.upsamplers import CARAFE, DLU, DDFUp, LDAAQU, DySample, FADE, SAPA
from dlu_mm.upsamplers import base, register_upsampler
classes = dict(CARAFE=CARAFE, DLU=DLU, DDFUp=DDFUp, LDAAQU=LDAAQU, DySample=DySample,
               FADE=FADE, SAPA=SAPA)
cases = json.loads(sys.argv[2])
report = dict(mmengine_available=base.MMENGINE_AVAILABLE,
              loaded=sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1].split(',')
                            and sys.modules[m] is not None),
              modules={})
for name, (kwargs, guided) in cases.items():
    torch.manual_seed(0)
    module = classes[name](16, 2, **kwargs)
    x = torch.randn(2, 16, 7, 9, requires_grad=True)
    guide = torch.randn(2, 16, 14, 18, requires_grad=True) if guided else None
    with use_backend('native'):  # compiled kernels or RuntimeError
        y = module(x, guide)
        y.square().sum().backward()
    grads = [x.grad] + ([guide.grad] if guided else [])
    grads += [p.grad for p in module.parameters()]
    with use_backend('reference'):
        y_ref = module(x, guide)
    module.init_weights()
    report['modules'][name] = dict(
        bases=[cls.__module__ + '.' + cls.__name__ for cls in type(module).__mro__],
        shape=list(y.shape), keys=sorted(module.state_dict()),
        max_error=float((y - y_ref).abs().max()),
        grads_finite=all(g is not None and bool(torch.isfinite(g).all()) for g in grads))
try:
    DLU(16, init_cfg=dict(type='Pretrained', checkpoint='x.pth'))
except ValueError as error:
    report['init_cfg_error'] = str(error)
try:
    register_upsampler(DLU)
except ModuleNotFoundError as error:
    report['register_error'] = str(error)
print(json.dumps(report))
'''


@pytest.fixture(scope='module')
def torch_only_report():
    out = subprocess.run([sys.executable, '-c', TORCH_ONLY_SCRIPT, ','.join(HIDDEN),
                          json.dumps(CASES)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_openmmlab_is_imported(torch_only_report):
    assert torch_only_report['mmengine_available'] is False
    assert torch_only_report['loaded'] == []


@pytest.mark.parametrize('name', sorted(CASES))
def test_forward_backward_on_compiled_kernels(torch_only_report, name):
    result = torch_only_report['modules'][name]
    assert result['shape'] == [2, 16, 14, 18]
    assert result['grads_finite']
    assert result['max_error'] < 1e-4  # compiled kernels == pure-PyTorch reference
    assert not any(base.startswith('mmengine') for base in result['bases'])
    assert 'dlu_mm.upsamplers.base.TorchBaseModule' in result['bases']


def test_torch_only_rejects_init_cfg_and_registration(torch_only_report):
    assert 'init_cfg=' in torch_only_report['init_cfg_error']
    assert 'needs mmengine' in torch_only_report['init_cfg_error']
    assert 'mmengine is not installed' in torch_only_report['register_error']


@pytest.mark.parametrize('name', sorted(CASES))
def test_same_classes_and_keys_as_with_mmengine(torch_only_report, name):
    """With mmengine installed: BaseModule subclasses, registered in the root MODELS registry,
    and exactly the state-dict keys the torch-only modules have."""
    pytest.importorskip('mmengine')
    from mmengine.model import BaseModule
    from mmengine.registry import MODELS

    import dlu_mm.upsamplers as upsamplers
    cls = getattr(upsamplers, name)
    kwargs, _ = CASES[name]
    module = cls(16, 2, **kwargs)
    assert isinstance(module, BaseModule)
    assert MODELS.get(name) is cls
    assert sorted(module.state_dict()) == torch_only_report['modules'][name]['keys']
    # init_cfg is mmengine's: applied by init_weights() after the operator's own init
    module = cls(16, 2, init_cfg=dict(type='Constant', layer='Conv2d', val=0.5, bias=0.0),
                 **kwargs)
    module.init_weights()
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(bool((m.weight == 0.5).all()) for m in convs)


def test_dlu_mm_declares_no_dependencies():
    """`pip install --no-build-isolation .` into a torch-only environment installs nothing else:
    the project metadata lists no runtime dependency (torch is a build requirement)."""
    import pathlib
    tomllib = pytest.importorskip('tomllib')  # Python >= 3.11

    pyproject = pathlib.Path(__file__).resolve().parents[1] / 'pyproject.toml'
    project = tomllib.loads(pyproject.read_text())['project']
    assert project.get('dependencies') == []
    assert 'dependencies' not in project.get('dynamic', [])
