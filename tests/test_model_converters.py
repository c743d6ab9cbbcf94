"""tools/model_converters/convert.py and dlu_mm.converters: released checkpoints of mmdet's CARAFE
zoo and of the DLU / LDA-AQU / DySample / UPerHead_Upsample code bases -> dlu_mm.

mmdet's own FPN_CARAFE / FCNMaskHead / mmcv CARAFEPack run for real (their CUDA-only CARAFE op
replaced by our reference reassembly). The authors' code bases are not installable, so their
modules are rebuilt here from their source (the upstream files are named in
dlu_mm/converters/sources.py): the key layouts and shapes, and for DLU (DLUPack,
Fu0511/Dynamic-Lightweight-Upsampling) and DySample (tiny-smart/dysample dysample.py) the
forward, transcribed below. Outputs are compared in float64; negative controls permute a channel
order and must fail the comparison. The last section runs the tool on files that are no
loadable checkpoint (empty, truncated, text, random bytes, a foreign pickle global).
"""
import importlib
import os.path as osp
import random
import re
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmdet.models.necks import FPN, FPN_CARAFE  # noqa: E402
from mmdet.models.roi_heads.mask_heads import FCNMaskHead  # noqa: E402

from dlu_mm import converters  # noqa: E402
from dlu_mm.checkpoint import register_mmengine_safe_globals  # noqa: E402
from dlu_mm.converters import (CheckpointFileError, ConversionError,  # noqa: E402
                               UnsafeCheckpointError, convert_state_dict, detect_source,
                               load_checkpoint, split_checkpoint)
from dlu_mm.det import UpsampleFCNMaskHead, UpsampleFPN  # noqa: E402
from dlu_mm.ops import reassemble_reference  # noqa: E402
from dlu_mm.upsamplers import DLU, DySample  # noqa: E402
from seeded import randn, randomise_  # noqa: E402
from tool_cases import load_tool  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL_PATH = osp.join(REPO, 'tools', 'model_converters', 'convert.py')
IN_CHANNELS = [8, 16, 24, 32]
WIDTH = 16
SIZES = [(33, 29), (17, 15), (9, 8), (5, 4)]  # odd sizes: crops in every top-down step
CM = 8  # compressed channels of the small CARAFE / DLU modules
# weights_only with dlu_mm's allow-list where it is registered (torch >= 2.6)
LOADERS = ['restricted'] + (['weights_only'] if register_mmengine_safe_globals() else [])


TOOL = load_tool('model_converters/convert.py')


@pytest.fixture
def cpu_carafe(monkeypatch):
    """mmcv's CARAFE op is CUDA-only: replace only that op by our reference reassembly."""
    # the module (mmcv.ops re-exports its function under the same name)
    mmcv_carafe = importlib.import_module('mmcv.ops.carafe')
    monkeypatch.setattr(mmcv_carafe, 'carafe', reassemble_reference)


def _inputs(seed=0, channels=IN_CHANNELS, sizes=SIZES):
    return tuple(randn(2, c, h, w, seed=seed + i) for i, (c, (h, w)) in
                 enumerate(zip(channels, sizes)))


def _prefixed(prefix, state_dict):
    return OrderedDict((prefix + k, v) for k, v in state_dict.items())


