"""The SegFormer, Semantic FPN, DeepLabV3+, Mask2Former, RTMDet and YOLOX configs: every one
resolves to the dlu_mm module with its upsampler; baselines and a sample build and run fwd+bwd."""
import copy
import glob
import os.path as osp

import pytest

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from upsample_cases import tensor_forward_backward  # noqa: E402

from dlu_mm.swap import revert_sync_bn_cfg  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TYPES = {'nearest': None, 'bilinear': None, 'carafe': 'CARAFE', 'dlu': 'DLU', 'ddf_up': 'DDFUp',
         'lda_aqu': 'LDAAQU', 'dysample': 'DySample', 'fade': 'FADE', 'sapa': 'SAPA'}
# family stem -> (where the module sits in cfg.model, its dlu_mm type, package, upsamplers)
FAMILIES = {
    'segformer/segformer_mit-b1_512x512_160k_ade20k': (
        [('decode_head', )], 'UpsampleSegformerHead', 'dlu_mm.seg', 6),
    'sem_fpn/fpn_r50_512x512_160k_ade20k': (
        [('neck', ), ('decode_head', )], ('UpsampleFPN', 'UpsampleFPNHead'), 'dlu_mm.seg', 3 + 6),
    'deeplabv3plus/deeplabv3plus_r50-d8_512x512_160k_ade20k': (
        [('decode_head', )], 'UpsampleDepthwiseSeparableASPPHead', 'dlu_mm.seg', 1),
    'mask2former/mask2former_r50_160k_ade20k': (
        [('decode_head', 'pixel_decoder')], 'mmdet.UpsampleMSDeformAttnPixelDecoder',
        'dlu_mm.det', 1),
    'mask2former/mask2former_r50_lsj_50e_coco_panoptic': (
        [('panoptic_head', 'pixel_decoder')], 'UpsampleMSDeformAttnPixelDecoder', 'dlu_mm.det',
        1),
    'rtmdet/rtmdet_tiny_300e_coco': ([('neck', )], 'UpsampleCSPNeXtPAFPN', 'dlu_mm.det', 2),
    'rtmdet/rtmdet_s_300e_coco': ([('neck', )], 'UpsampleCSPNeXtPAFPN', 'dlu_mm.det', 2),
    'yolox/yolox_s_300e_coco': ([('neck', )], 'UpsampleYOLOXPAFPN', 'dlu_mm.det', 2),
}
CONFIGS = sorted(p for stem in FAMILIES
                 for p in glob.glob(osp.join(REPO, 'configs', stem + '_*.py')))
# built and run (the per-upsampler configs inherit their baseline, so these cover every base):
# the baselines of the families whose typed configs are not run, and one typed config of each
# module kind (neck, heads, pixel decoder) with a plain, a guided and a point-sampling upsampler
RUN = [osp.join(REPO, 'configs', path) for path in (
    'rtmdet/rtmdet_tiny_300e_coco_dlu.py', 'yolox/yolox_s_300e_coco_nearest.py',
    'segformer/segformer_mit-b1_512x512_160k_ade20k_sapa.py',
    'sem_fpn/fpn_r50_512x512_160k_ade20k_fade.py',
    'deeplabv3plus/deeplabv3plus_r50-d8_512x512_160k_ade20k_dysample.py',
    'mask2former/mask2former_r50_160k_ade20k_bilinear.py',
    'mask2former/mask2former_r50_lsj_50e_coco_panoptic_dlu.py')]


def _family(path):
    stem = osp.relpath(path, osp.join(REPO, 'configs'))[:-3]
    family, name = stem.rsplit('_', 1)
    if name in ('up', 'aqu'):  # ddf_up, lda_aqu
        family, first = family.rsplit('_', 1)
        name = f'{first}_{name}'
    return family, name


def _at(model_cfg, keys):
    for key in keys:
        model_cfg = model_cfg[key]
    return model_cfg


def test_every_family_has_all_eight():
    assert len(CONFIGS) == 8 * len(FAMILIES)
    for stem in FAMILIES:
        names = sorted(_family(p)[1] for p in CONFIGS if _family(p)[0] == stem)
        baseline = 'nearest' if stem.startswith(('rtmdet', 'yolox')) else 'bilinear'
        assert names == sorted([baseline] + [n for n, t in TYPES.items() if t])


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_resolves_to_the_upsampler(path):
    family, name = _family(path)
    places, types, package, _ = FAMILIES[family]
    types = types if isinstance(types, tuple) else (types, )
    cfg = Config.fromfile(path)
    assert package in cfg.custom_imports['imports']
    for keys, type_name in zip(places, types):
        module = _at(cfg.model, keys)
        assert module['type'] == type_name
        expected = TYPES[name]
        got = (module.get('upsample_cfg') or {}).get('type')
        assert got == expected
        if expected:
            assert dict(module['upsample_cfg']) == dict(type=expected)


@pytest.mark.parametrize('path', RUN, ids=lambda p: osp.basename(p)[:-3])
def test_config_builds_and_runs(path):
    family, name = _family(path)
    cfg = Config.fromfile(path)
    scope = cfg.default_scope
    init_default_scope(scope)
    for module in cfg.custom_imports['imports']:
        __import__(module)
    model_cfg = copy.deepcopy(cfg.model)
    revert_sync_bn_cfg(model_cfg)
    model_cfg.get('backbone', {}).pop('init_cfg', None)  # no pretrained download
    if scope == 'mmseg':
        from mmseg.registry import MODELS
        model_cfg['pretrained'] = None
    else:
        from mmdet.registry import MODELS
    model = MODELS.build(model_cfg)
    model.init_weights()
    learnable = {t for t in TYPES.values() if t}
    count = sum(type(m).__name__ in learnable for m in model.modules())
    assert count == (FAMILIES[family][3] if TYPES[name] else 0)
    tensor_forward_backward(model, scope, size=(64, 64))
