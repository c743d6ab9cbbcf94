"""tools/analysis/get_flops.py counts, and tools/analysis/visualize_upsampler.py draws, the
upsamplers inside the new necks, heads and pixel decoders."""
import os
import os.path as osp

import pytest
from tool_cases import load_tool

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')
pytest.importorskip('mmseg')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _tool(name):
    return load_tool(f'analysis/{name}.py')


# (config, number of upsamplers, a module-name fragment of one of them)
CASES = [('rtmdet/rtmdet_tiny_300e_coco_dlu.py', 2, 'neck.upsamplers.1'),
         ('segformer/segformer_mit-b1_512x512_160k_ade20k_sapa.py', 6, 'decode_head.upsamplers.2.2'),
         ('mask2former/mask2former_r50_160k_ade20k_dlu.py', 1, 'pixel_decoder.upsamplers.0')]


@pytest.mark.parametrize('config, count, name', CASES, ids=[c[0].split('/')[0] for c in CASES])
def test_get_flops_counts_the_upsamplers(config, count, name):
    result = _tool('get_flops').analyse(osp.join(REPO, 'configs', config), shape=(64, 64),
                                        convention='spec')
    assert len(result['upsamplers']) == count
    assert any(name in upsampler for upsampler in result['upsamplers'])
    assert 0 < result['upsampler_params'] < result['params']
    assert 0 < result['spec']['upsampler_flops'] < result['spec']['flops']


@pytest.mark.parametrize('config, layer', [
    ('rtmdet/rtmdet_tiny_300e_coco_fade.py', 'neck.upsamplers.0'),
    ('mask2former/mask2former_r50_lsj_50e_coco_panoptic_dlu.py',
     'panoptic_head.pixel_decoder.upsamplers.0')])
def test_visualizer_draws_an_upsampler_inside(config, layer, tmp_path):
    tool = _tool('visualize_upsampler')
    paths, scene, _ = tool.main(['--config', osp.join(REPO, 'configs', config), '--layer', layer,
                                 '--size', '96', '--dpi', '40', '--upsamplers', 'nearest', 'DLU',
                                 '--out-dir', str(tmp_path)])
    assert any('(model)' in label for label in scene.modules)
    assert all(os.path.getsize(path) > 1000 for path in paths.values())


@pytest.mark.parametrize('relative, upsampler, count, layer', [
    ('yolo/yolov3_mobilenetv2_8xb24-ms-416-300e_coco.py', 'DLU', 2, 'neck.upsamplers.1'),
    ('maskformer/maskformer_r50_ms-16xb1-75e_coco.py', 'SAPA', 3,
     'panoptic_head.pixel_decoder.upsamplers.0')], ids=['yolov3', 'maskformer'])
def test_swapped_stock_configs_counted_and_drawn(relative, upsampler, count, layer, tmp_path):
    from mmengine.config import Config
    from mmengine.utils import get_installed_path

    import dlu_mm
    cfg = Config.fromfile(osp.join(get_installed_path('mmdet'), '.mim', 'configs', relative))
    config = str(tmp_path / 'swapped.py')
    dlu_mm.swap_upsampler(cfg, dict(type=upsampler)).dump(config)
    result = _tool('get_flops').analyse(config, shape=(64, 64), convention='spec')
    assert len(result['upsamplers']) == count
    assert 0 < result['spec']['upsampler_flops'] < result['spec']['flops']
    tool = _tool('visualize_upsampler')
    paths, scene, _ = tool.main(['--config', config, '--layer', layer, '--size', '96', '--dpi',
                                 '40', '--upsamplers', 'nearest', upsampler, '--out-dir',
                                 str(tmp_path)])
    assert any('(model)' in label for label in scene.modules)
