"""dlu_mm.swap_upsampler and tools/swap_upsampler.py on the stock configs of mmdet / mmseg."""
import json
import os.path as osp
import subprocess
import sys

import pytest

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402

import dlu_mm  # noqa: E402
from dlu_mm.swap import plan_swap, supported_types  # noqa: E402
from tool_cases import load_tool  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


TOOL = load_tool('swap_upsampler.py')


def _get(tree, dotted):
    for key in dotted.split('.'):
        tree = tree[key]
    return tree


def test_lazy_attribute_and_import_stays_light():
    code = ('import sys, dlu_mm; assert "mmdet" not in sys.modules and "mmseg" not in sys.modules;'
            ' f = dlu_mm.swap_upsampler; assert callable(f);'
            ' assert "mmdet" not in sys.modules and "mmseg" not in sys.modules')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)
    assert dlu_mm.swap_upsampler.__module__ == 'dlu_mm.swap'


@pytest.mark.parametrize('config, changed', [
    ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', {'model.neck': 'UpsampleFPN'}),
    ('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', {'model.neck': 'UpsampleCSPNeXtPAFPN'}),
    ('mmdet::yolox/yolox_s_8xb8-300e_coco.py', {'model.neck': 'UpsampleYOLOXPAFPN'}),
    ('mmdet::pafpn/faster-rcnn_r50_pafpn_1x_coco.py', {'model.neck': 'UpsamplePAFPN'}),
    ('mmdet::yolo/yolov3_d53_8xb8-ms-608-273e_coco.py', {'model.neck': 'UpsampleYOLOV3Neck'}),
    ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
     {'model.neck': 'UpsampleFPN', 'model.roi_head.mask_head': 'UpsampleFCNMaskHead'}),
    ('mmdet::maskformer/maskformer_r50_ms-16xb1-75e_coco.py',
     {'model.panoptic_head.pixel_decoder': 'UpsampleTransformerEncoderPixelDecoder'}),
    ('mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
     {'model.panoptic_head.pixel_decoder': 'UpsampleMSDeformAttnPixelDecoder'}),
    ('mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
     {'model.decode_head.pixel_decoder': 'mmdet.UpsampleMSDeformAttnPixelDecoder'}),
    ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
     {'model.decode_head': 'UpsampleSegformerHead'}),
    ('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
     {'model.neck': 'UpsampleFPN', 'model.decode_head': 'UpsampleFPNHead'}),
    ('mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
     {'model.decode_head': 'UpsampleUPerHead'}),
])
def test_swap_changes_only_the_upsampling_modules(config, changed):
    cfg = TOOL.load(config)
    new_cfg, changes, kept = plan_swap(cfg, dict(type='DLU'))
    assert {path: new for path, _, new in changes} == changed and kept == []
    mmdet_module = cfg.default_scope == 'mmdet' or any(t.startswith('mmdet.')
                                                       for t in changed.values())
    package = 'dlu_mm.det' if mmdet_module else 'dlu_mm.seg'
    assert package in new_cfg.custom_imports['imports']
    assert new_cfg.custom_imports['allow_failed_imports'] is False
    for path, new in changed.items():
        module = _get(new_cfg, path)
        # a mask head keeps its scale factor (the others are 2x by construction)
        expected = dict(type='DLU', scale_factor=2) if 'mask_head' in path else dict(type='DLU')
        assert module['type'] == new and dict(module['upsample_cfg']) == expected
    # nothing else changed: undo the type and upsample_cfg of each module, compare the rest
    restored, old = new_cfg.to_dict(), cfg.to_dict()
    restored.pop('custom_imports'), old.pop('custom_imports', None)
    for path in changed:
        new_module, old_module = _get(restored, path), _get(old, path)
        new_module['type'] = old_module['type']
        new_module.pop('upsample_cfg')
        if 'upsample_cfg' in old_module:
            new_module['upsample_cfg'] = old_module['upsample_cfg']
    assert restored == old


def test_where_selects_one_place_and_carafe_fpn_becomes_carafe_style():
    cfg = TOOL.load('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py')
    new_cfg, changes, _ = plan_swap(cfg, dict(type='CARAFE'), where='head')
    assert [c[0] for c in changes] == ['model.decode_head']
    assert new_cfg.model.neck.type == 'FPN'
    cfg = TOOL.load('mmdet::carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py')
    new_cfg, changes, _ = plan_swap(cfg, dict(type='DLU'))
    assert new_cfg.model.neck.type == 'UpsampleFPN' and new_cfg.model.neck.carafe_style is True
    assert 'order' not in new_cfg.model.neck


