"""tools/deployment/export_onnx.py --verify on one config of each new family: RTMDet's and
YOLOX's necks, SegFormer's, Semantic FPN's and DeepLabV3+'s heads, Mask2Former's pixel decoder
(exported as backbone + pixel decoder: mask_feature and memory_<i>), and, swapped into mmdet's
stock configs, YOLOv3's neck and MaskFormer's DETR-encoder pixel decoder."""
import os.path as osp

import pytest
from tool_cases import load_tool

pytest.importorskip('onnx', reason='needs onnx (pinned in constraints*.txt)')
pytest.importorskip('onnxruntime', reason='needs onnxruntime (pinned in constraints*.txt)')
pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')
pytest.importorskip('mmseg')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _tool():
    return load_tool('deployment/export_onnx.py')


# (config, dynamic): MiT (SegFormer's backbone) does not trace to a dynamic graph
CASES = [('rtmdet/rtmdet_tiny_300e_coco_dlu.py', True),
         ('segformer/segformer_mit-b1_512x512_160k_ade20k_sapa.py', False),
         ('deeplabv3plus/deeplabv3plus_r50-d8_512x512_160k_ade20k_fade.py', True),
         ('mask2former/mask2former_r50_lsj_50e_coco_panoptic_dlu.py', True)]


@pytest.mark.parametrize('config, dynamic', CASES, ids=[c[0].split('/')[0] for c in CASES])
def test_export_and_verify(config, dynamic, tmp_path, capsys):
    tool = _tool()
    out = str(tmp_path / 'model.onnx')
    args = [osp.join(REPO, 'configs', config), '--shape', '64', '96', '--out', out, '--verify']
    assert tool.main(args + (['--dynamic'] if dynamic else [])) == 0
    printed = capsys.readouterr().out
    assert 'verify: ok' in printed
    if config.startswith('mask2former'):
        assert 'mask_feature' in printed and 'memory_2' in printed


def _swapped_stock(relative, upsampler, out):
    from mmengine.config import Config
    from mmengine.utils import get_installed_path

    import dlu_mm
    cfg = Config.fromfile(osp.join(get_installed_path('mmdet'), '.mim', 'configs', relative))
    dlu_mm.swap_upsampler(cfg, dict(type=upsampler)).dump(out)
    return out


def test_export_swapped_yolov3_dynamic(tmp_path, capsys):
    config = _swapped_stock('yolo/yolov3_mobilenetv2_8xb24-ms-416-300e_coco.py', 'FADE',
                            str(tmp_path / 'yolov3_fade.py'))
    args = [config, '--shape', '64', '96', '--out', str(tmp_path / 'm.onnx'), '--verify',
            '--dynamic']
    assert _tool().main(args) == 0
    printed = capsys.readouterr().out
    assert 'verify: ok' in printed and 'pred_2' in printed


def test_export_swapped_maskformer_static_only(tmp_path, capsys):
    config = _swapped_stock('maskformer/maskformer_r50_ms-16xb1-75e_coco.py', 'DLU',
                            str(tmp_path / 'maskformer_dlu.py'))
    args = [config, '--shape', '64', '96', '--out', str(tmp_path / 'm.onnx'), '--verify']
    assert _tool().main(args) == 0
    printed = capsys.readouterr().out
    assert 'verify: ok' in printed and 'memory_0' in printed
    with pytest.raises(SystemExit, match='fixed --shape'):
        _tool().main(args + ['--dynamic'])