def _unprefixed(prefix, state_dict):
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def _max_err(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _fpn_carafe(num_outs=5, start_level=0, seed=0, **carafe):
    torch.manual_seed(seed)
    neck = FPN_CARAFE(IN_CHANNELS, WIDTH, num_outs, start_level=start_level,
                      upsample_cfg=dict(type='carafe', up_kernel=5, up_group=1, encoder_kernel=3,
                                        encoder_dilation=1, compressed_channels=CM, **carafe))
    return randomise_(neck.double(), std=0.2, seed=seed)


def _with_modules(state_dict, modules):
    """A neck state_dict whose neck.upsample_modules.* are replaced by ``modules``
    ({index: {suffix: tensor}}): the authors' necks are FPN_CARAFE's layout with their modules."""
    out = OrderedDict((k, v) for k, v in state_dict.items()
                      if not k.startswith('neck.upsample_modules.'))
    for index, tensors in modules.items():
        for name, tensor in tensors.items():
            out[f'neck.upsample_modules.{index}.{name}'] = tensor
    return out


# ----------------------------------------------------------------------- mmdet CARAFE (real)

@pytest.mark.parametrize('kwargs', [dict(num_outs=5), dict(num_outs=6),
                                    dict(num_outs=4, start_level=1)])
def test_mmdet_fpn_carafe_neck_matches(cpu_carafe, kwargs):
    source = _fpn_carafe(**kwargs)
    conversion = convert_state_dict(_prefixed('neck.', source.state_dict()), 'mmdet-carafe')
    assert conversion.layout['neck'] == 'carafe_style'
    cfg = conversion.upsamplers['model.neck.upsample_cfg']
    assert cfg == dict(type='CARAFE', compressed_channels=CM, encoder_kernel=3, up_kernel=5,
                       up_group=1)
    ours = UpsampleFPN(IN_CHANNELS, WIDTH, carafe_style=True, upsample_cfg=cfg, **kwargs).double()
    ours.load_state_dict(_unprefixed('neck.', conversion.state_dict), strict=True)
    inputs = _inputs()
    with torch.no_grad():
        expected, got = source(inputs), ours(inputs)
    assert len(got) == len(expected) == kwargs['num_outs']
    assert _max_err(expected, got) < 1e-12

    # negative control: the encoder's channels taken sub-pixel-major instead of tap-major
    state = _unprefixed('neck.', conversion.state_dict)
    taps, subs = 25, 4
    order = torch.arange(taps * subs).view(taps, subs).t().reshape(-1)
    for key in ('upsamplers.0.encoder.weight', 'upsamplers.0.encoder.bias'):
        state[key] = state[key][order]
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert _max_err(expected, ours(inputs)) > 1e-3


def test_mmdet_fcn_mask_head_carafe_matches(cpu_carafe):
    torch.manual_seed(0)
    head_args = dict(num_convs=2, roi_feat_size=7, in_channels=WIDTH, conv_out_channels=WIDTH,
                     num_classes=3)
    source = randomise_(FCNMaskHead(upsample_cfg=dict(
        type='carafe', scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
        encoder_dilation=1, compressed_channels=CM), **head_args).double(), std=0.2)
    state = _prefixed('neck.', _fpn_carafe().state_dict())
    state.update(_prefixed('roi_head.mask_head.', source.state_dict()))
    conversion = convert_state_dict(state, 'auto')
    assert conversion.source == 'mmdet-carafe' and conversion.layout['mask_head'] == 'carafe'
    assert ('roi_head.mask_head.upsample.content_encoder.weight',
            'roi_head.mask_head.upsample.encoder.weight') in conversion.renamed
    cfg = conversion.upsamplers['model.roi_head.mask_head.upsample_cfg']
    ours = UpsampleFCNMaskHead(upsample_cfg=dict(scale_factor=2, **cfg), **head_args).double()
    ours.load_state_dict(_unprefixed('roi_head.mask_head.', conversion.state_dict), strict=True)
    rois = randn(3, WIDTH, 7, 7, seed=5)
    with torch.no_grad():
        assert (source(rois) - ours(rois)).abs().max().item() < 1e-12
    assert conversion.suggested_config()[0] == 'configs/mask_rcnn_r50_fpn_carafe.py'


# ----------------------------------------------------------------------- DLU (authors' layout)

def _dlu_module(seed, cm=CM, k=5, groups=1, ke=3, channels=WIDTH):
    """DLUPack's keys and shapes (Fu0511/Dynamic-Lightweight-Upsampling), random values."""
    return OrderedDict([
        ('channel_compressor.weight', randn(cm, channels, 1, 1, seed=seed) * 0.3),
        ('channel_compressor.bias', randn(cm, seed=seed + 1) * 0.1),
        ('kernel_space_generator.weight', randn(groups * k * k, cm, ke, ke, seed=seed + 2) * 0.3),
        ('kernel_space_generator.bias', randn(groups * k * k, seed=seed + 3) * 0.1),
        ('conv_offset.weight', randn(2 * groups * 4, cm, ke, ke, seed=seed + 4) * 0.3),
        ('conv_offset.bias', randn(2 * groups * 4, seed=seed + 5) * 0.5)])


def _dlu_source_forward(x, m, k=5, s=2):
    """DLUPack's forward as the authors' code computes it: kernel space softmax, offsets (channel
    c*s*s + dy*s + dx, c=0 horizontal) in low-res pixels scaled by 2/(w-1), 2/(h-1) onto an
    align_corners=True grid of parent pixels, border padding; then CARAFE reassembly."""
    ke = m['kernel_space_generator.weight'].shape[-1]
    compressed = F.conv2d(x, m['channel_compressor.weight'], m['channel_compressor.bias'])
    space = F.conv2d(compressed, m['kernel_space_generator.weight'],
                     m['kernel_space_generator.bias'], padding=ke // 2).softmax(1)
    offsets = F.pixel_shuffle(F.conv2d(compressed, m['conv_offset.weight'], m['conv_offset.bias'],
                                       padding=ke // 2), s)  # (N, 2, sH, sW)
    n, _, h, w = x.shape
    cols = torch.arange(w, dtype=x.dtype).repeat_interleave(s) * 2 / (w - 1) - 1
    rows = torch.arange(h, dtype=x.dtype).repeat_interleave(s) * 2 / (h - 1) - 1
    grid = torch.stack((cols + offsets[:, 0] * 2 / (w - 1),
                        rows[:, None] + offsets[:, 1] * 2 / (h - 1)), dim=-1)
    kernels = F.grid_sample(space, grid, mode='bilinear', padding_mode='border',
                            align_corners=True)
    return reassemble_reference(x, kernels, k, 1, s)


def test_dlu_converts_and_matches_the_authors_function():
    modules = {i: _dlu_module(seed=10 * i) for i in range(4)}
    state = _with_modules(_prefixed('neck.', _fpn_carafe().state_dict()), modules)
    assert detect_source(state)[0] == 'dlu'
    conversion = convert_state_dict(state, 'dlu')
    cfg = conversion.upsamplers['model.neck.upsample_cfg']
    assert cfg == dict(type='DLU', compressed_channels=CM, encoder_kernel=3, up_kernel=5,
                       up_group=1)
    neck = UpsampleFPN(IN_CHANNELS, WIDTH, 5, carafe_style=True, upsample_cfg=cfg).double()
    neck.load_state_dict(_unprefixed('neck.', conversion.state_dict), strict=True)
    x = randn(2, WIDTH, 7, 6, seed=3)
    expected = _dlu_source_forward(x, modules[1])
    with torch.no_grad():
        got = neck.upsamplers[1](x)
    assert (expected - got).abs().max().item() < 1e-12
    assert conversion.suggested_config()[0] == 'configs/faster_rcnn_r50_fpn_dlu.py'

    # negative control: x and y offsets swapped
    swapped = OrderedDict(modules[1])
    for name in ('conv_offset.weight', 'conv_offset.bias'):
        swapped[name] = torch.cat((swapped[name][4:], swapped[name][:4]))
    single = DLU(WIDTH, compressed_channels=CM).double()
    single.load_state_dict({new: swapped[old] for old, new in converters.RENAMES['dlu'].items()})
    with torch.no_grad():
        assert (single(x) - expected).abs().max().item() > 1e-3


def test_dlu_groups_above_one_are_refused():
    modules = {i: _dlu_module(seed=i, groups=2, k=5) for i in range(4)}
    state = _with_modules(_prefixed('neck.', _fpn_carafe().state_dict()), modules)
    with pytest.raises(ConversionError, match=r'up_group=2.*only runs with up_group=1'):
        convert_state_dict(state, 'dlu')


# ----------------------------------------------------------------------- LDA-AQU (authors' layout)

def _lda_module(seed, channels=WIDTH, reduction=4, groups=2, heads=2, k_u=3, k_e=3, rpb=True):
    d = channels // reduction
    module = OrderedDict([
        ('proj_q.weight', randn(d, channels, 1, 1, seed=seed)),
        ('proj_k.weight', randn(d, channels, 1, 1, seed=seed + 1)),
        ('conv_offset.0.weight', randn(d // groups, 1, 3, 3, seed=seed + 2)),
        ('conv_offset.1.norm.weight', randn(d // groups, seed=seed + 3)),
        ('conv_offset.1.norm.bias', randn(d // groups, seed=seed + 4)),
        ('conv_offset.3.weight', randn(2 * k_u * k_u, d // groups, k_e, k_e, seed=seed + 5)),
        ('conv_offset.3.bias', randn(2 * k_u * k_u, seed=seed + 6)),
        ('layer_norm.norm.weight', randn(channels, seed=seed + 7)),
        ('layer_norm.norm.bias', randn(channels, seed=seed + 8))])
    if rpb:
        module['relative_position_bias_table'] = randn(1, heads, 1, k_u * k_u, d // heads,
                                                       seed=seed + 9)
    return module


@pytest.mark.parametrize('heads', [1, 2])
def test_lda_aqu_converts_with_its_rpb_reshaped(heads):
    modules = {i: _lda_module(seed=10 * i, heads=heads) for i in range(4)}
    state = _with_modules(_prefixed('neck.', _fpn_carafe().state_dict()), modules)
    assert detect_source(state)[0] == 'lda-aqu'
    conversion = convert_state_dict(state, 'auto')
    cfg = conversion.upsamplers['model.neck.upsample_cfg']
    assert cfg == dict(type='LDAAQU', reduction_factor=4, groups=2, k_e=3, k_u=3, rpb=True,
                       num_heads=heads)
    neck = UpsampleFPN(IN_CHANNELS, WIDTH, 5, carafe_style=True, upsample_cfg=cfg).double()
    neck.load_state_dict(_unprefixed('neck.', conversion.state_dict), strict=True)
    for i, module in modules.items():
        up = neck.upsamplers[i]
        table = module['relative_position_bias_table']
        for h in range(heads):  # head h's bias of point p is table[0, h, 0, p]
            assert torch.equal(up.rpb[h], table[0, h, 0])
        assert torch.equal(up.offset_net[1].weight, module['conv_offset.1.norm.weight'])
        assert torch.equal(up.norm.bias, module['layer_norm.norm.bias'])
        assert torch.equal(up.q_proj.weight, module['proj_q.weight'])
    with torch.no_grad():
        outs = neck(_inputs())
    assert all(torch.isfinite(o).all() for o in outs)
    assert any('range_factor' in note for note in conversion.notes)
    assert conversion.suggested_config()[0] == 'configs/faster_rcnn_r50_fpn_lda_aqu.py'


# ----------------------------------------------------------------------- DySample (dysample.py)

def _dysample_module(seed, channels=WIDTH, groups=4, dyscope=False, scope_bias=None,
                     style='lp'):
    s = 2
    out = 2 * groups * s * s if style == 'lp' else 2 * groups
    cin = channels if style == 'lp' else channels // (s * s)
    module = OrderedDict([('offset.weight', randn(out, cin, 1, 1, seed=seed) * 0.5),
                          ('offset.bias', randn(out, seed=seed + 1) * 0.5)])
    if dyscope:
        module['scope.weight'] = randn(out, cin, 1, 1, seed=seed + 2) * 0.5
        if scope_bias is not None:
            module['scope.bias'] = torch.full((out,), float(scope_bias), dtype=torch.float64)
    # init_pos, channel c*G*s*s + g*s*s + dy*s + dx: (dx - (s-1)/2)/s for c=0 (x), dy for c=1
    h = (torch.arange(s, dtype=torch.float64) - (s - 1) / 2) / s
    dy, dx = torch.meshgrid(h, h, indexing='ij')
    module['init_pos'] = torch.stack((dx, dy))[:, None].expand(2, groups, s, s).reshape(
        1, -1, 1, 1).float()
    return module


def _dysample_source_forward(x, m, groups=4, s=2):
    """DySample 'lp' as tiny-smart's dysample.py computes it: offsets * 0.25 (or * 0.5
    sigmoid(scope)) + init_pos, pixel shuffle, sample at the low-res pixel centre + offset
    (align_corners=False, border); offset channels [0, G*s*s) are x."""
    offset = F.conv2d(x, m['offset.weight'], m['offset.bias'])
    if 'scope.weight' in m:
        offset = offset * F.conv2d(x, m['scope.weight'], m.get('scope.bias')).sigmoid() * 0.5
    else:
        offset = offset * 0.25
    offset = F.pixel_shuffle(offset + m['init_pos'].to(x.dtype), s)  # (N, 2G, sH, sW)
    n, c, h, w = x.shape
    offset = offset.view(n, 2, groups, s * h, s * w)
    cols = torch.arange(w, dtype=x.dtype).repeat_interleave(s) + 0.5
    rows = torch.arange(h, dtype=x.dtype).repeat_interleave(s) + 0.5
    grid = torch.stack(((cols + offset[:, 0]) / w * 2 - 1,
                        (rows[:, None] + offset[:, 1]) / h * 2 - 1), dim=-1)
    out = F.grid_sample(x.reshape(n * groups, c // groups, h, w), grid.view(n * groups, s * h,
                        s * w, 2), mode='bilinear', padding_mode='border', align_corners=False)
    return out.view(n, c, s * h, s * w)


def _standard_fpn_state(add_extra_convs=False, num_outs=5):
    torch.manual_seed(0)
    neck = FPN(IN_CHANNELS, WIDTH, num_outs, add_extra_convs=add_extra_convs)
    return _prefixed('neck.', randomise_(neck.double(), std=0.2).state_dict())


@pytest.mark.parametrize('dyscope', [False, True])
def test_dysample_standard_fpn_converts_and_matches(dyscope):
    modules = {i: _dysample_module(seed=10 * i, dyscope=dyscope, scope_bias=0 if dyscope else None)
               for i in range(3)}
    state = _with_modules(_standard_fpn_state(), modules)
    conversion = convert_state_dict(state, 'auto')
    assert conversion.source == 'dysample' and conversion.layout['neck'] == 'standard'
    cfg = conversion.upsamplers['model.neck.upsample_cfg']
    assert cfg == dict(type='DySample', groups=4, style='lp', dyscope=dyscope)
    dropped = [k for k, _ in conversion.dropped]
    assert 'neck.upsample_modules.0.init_pos' in dropped
    assert ('neck.upsample_modules.0.scope.bias' in dropped) is dyscope
    neck = UpsampleFPN(IN_CHANNELS, WIDTH, 5, upsample_cfg=cfg).double()
    neck.load_state_dict(_unprefixed('neck.', conversion.state_dict), strict=True)
    assert conversion.suggested_config()[0] == 'configs/faster_rcnn_r50_fpn_dysample_std.py'

    # the whole neck: mmdet's FPN forward with dysample.py's DySample in its top-down steps
    inputs = _inputs()
    source = FPN(IN_CHANNELS, WIDTH, 5).double()
    source.load_state_dict(_unprefixed('neck.', {k: v for k, v in state.items()
                                                 if 'upsample_modules' not in k}))
    with torch.no_grad():
        laterals = [conv(x) for conv, x in zip(source.lateral_convs, inputs)]
        for i in range(3, 0, -1):
            up = _dysample_source_forward(laterals[i], modules[i - 1])
            laterals[i - 1] = laterals[i - 1] + up[..., :laterals[i - 1].shape[2],
                                                   :laterals[i - 1].shape[3]]
        expected = [conv(x) for conv, x in zip(source.fpn_convs, laterals)]
        expected.append(F.max_pool2d(expected[-1], 1, stride=2))
        got = neck(inputs)
    assert _max_err(expected, got) < 1e-12

    # negative control: x and y offset channels swapped
    state = _unprefixed('neck.', conversion.state_dict)
    for name in ('upsamplers.0.offset.weight', 'upsamplers.0.offset.bias'):
        state[name] = torch.cat((state[name][16:], state[name][:16]))
    neck.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert _max_err(expected, neck(inputs)) > 1e-3


def test_dysample_unused_extra_modules_are_dropped():
    """FPN_UPSAMPLE with add_extra_convs builds upsamplers its forward never uses."""
    modules = {i: _dysample_module(seed=i) for i in range(5)}
    state = _with_modules(_standard_fpn_state(add_extra_convs='on_input'), modules)
    conversion = convert_state_dict(state, 'dysample')
    assert conversion.layout['num_upsamplers'] == 3
    assert 'neck.upsample_modules.4.offset.weight' in [k for k, _ in conversion.dropped]
    assert not any('upsample_modules' in k or 'upsamplers.3' in k
                   for k in conversion.state_dict)
    neck = UpsampleFPN(IN_CHANNELS, WIDTH, 5, add_extra_convs='on_input',
                       upsample_cfg=dict(type='DySample')).double()
    neck.load_state_dict(_unprefixed('neck.', conversion.state_dict), strict=True)


def test_dysample_carafe_style_and_module_forward():
    modules = {i: _dysample_module(seed=10 * i, dyscope=True) for i in range(4)}
    state = _with_modules(_prefixed('neck.', _fpn_carafe().state_dict()), modules)
    conversion = convert_state_dict(state, 'dysample')
    assert conversion.layout['neck'] == 'carafe_style'
    assert conversion.suggested_config()[0] == 'configs/faster_rcnn_r50_fpn_dysample.py'
    up = DySample(WIDTH, dyscope=True).double()
    up.load_state_dict({k[len('neck.upsamplers.2.'):]: v for k, v in conversion.state_dict.items()
                        if k.startswith('neck.upsamplers.2.')}, strict=True)
    x = randn(2, WIDTH, 5, 7, seed=4)
    with torch.no_grad():
        assert (up(x) - _dysample_source_forward(x, modules[2])).abs().max().item() < 1e-12


@pytest.mark.parametrize('change, message', [
    (dict(dyscope=True, scope_bias=0.5), r'scope\.bias is non-zero'),
    (dict(style='pl'), r"'pl' style"),
])
def test_dysample_refusals(change, message):
    modules = {i: _dysample_module(seed=i, **change) for i in range(3)}
    state = _with_modules(_standard_fpn_state(), modules)
    with pytest.raises(ConversionError, match=message):
        convert_state_dict(state, 'dysample')


def test_dysample_pl_without_init_pos_and_wrong_init_pos_are_refused():
    modules = {i: _dysample_module(seed=i, style='pl', groups=1) for i in range(3)}
    for module in modules.values():
        del module['init_pos']  # 2*G = 2 output channels would not even be 2*G*s*s
    with pytest.raises(ConversionError, match="'pl' style"):
        convert_state_dict(_with_modules(_standard_fpn_state(), modules), 'dysample')
    modules = {i: _dysample_module(seed=i) for i in range(3)}
    modules[1]['init_pos'] = modules[1]['init_pos'].flip(1)
    with pytest.raises(ConversionError, match='init_pos differs'):
        convert_state_dict(_with_modules(_standard_fpn_state(), modules), 'dysample')


# ----------------------------------------------------------------------- UPerHead_Upsample

@pytest.mark.parametrize('kind', ['carafe', 'dysample'])
def test_uperhead_upsample_converts(cpu_carafe, kind):
    pytest.importorskip('mmseg.models')
    from mmcv.ops import CARAFEPack
    from mmseg.models.decode_heads import UPerHead

    from dlu_mm.seg import UpsampleUPerHead
    head_args = dict(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], channels=WIDTH,
                     pool_scales=(1, 2), num_classes=3)
    torch.manual_seed(0)
    head = randomise_(UPerHead(**head_args).double(), std=0.2)
    state = _prefixed('decode_head.', head.state_dict())
    if kind == 'carafe':
        sources = [randomise_(CARAFEPack(WIDTH, 2, compressed_channels=CM).double(), 0.2, seed=i)
                   for i in range(3)]
        modules = {i: m.state_dict() for i, m in enumerate(sources)}
    else:
        modules = {i: _dysample_module(seed=10 * i) for i in range(3)}
    for i, module in modules.items():
        state.update(_prefixed(f'decode_head.upsample_modules.{i}.', module))
    conversion = convert_state_dict(state, 'auto')
    assert conversion.source == 'uperhead-upsample'
    cfg = conversion.upsamplers['model.decode_head.upsample_cfg']
    ours = UpsampleUPerHead(upsample_cfg=cfg, **head_args).double()
    ours.load_state_dict(_unprefixed('decode_head.', conversion.state_dict), strict=True)
    x = randn(2, WIDTH, 6, 5, seed=2)
    with torch.no_grad():
        expected = (sources[1](x) if kind == 'carafe'
                    else _dysample_source_forward(x, modules[1]))
        assert (ours.top_down_upsamplers[1](x) - expected).abs().max().item() < 1e-12
    assert conversion.suggested_config()[0] == \
        f'configs/upernet_r50_512x512_160k_ade20k_{kind}.py'


# ----------------------------------------------------------------------- detection, errors

def test_detection_and_wrong_source_errors():
    carafe_state = _prefixed('neck.', _fpn_carafe().state_dict())
    assert detect_source(carafe_state)[0] == 'mmdet-carafe'
    with pytest.raises(ConversionError, match=r"--from dlu.*look like 'mmdet-carafe'"):
        convert_state_dict(carafe_state, 'dlu')
    with pytest.raises(ValueError, match='source must be one of'):
        convert_state_dict(carafe_state, 'carafe')
    ours = UpsampleFPN(IN_CHANNELS, WIDTH, 5, carafe_style=True,
                       upsample_cfg=dict(type='CARAFE')).state_dict()
    with pytest.raises(ConversionError, match="already has dlu_mm's layout"):
        detect_source(_prefixed('neck.', ours))
    with pytest.raises(ConversionError, match='no upsampler modules of a known source'):
        detect_source(_standard_fpn_state())
    with pytest.raises(TypeError, match='state_dict values must be tensors'):
        convert_state_dict({'state_dict': {'neck.x': 1}})
    with pytest.raises(TypeError, match=r"holds no state_dict: top-level keys \['neck.x'\]"):
        convert_state_dict({'neck.x': 1})
    with pytest.raises(TypeError, match='state_dict must be a dict'):
        convert_state_dict([torch.ones(1)])


def test_unexpected_keys_are_reported_or_refused():
    state = _prefixed('neck.', _fpn_carafe().state_dict())
    state['neck.extra_norm.weight'] = torch.ones(3)
    state['module.backbone.conv1.weight'] = torch.ones(2)  # DDP prefix is stripped
    conversion = convert_state_dict(state, 'auto')
    assert conversion.unexpected == ['neck.extra_norm.weight']
    assert torch.equal(conversion.state_dict['neck.extra_norm.weight'], torch.ones(3))
    assert 'backbone.conv1.weight' in conversion.state_dict
    # everything outside the upsamplers is the same tensor under the same key
    for key, value in state.items():
        if 'upsample_modules' not in key and not key.startswith('module.'):
            assert conversion.state_dict[key] is value
    state['neck.upsample_modules.1.mystery.weight'] = torch.ones(1)
    with pytest.raises(ConversionError, match=r"upsample_modules\.1\..*\['mystery\.weight'\]"):
        convert_state_dict(state, 'auto')


# ----------------------------------------------------------------------- loading

def _side_effect(path):  # what a malicious pickle would run
    open(path, 'w').close()
    return 0


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return _side_effect, (self.path,)


def _mmengine_checkpoint(state_dict):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('dlu_mm_converter_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 3)
    return dict(meta=dict(epoch=1, iter=3, mmengine_version='0.10.7', seed=0,
                          dataset_meta=dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])),
                state_dict=state_dict, message_hub=hub.state_dict(),
                optimizer=dict(state={}, param_groups=[dict(lr=0.02, params=[0])]),
                param_schedulers=[dict(base_lrs=[0.02], last_epoch=3)])


def _mmcv_runner_checkpoint(state_dict):
    return dict(meta=dict(mmcv_version='1.0.0', mmdet_version='2.0.0', time='x',
                          CLASSES=('a', 'b'), epoch=12, iter=10, config='model = dict()',
                          hook_msgs=dict(last_ckpt='x.pth')),
                state_dict=state_dict, optimizer=dict(state={}, param_groups=[dict(lr=0.02)]))


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('container', ['mmcv-runner', 'mmengine'])
def test_load_containers(tmp_path, loader, container):
    state = OrderedDict((f'module.{k}', v) for k, v in
                        _prefixed('neck.', _fpn_carafe().state_dict()).items())
    path = str(tmp_path / 'src.pth')
    if container == 'mmengine':
        torch.save(_mmengine_checkpoint(state), path)
    else:  # mmdet 2.0's zoo files predate torch's zip format
        torch.save(_mmcv_runner_checkpoint(state), path, _use_new_zipfile_serialization=False)
    state_dict, meta, found = split_checkpoint(load_checkpoint(path, loader=loader))
    assert found == container
    assert list(state_dict) == [k[len('module.'):] for k in state]
    assert all(torch.equal(a, b) for a, b in zip(state_dict.values(), state.values()))
    assert meta['epoch'] in (1, 12)


@pytest.mark.parametrize('loader', LOADERS)
def test_foreign_pickle_global_is_reported_not_executed(tmp_path, loader):
    marker = tmp_path / 'executed'
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={'neck.x': torch.ones(1)}, meta=dict(hook=_Payload(str(marker)))),
               path)
    with pytest.raises(UnsafeCheckpointError, match=r'_side_effect.*not imported or executed'):
        load_checkpoint(path, loader=loader)
    assert not marker.exists()
    with pytest.raises(SystemExit, match='_side_effect'):
        TOOL.main([path, str(tmp_path / 'out.pth')])
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_load_argument_errors(tmp_path):
    with pytest.raises(TypeError, match='path must be'):
        load_checkpoint(3)
    with pytest.raises(ValueError, match='loader must be one of'):
        load_checkpoint(__file__, loader='pickle')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_checkpoint(str(tmp_path / 'missing.pth'))
    with pytest.raises(IsADirectoryError, match='checkpoint is a directory'):
        load_checkpoint(tmp_path)


def test_public_names_are_kept_where_they_were():
    """dlu_mm.converters was one module: every name it defined is still importable from it,
    as the object its new home defines."""
    from dlu_mm import checkpoint, checkpoint_loading
    from dlu_mm.converters import conversion, module_conversion, sources
    homes = {sources: ['SOURCES', 'SCALE', 'KIND_TYPES', 'KIND_CONFIG_NAMES', 'SOURCE_KINDS',
                       'KIND_SIGNATURES', 'RENAMES', 'OPTIONAL', 'module_kind'],
             module_conversion: ['ConversionError', 'convert_module'],
             conversion: ['Conversion', 'detect_source', 'convert_state_dict', 'suggest_config',
                          'plain_meta', 'converted_meta'],
             checkpoint_loading: ['LOADERS', 'CheckpointFileError', 'UnsafeCheckpointError',
                                  'load_checkpoint', 'split_checkpoint'],
             checkpoint: ['mmengine_safe_globals', 'register_mmengine_safe_globals']}
    for home, names in homes.items():
        for name in names:
            assert getattr(converters, name) is getattr(home, name), name


# ----------------------------------------------------------------------- files, no checkpoint

def _not_a_checkpoint(tmp_path, case):
    """(path, CheckpointFileError.problem, message after the quoted path) of a file that
    load_checkpoint refuses."""
    path = tmp_path / f'{case}.pth'
    state = _prefixed('neck.', _fpn_carafe().state_dict())
    if case == 'empty':
        path.write_bytes(b'')
        return path, 'empty', r'is empty \(0 bytes\), not a torch checkpoint'
    if case == 'text':
        path.write_text('model = dict(type="FasterRCNN")\n')
        return path, 'not a checkpoint', (r'is not a torch checkpoint: it is a text file \(it '
                                          r'starts with \'model = dict\(type="FasterRCNN"\)\'\)')
    if case == 'random':
        data = bytes(random.Random(0).randrange(256) for _ in range(4096))
        assert not data.startswith((b'PK', b'\x80'))
        path.write_bytes(data)
        return path, 'not a checkpoint', (r'is not a torch checkpoint: its first bytes \([0-9a-f ]+'
                                          r"\) are neither a torch zip archive .* nor torch's "
                                          r'legacy pickle format')
    if case == 'truncated-zip':  # an mmengine file whose download stopped half-way
        torch.save(_mmengine_checkpoint(state), path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return path, 'truncated', (rf'is truncated: it starts as a torch zip archive, but its '
                                   rf'{len(data) // 2} bytes end before the archive does .*')
    torch.save(_mmcv_runner_checkpoint(state), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    if case == 'truncated-legacy-tensors':  # the pickles are whole, the tensor data is not
        path.write_bytes(data[:len(data) // 2])
        return path, 'truncated', (r'is truncated: a torch checkpoint \(legacy pickle format\) '
                                   rf'whose {len(data) // 2} bytes end inside its tensor data .*')
    assert case == 'truncated-legacy-pickle'
    path.write_bytes(data[:200])  # inside the pickled object: its global names are cut too
    return path, 'truncated', (r'is truncated: a torch checkpoint \(legacy pickle format\) '
                               r'whose 200 bytes end inside its pickled objects; .*')


NOT_A_CHECKPOINT = ['empty', 'text', 'random', 'truncated-zip', 'truncated-legacy-tensors',
                    'truncated-legacy-pickle']


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('case', NOT_A_CHECKPOINT)
def test_load_says_what_a_file_is_when_it_is_no_checkpoint(tmp_path, loader, case):
    path, problem, message = _not_a_checkpoint(tmp_path, case)
    with pytest.raises(CheckpointFileError) as error:
        load_checkpoint(path, loader=loader)
    assert error.value.problem == problem and error.value.path == str(path)
    assert isinstance(error.value, ValueError)
    assert re.fullmatch(re.escape(repr(str(path))) + ' ' + message, str(error.value)), \
        str(error.value)


def _run_tool(tmp_path, src):
    dst = tmp_path / 'converted.pth'
    result = subprocess.run([sys.executable, TOOL_PATH, str(src), str(dst)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert not dst.exists()
    return result


@pytest.mark.parametrize('case', NOT_A_CHECKPOINT + ['unsafe'])
def test_tool_names_what_the_file_is_in_one_line(tmp_path, case):
    """What a new user sees: one `error: ...` line on stderr and exit status 1, no traceback."""
    if case == 'unsafe':  # a real checkpoint whose pickle calls a function on load
        marker = tmp_path / 'executed'
        path = tmp_path / 'evil.pth'
        torch.save(dict(state_dict={'neck.x': torch.ones(1)},
                        meta=dict(hook=_Payload(str(marker)))), path)
        message = (r'refusing to load .*evil\.pth\': it needs the pickle global '
                   r"'[\w.]*_side_effect', which is not on the allow-list .*")
    else:
        path, _, message = _not_a_checkpoint(tmp_path, case)
        message = re.escape(repr(str(path))) + ' ' + message
    result = _run_tool(tmp_path, path)
    assert result.returncode == 1, result
    assert result.stdout == ''
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch('error: ' + message, lines[0]), result.stderr
    if case == 'unsafe':
        assert not marker.exists()


# ----------------------------------------------------------------------- the tool, full models

def _build(config, **cfg_options):
    import mmdet
    from mmengine.config import Config
    if config.startswith('mmdet::'):  # mmdet's own configs, installed with it
        config = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', config[len('mmdet::'):])
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options)
    return TOOL.build_model(cfg)


def test_tool_converts_the_mmdet_carafe_zoo_layout(tmp_path, capsys):
    """mmdet's own CARAFE Faster R-CNN (an mmdet 2.x file) -> our config, through the CLI, then
    loaded as tools/test.py loads it (mmengine load_checkpoint, weights_only on torch >= 2.6)."""
    from mmengine.runner import load_checkpoint as mmengine_load
    source = _build('mmdet::carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py')
    state = source.state_dict()
    assert len(state) == 368
    src, dst = str(tmp_path / 'zoo.pth'), str(tmp_path / 'converted.pth')
    torch.save(_mmcv_runner_checkpoint(state), src, _use_new_zipfile_serialization=False)
    TOOL.main(['--from', 'auto', src, dst])
    out = capsys.readouterr().out
    assert '--from auto: found mmdet-carafe' in out
    assert 'loads strictly into configs/faster_rcnn_r50_fpn_carafe.py' in out
    assert 'evaluate with: python tools/test.py configs/faster_rcnn_r50_fpn_carafe.py ' + dst in out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    assert saved['meta']['converted_from'] == 'mmdet-carafe'
    assert saved['meta']['dataset_meta'] == dict(classes=('a', 'b'))
    assert saved['meta']['source_meta']['mmdet_version'] == '2.0.0'
    assert len(saved['state_dict']) == 368
    model = _build(osp.join(REPO, 'configs', 'faster_rcnn_r50_fpn_carafe.py'))
    mmengine_load(model, dst, map_location='cpu', strict=True)
    renamed = dict(TOOL.convert_state_dict(state).renamed)
    for key, value in model.state_dict().items():
        source_key = next((k for k, v in renamed.items() if v == key), key)
        assert torch.equal(value, state[source_key])


def _swap_modules(state, kind_modules, mask=None):
    replaced = ('neck.upsample_modules.',) + (() if mask is None
                                              else ('roi_head.mask_head.upsample.',))
    out = OrderedDict((k, v) for k, v in state.items() if not k.startswith(replaced))
    for index, module in kind_modules.items():
        out.update(_prefixed(f'neck.upsample_modules.{index}.', module))
    if mask is not None:
        out.update(_prefixed('roi_head.mask_head.upsample.', mask))
    return out


def _check(conversion):
    suggested, _ = conversion.suggested_config()
    assert suggested is not None
    overrides, problems = TOOL.check_against_config(conversion.state_dict, conversion,
                                                    osp.join(REPO, suggested))
    assert problems == []
    return suggested, overrides


def test_full_models_load_strictly_into_the_named_configs():
    """Every source's full-detector layout loads strictly into the config the tool names."""
    faster = _build('mmdet::carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py').state_dict()
    c = 256
    dlu = _swap_modules(faster, {i: _dlu_module(i, cm=64, channels=c) for i in range(4)})
    assert _check(convert_state_dict(dlu, 'dlu')) == ('configs/faster_rcnn_r50_fpn_dlu.py', {})
    lda = _swap_modules(faster, {i: _lda_module(i, channels=c, heads=1) for i in range(4)})
    assert _check(convert_state_dict(lda, 'lda-aqu')) == (
        'configs/faster_rcnn_r50_fpn_lda_aqu.py', {})
    dys = _swap_modules(faster, {i: _dysample_module(i, channels=c, dyscope=True)
                                 for i in range(4)})
    assert _check(convert_state_dict(dys, 'dysample')) == (
        'configs/faster_rcnn_r50_fpn_dysample.py', {'model.neck.upsample_cfg.dyscope': True})

    mask = _build('mmdet::carafe/mask-rcnn_r50_fpn-carafe_1x_coco.py').state_dict()
    assert len(mask) == 382
    assert _check(convert_state_dict(mask, 'mmdet-carafe')) == (
        'configs/mask_rcnn_r50_fpn_carafe.py', {})
    deconv = dict(weight=torch.zeros(c, c, 2, 2), bias=torch.zeros(c))
    dys_mask = _swap_modules(mask, {i: _dysample_module(i, channels=c) for i in range(4)}, deconv)
    assert _check(convert_state_dict(dys_mask, 'dysample')) == (
        'configs/mask_rcnn_r50_fpn_dysample_deconv.py', {})

    standard = _build('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py').state_dict()
    std = _swap_modules(standard, {i: _dysample_module(i, channels=c, groups=8)
                                   for i in range(3)})
    conversion = convert_state_dict(std, 'auto')
    assert len(conversion.state_dict) == 366
    assert _check(conversion) == ('configs/mask_rcnn_r50_fpn_dysample_std.py',
                                  {'model.neck.upsample_cfg.groups': 8})
    std_faster = OrderedDict((k, v) for k, v in std.items() if 'mask_head' not in k)
    conversion = convert_state_dict(std_faster, 'auto')
    assert len(conversion.state_dict) == 354
    assert _check(conversion)[0] == 'configs/faster_rcnn_r50_fpn_dysample_std.py'


def test_tool_refusals_exit_with_a_message(tmp_path, capsys):
    state = _with_modules(_standard_fpn_state(), {i: _dysample_module(
        i, dyscope=True, scope_bias=0.1) for i in range(3)})
    src = str(tmp_path / 'src.pth')
    torch.save(_mmengine_checkpoint(state), src)
    with pytest.raises(SystemExit, match=r'^error: .*scope\.bias is non-zero'):
        TOOL.main(['--from', 'dysample', src, str(tmp_path / 'dst.pth')])
    with pytest.raises(SystemExit, match='DST must differ from SRC'):
        TOOL.main([src, src])
    with pytest.raises(SystemExit, match='--config not found'):
        TOOL.main([src, str(tmp_path / 'dst.pth'), '--config', str(tmp_path / 'no.py')])
    with pytest.raises(SystemExit) as error:
        TOOL.main(['--from', 'carafe', src, str(tmp_path / 'dst.pth')])
    assert error.value.code == 2  # argparse: invalid choice
    # a small neck does not fit the shipped R50 config: the strict check says why
    state = _with_modules(_standard_fpn_state(), {i: _dysample_module(i) for i in range(3)})
    torch.save(_mmengine_checkpoint(state), src)
    with pytest.raises(SystemExit, match=r'does not load strictly into .*dysample_std\.py'):
        TOOL.main([src, str(tmp_path / 'dst.pth')])
    assert not (tmp_path / 'dst.pth').exists()
    TOOL.main([src, str(tmp_path / 'dst.pth'), '--no-check'])
    assert 'not checked against' in capsys.readouterr().out
    assert torch.load(str(tmp_path / 'dst.pth'), weights_only=True)['meta']['dataset_meta'] == \
        dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])


def test_uperhead_upsample_full_model_loads_into_the_named_config():
    pytest.importorskip('mmseg.models')
    import mmseg
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', 'upernet',
                                   'upernet_r50_4xb4-160k_ade20k-512x512.py'))
    state = TOOL.build_model(cfg).state_dict()
    for i in range(3):  # UPerHead_Upsample: UPerHead's keys + upsample_modules (C=512)
        state.update(_prefixed(f'decode_head.upsample_modules.{i}.',
                               _dysample_module(i, channels=512)))
    conversion = convert_state_dict(state, 'auto')
    assert conversion.source == 'uperhead-upsample'
    assert _check(conversion) == ('configs/upernet_r50_512x512_160k_ade20k_dysample.py', {})