def test_mask_heads_take_unguided_upsamplers_and_keep_stock_with_guided_ones():
    # Cascade Mask R-CNN: one FCNMaskHead shared by the three stages
    cfg = TOOL.load('mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py')
    new_cfg, changes, kept = plan_swap(cfg, dict(type='CARAFE'), where='mask_head')
    assert [c[0] for c in changes] == ['model.roi_head.mask_head']
    assert new_cfg.model.neck.type == 'FPN' and kept == []
    cfg = TOOL.load('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    new_cfg, changes, kept = plan_swap(cfg, dict(type='FADE'))
    assert [c[0] for c in changes] == ['model.neck']
    assert kept == [('model.roi_head.mask_head', 'mmdet.FCNMaskHead',
                     'FADE is guided and a mask head has no finer map to guide it')]
    assert new_cfg.model.roi_head.mask_head.type == 'FCNMaskHead'
    with pytest.raises(ValueError, match='mask_head .* stays stock: SAPA is guided'):
        plan_swap(cfg, dict(type='SAPA'), where='mask_head')


def test_unsupported_config_names_what_it_found():
    cfg = TOOL.load('mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py')
    with pytest.raises(ValueError) as error:
        plan_swap(cfg, dict(type='DLU'))
    message = str(error.value)
    assert 'model.decode_head: FCNHead' in message
    assert 'mmseg.SegformerHead' in message and 'mmdet.YOLOXPAFPN' in message
    with pytest.raises(ValueError, match="at 'pixel_decoder'"):
        plan_swap(TOOL.load('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'), dict(type='DLU'),
                  where='pixel_decoder')
    with pytest.raises(ValueError, match='available types'):
        plan_swap(cfg, dict(type='Lanczos'))
    with pytest.raises(TypeError, match='upsample_cfg must be a dict with a type'):
        plan_swap(cfg, 'DLU')


def test_list_names_every_supported_type(capsys):
    assert TOOL.main(['--list']) == 0
    printed = capsys.readouterr().out
    for names in supported_types().values():
        for name in names:
            assert name in printed


def test_cli_writes_a_config_that_builds(tmp_path, capsys):
    out = str(tmp_path / 'rtmdet_tiny_dlu.py')
    assert TOOL.main(['mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', '--upsampler', 'DLU',
                      '--out', out, '--check', '--cfg-options',
                      'train_dataloader.batch_size=4']) == 0
    printed = capsys.readouterr().out
    assert 'model.neck: mmdet.CSPNeXtPAFPN -> UpsampleCSPNeXtPAFPN' in printed
    # two DLU steps at 192 and 96 channels (35,489 at 256; tested per channel count elsewhere)
    added = int(printed.split('(+')[1].split(')')[0].replace(',', ''))
    model_cfg = Config.fromfile(out)
    assert model_cfg.model.neck.type == 'UpsampleCSPNeXtPAFPN'
    assert model_cfg.train_dataloader.batch_size == 4
    model = TOOL.build_model(model_cfg)
    assert added == sum(p.numel() for p in model.neck.upsamplers.parameters()) > 0
    assert 'forward + backward on a small image: ok' in printed
    assert TOOL.main(['mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
                      '--upsampler', 'DLU', '--out', out]) == 2
    assert 'FCNHead' in capsys.readouterr().err


# a sample of the stock configs (small ones of several supported families): the swapped model
# builds and runs forward + backward on a small image wherever the stock one does
SAMPLE = [('mmdet::yolox/yolox_tiny_8xb8-300e_coco.py', 'SAPA'),
          ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py', 'DySample'),
          ('mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py', 'FADE'),
          ('mmdet::yolo/yolov3_mobilenetv2_8xb24-ms-416-300e_coco.py', 'FADE'),
          ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'DySample')]


@pytest.mark.parametrize('config, upsampler', SAMPLE)
def test_stock_sample_swaps_and_runs(config, upsampler):
    cfg = TOOL.load(config)
    TOOL.forward_backward(TOOL.build_model(cfg), cfg.default_scope, size=(64, 64))
    new_cfg = dlu_mm.swap_upsampler(cfg, dict(type=upsampler))
    TOOL.forward_backward(TOOL.build_model(new_cfg), new_cfg.default_scope, size=(64, 64))


def test_all_stock_groups_equal_models_counts_configs_and_resumes(tmp_path, monkeypatch):
    """Configs whose models are equal up to the weight source run once; an unsupported config is
    not counted; the results file lets a rerun skip what was run."""
    from mmengine.utils import get_installed_path
    configs = osp.join(get_installed_path('mmdet'), '.mim', 'configs')
    base = osp.join(configs, 'yolox', 'yolox_tiny_8xb8-300e_coco.py')
    # the same model starting from another checkpoint: one run for both
    twin = tmp_path / 'yolox_tiny_twin.py'
    twin.write_text(f"_base_ = '{base}'\nmodel = dict(backbone=dict(init_cfg=dict("
                    "type='Pretrained', checkpoint='elsewhere.pth')))\n")
    unsupported = osp.join(configs, 'ssd', 'ssd300_coco.py')
    monkeypatch.setattr(TOOL, 'stock_configs', lambda package: [base, str(twin), unsupported])
    results, lines = str(tmp_path / 'results.jsonl'), []
    passed, failed, excluded = TOOL.run_all_stock(['mmdet'], dict(type='DLU'), results=results,
                                                  echo=lines.append)
    assert [p for p, _ in passed] == [base, str(twin)] and failed == excluded == []
    assert lines[0] == '3 stock configs, 2 with a supported module, 1 distinct models'
    assert 'swapped and ran 2 of 2 supported stock configs' in lines[-1]

    def must_not_run(*args):
        raise AssertionError('a model already in the results file was run again')
    monkeypatch.setattr(TOOL, '_outcome', must_not_run)
    passed, _, _ = TOOL.run_all_stock(['mmdet'], dict(type='DLU'), results=results,
                                      echo=lines.append)
    assert len(passed) == 2
    # a model the process died in (started, never finished) is excluded, not run again
    with open(results) as f:
        records = [json.loads(line) for line in f]
    fingerprint = next(r['fingerprint'] for r in records if 'fingerprint' in r)
    with open(results, 'w') as f:
        f.write(json.dumps(dict(started=fingerprint, config=base)) + '\n')
    passed, failed, excluded = TOOL.run_all_stock(['mmdet'], dict(type='DLU'), results=results,
                                                  echo=lines.append)
    assert passed == failed == [] and len(excluded) == 2
    assert 'crashed: the process died in this model' in excluded[0][1]
