"""tools/analysis: the complexity table, get_flops on a detection and a segmentation config,
the visualiser's PNGs and the upsampler benchmark."""
import os

import numpy as np
import pytest

from dlu_mm.analysis import spec_flops, spec_params
from tool_cases import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    return load_tool(f'analysis/{name}.py')


def test_complexity_tool_prints_table_with_paper_claims(tmp_path, capsys):
    out = tmp_path / 'complexity.md'
    _tool('complexity').main(['--upsamplers', 'CARAFE', 'DLU', 'LDA-AQU', '--scales', '2', '16',
                              '--size', '4', '--quiet', '--out', str(out)])
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert printed.startswith('# Upsampler complexity')
    assert 'python tools/analysis/complexity.py --upsamplers CARAFE DLU' in printed
    assert '| CARAFE | 74,148 | 74,148 | 199,496 | 199,496 |' in printed
    assert '| DLU | 326,297 | 326,297 | 3,980,594 | 3,980,594 |' in printed
    assert '| 16 | 3,709,248 | 326,297 | 91.2% | 10,695,296 | 3,980,594 | 62.8% | 63.3% |' \
        in printed
    assert 'Reported by the papers (not reproduced here)' in printed


def test_complexity_tool_cpu_time_column(capsys):
    _tool('complexity').main(['--upsamplers', 'DLU', 'bilinear', '--scales', '2', '--size', '2',
                              '--channels', '8', '--time', '--time-output', '8', '--repeats',
                              '1', '--quiet', '--no-paper'])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| DLU')]
    assert len(rows) == 1
    assert float(rows[0].rstrip(' |').split('|')[-1]) > 0


def _check_upsampler_share(result, cfg, channels, low_res_sizes):
    """The upsamplers' counted FLOPs equal the formula summed over the levels they upsample."""
    expected = sum(sum(spec_flops(cfg, channels, 2, h, w).values()) for h, w in low_res_sizes)
    assert result['spec']['upsampler_flops'] == expected
    assert result['upsampler_params'] == len(low_res_sizes) * spec_params(cfg, channels, 2)
    assert result['mmengine']['flops'] > result['mmengine']['upsampler_flops'] > 0
    assert result['spec']['flops'] > result['mmengine']['flops']


def test_get_flops_detection_config(capsys):
    pytest.importorskip('mmdet')
    result = _tool('get_flops').main([os.path.join(ROOT, 'configs', 'faster_rcnn_r50_fpn_dlu.py'),
                                      '--shape', '128', '128'])
    printed = capsys.readouterr().out
    assert 'FLOPs (mmengine convention' in printed and 'upsamplers:' in printed
    assert result['scope'] == 'mmdet' and result['input_shape'] == (1, 3, 128, 128)
    assert 40e6 < result['params'] < 50e6  # Faster R-CNN R50 with a CARAFE-style FPN
    # CARAFE-style FPN: C5 at 4x4, P6 at 2x2 -> 4 DLU steps from 2, 4, 8, 16 pixels wide
    _check_upsampler_share(result, dict(type='DLU', up_kernel=5, encoder_kernel=3,
                                        compressed_channels=64), 256,
                           [(2, 2), (4, 4), (8, 8), (16, 16)])


def test_get_flops_segmentation_config(capsys):
    pytest.importorskip('mmseg')
    result = _tool('get_flops').main([
        os.path.join(ROOT, 'configs', 'upernet_r50_512x512_160k_ade20k_dlu.py'), '--shape', '64'])
    assert result['scope'] == 'mmseg' and result['input_shape'] == (1, 3, 64, 64)
    # UPerNet (512 channels): 3 top-down DLU steps from the 2x2, 4x4, 8x8 levels
    _check_upsampler_share(result, dict(type='DLU'), 512, [(2, 2), (4, 4), (8, 8)])


def test_visualizer_writes_readable_pngs(tmp_path):
    import matplotlib.image as mpimg
    tool = _tool('visualize_upsampler')
    upsamplers = ['nearest', 'CARAFE', 'DLU', 'LDAAQU', 'SAPA']
    paths, scene, pixels = tool.main(['--size', '96', '--channels', '16', '--dpi', '50',
                                      '--upsamplers', *upsamplers, '--out-dir', str(tmp_path)])
    assert sorted(os.path.basename(p) for p in paths.values()) == sorted(
        f'{name}.png' for name in tool.FIGURES)
    expected = {'dlu_offsets': (350, 380), 'lda_aqu_points': (350, 380),
                'kernels': (round(50 * (3.2 + 2.2 * len(pixels))), 270),
                'feature_maps': (650, 295)}
    for name, path in paths.items():
        assert os.path.getsize(path) > 1000
        image = mpimg.imread(path)
        assert (image.shape[1], image.shape[0]) == expected[name], name
        assert np.asarray(image[..., :3]).std() > 0.05, f'{name} looks blank'
    # the default perturbation makes DLU's offsets non-zero (at their own init they are 0)
    _, calls = scene.run('DLU')
    offsets = next(args[2] for op, args in calls if op == 'guided_reassemble')
    assert float(offsets.abs().max()) > 0.05


def test_benchmark_upsamplers_module_table(capsys):
    """A small run of the module benchmark: one row per upsampler, the baselines added, ratios
    to nearest and CARAFE from the same run."""
    _tool('benchmark_upsamplers').main(['--levels', 'P5', '--upsamplers', 'DySample', 'DDFUp',
                                        '--channels', '16', '--repeats', '1', '--threads', '1'])
    printed = capsys.readouterr().out
    rows = [line.split(' | ') for line in printed.splitlines() if line.startswith('| P5')]
    assert [row[1] for row in rows] == ['CARAFE', 'nearest', 'DySample', 'DDFUp']
    carafe, nearest = rows[0], rows[1]
    assert carafe[5] == '1.00' and nearest[4] == '1.00'  # x CARAFE / x nearest of themselves
    assert all(float(row[3]) > 0 and float(row[8]) > 0 for row in rows)  # fwd+bwd ms, peak MiB
    assert 'native ddf/lda/subpixel' in printed


def test_benchmark_upsamplers_fixes_roi_align_sampling():
    """The detector is built with a fixed RoIAlign sampling ratio (its cost would otherwise
    follow each untrained model's proposals)."""
    pytest.importorskip('mmdet')
    tool = _tool('benchmark_upsamplers')
    model = tool.build_model('det', 'dysample', 'cpu', roi_sampling=2)
    assert all(layer.sampling_ratio == 2 for layer in model.roi_head.bbox_roi_extractor.roi_layers)
    assert type(model.neck.upsamplers[0]).__name__ == 'DySample'

