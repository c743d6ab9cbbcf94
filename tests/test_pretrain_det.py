"""A detection config with a DDF-ResNet-50 backbone (mmpretrain.DDFResNet from the mmdet scope)
builds and runs one training step (loss, backward, SGD update) and a predict on CPU."""
import os.path as osp

import pytest
import torch

pytest.importorskip('mmpretrain')
pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'ddf_resnet', 'faster_rcnn_ddf_r50_fpn_1x_coco.py')


def test_faster_rcnn_ddf_r50_one_step():
    from mmdet.registry import MODELS

    from dlu_mm.pretrain import DDFConv, DDFResNet
    cfg = Config.fromfile(CONFIG)  # imports dlu_mm.pretrain through custom_imports
    assert cfg.model.backbone.type == 'mmpretrain.DDFResNet'
    init_default_scope('mmdet')
    # zero-initialised norm3 (the default) would stop every gradient into the DDF branches
    cfg.model.backbone.zero_init_residual = False
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.backbone) is DDFResNet
    assert sum(isinstance(m, DDFConv) for m in model.backbone.modules()) == 16
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())  # frozen_stages

    # odd size: stride-2 DDF blocks must line up with the shortcuts and the FPN
    from mmdet.testing import demo_mm_inputs
    batch = demo_mm_inputs(batch_size=1, image_shapes=[(3, 120, 136)], num_items=[3],
                           num_classes=80)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01)
    ddf_weight = model.backbone.layer4[0].conv2.spatial_branch.conv.weight
    before = ddf_weight.detach().clone()
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for name in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'):
        value = losses[name]
        value = sum(value) if isinstance(value, list) else value
        assert torch.isfinite(value).all(), name
    assert ddf_weight.grad is not None and ddf_weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, ddf_weight.detach())
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(preds) == 1 and preds[0].pred_instances.bboxes.shape[-1] == 4
