"""UpsamplePixelDecoder / UpsampleTransformerEncoderPixelDecoder / UpsampleMSDeformAttnPixelDecoder
against mmdet's decoders, alone and inside MaskFormerHead / Mask2FormerHead."""
import copy

import pytest
import torch

pytest.importorskip('mmdet.models', reason='needs mmdet (and mmcv with its ops)')

from mmdet.models.dense_heads import Mask2FormerHead, MaskFormerHead  # noqa: E402
from mmdet.models.layers import (MSDeformAttnPixelDecoder, PixelDecoder,  # noqa: E402
                                 TransformerEncoderPixelDecoder)
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from torch import nn  # noqa: E402

from dlu_mm.det import (UpsampleMSDeformAttnPixelDecoder, UpsamplePixelDecoder,  # noqa: E402
                        UpsampleTransformerEncoderPixelDecoder)
from upsample_cases import (LEARNABLE, backward_and_check, randn_levels,  # noqa: E402
                            record_calls, upsampler_cfg)

BASE = 32  # mmdet's Mask2Former head test uses 64 * 2**i input channels; halved here
IN_CHANNELS = [BASE * 2**i for i in range(4)]
# that test's levels: (4 * 2**(3-i), 5 * 2**(3-i)) for a 128x160 batch input
EXACT = [(4 * 2**(3 - i), 5 * 2**(3 - i)) for i in range(4)]
ODD = [(33, 29), (17, 15), (9, 8), (5, 4)]
NORM = dict(type='GN', num_groups=8)


def _encoder(layers=1):
    return ConfigDict(num_layers=layers, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=BASE, num_heads=4, num_levels=3, num_points=2,
                           dropout=0.0, batch_first=True),
        ffn_cfg=dict(embed_dims=BASE, feedforward_channels=2 * BASE, num_fcs=2, ffn_drop=0.0,
                     act_cfg=dict(type='ReLU', inplace=True))))


def _msda(cls, **kwargs):
    return cls(in_channels=IN_CHANNELS, strides=[4, 8, 16, 32], feat_channels=BASE,
               out_channels=BASE, num_outs=3, norm_cfg=NORM, encoder=_encoder(),
               positional_encoding=dict(num_feats=BASE // 2, normalize=True), **kwargs)


def _plain(cls, **kwargs):
    return cls(IN_CHANNELS, BASE, BASE, norm_cfg=NORM, **kwargs)


def _detr_encoder():
    attn = dict(embed_dims=BASE, num_heads=4, dropout=0.0, batch_first=True)
    return ConfigDict(num_layers=1, layer_cfg=dict(
        self_attn_cfg=attn, ffn_cfg=dict(embed_dims=BASE, feedforward_channels=2 * BASE,
                                         num_fcs=2, ffn_drop=0.0,
                                         act_cfg=dict(type='ReLU', inplace=True))))


def _detr(cls, **kwargs):
    """MaskFormer's COCO decoder: a DETR encoder (1 layer here) on the coarsest level."""
    return cls(IN_CHANNELS, BASE, BASE, norm_cfg=NORM, encoder=_detr_encoder(),
               positional_encoding=dict(num_feats=BASE // 2, normalize=True), **kwargs)


def _metas(sizes, batch=1):
    """Image metas of a batch whose finest level (1/4) is ``sizes[0]``; the second image is
    padded at the bottom / right, as in a real batch."""
    h, w = 4 * sizes[0][0], 4 * sizes[0][1]
    return [dict(batch_input_shape=(h, w), img_shape=(h - 8 * i, w - 4 * i))
            for i in range(batch)]


def _args(stock, feats, sizes):
    """The decoder's forward arguments: MSDeformAttn takes the features alone."""
    if stock is MSDeformAttnPixelDecoder:
        return (feats, )
    return (feats, _metas(sizes, feats[0].shape[0]) if stock is TransformerEncoderPixelDecoder
            else None)


def _assert_same(expected, got, exact=True):
    expected = torch.utils._pytree.tree_flatten(expected)[0]
    got = torch.utils._pytree.tree_flatten(got)[0]
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        if exact:
            assert torch.equal(e, g)
        else:
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


DECODERS = [(PixelDecoder, UpsamplePixelDecoder, _plain),
            (TransformerEncoderPixelDecoder, UpsampleTransformerEncoderPixelDecoder, _detr),
            (MSDeformAttnPixelDecoder, UpsampleMSDeformAttnPixelDecoder, _msda)]
DECODER_IDS = ['PixelDecoder', 'TransformerEncoderPixelDecoder', 'MSDeformAttnPixelDecoder']


@pytest.mark.parametrize('stock, ours, build', DECODERS, ids=DECODER_IDS)
def test_untyped_is_the_stock_decoder(stock, ours, build):
    torch.manual_seed(0)
    reference = build(stock)
    reference.init_weights()
    decoder = build(ours)
    assert decoder.upsamplers is None
    assert list(decoder.state_dict()) == list(reference.state_dict())
    decoder.load_state_dict(reference.state_dict(), strict=True)
    feats = randn_levels(IN_CHANNELS, EXACT, batch=2)
    args = _args(stock, feats, EXACT)
    reference.eval(), decoder.eval()  # the same dropout-free outputs
    _assert_same(reference(*args), decoder(*args))


@pytest.mark.parametrize('stock, ours, build, parameter_free', [
    case + (mode, ) for case, mode in zip(DECODERS, ['nearest', 'nearest', 'bilinear'])],
    ids=DECODER_IDS)
def test_typed_stock_interpolation_recomputes_the_stock_forward(stock, ours, build,
                                                                parameter_free):
    """The stock decoder's own interpolation as a typed upsampler, at exact 2x sizes: our forward
    (the MSDeformAttn one re-runs the encoder steps itself) gives the stock outputs."""
    torch.manual_seed(0)
    reference = build(stock)
    reference.init_weights()
    decoder = build(ours, upsample_cfg=dict(type=parameter_free))
    decoder.load_state_dict(reference.state_dict(), strict=True)
    feats = randn_levels(IN_CHANNELS, EXACT, batch=2)
    args = _args(stock, feats, EXACT)
    reference.eval(), decoder.eval()
    _assert_same(reference(*args), decoder(*args),
                 exact=stock is not MSDeformAttnPixelDecoder)


@pytest.mark.parametrize('stock, ours, build', DECODERS, ids=DECODER_IDS)
@pytest.mark.parametrize('name', LEARNABLE)
@pytest.mark.parametrize('sizes', [EXACT, ODD], ids=['exact', 'odd'])
def test_every_upsampler_forward_backward(stock, ours, build, name, sizes):
    torch.manual_seed(0)
    decoder = build(ours, upsample_cfg=upsampler_cfg(name))
    decoder.init_weights()
    assert len(decoder.upsamplers) == (1 if ours is UpsampleMSDeformAttnPixelDecoder else 3)
    feats = randn_levels(IN_CHANNELS, sizes)
    if ours is UpsamplePixelDecoder:
        mask_feature, memory = decoder(feats, None)
        assert memory is feats[-1]
        outputs = [mask_feature]
    elif ours is UpsampleTransformerEncoderPixelDecoder:
        mask_feature, memory = decoder(*_args(stock, feats, sizes))
        assert tuple(memory.shape) == (1, BASE) + sizes[-1]
        outputs = [mask_feature, memory]
    else:
        mask_feature, multi_scale = decoder(feats)
        assert [tuple(m.shape[2:]) for m in multi_scale] == sizes[:0:-1]
        outputs = [mask_feature] + list(multi_scale)
    assert tuple(mask_feature.shape) == (1, BASE) + sizes[0]
    backward_and_check(outputs, decoder.upsamplers)


@pytest.mark.parametrize('stock, ours, build', DECODERS, ids=DECODER_IDS)
def test_guide_is_the_projected_lateral(stock, ours, build):
    decoder = build(ours, upsample_cfg=upsampler_cfg('SAPA'))
    decoder.init_weights()
    seen = record_calls(decoder.upsamplers)
    feats = randn_levels(IN_CHANNELS, EXACT)
    decoder(*_args(stock, feats, EXACT))
    assert len(seen) == len(decoder.upsamplers)
    with torch.no_grad():
        for level, (_, guide) in seen.items():
            assert torch.equal(guide, decoder.lateral_convs[level](feats[level]))


def test_counts_as_pixel_decoder_only_itself():
    assert UpsamplePixelDecoder == PixelDecoder and PixelDecoder == UpsamplePixelDecoder
    assert UpsamplePixelDecoder != MSDeformAttnPixelDecoder
    assert len({UpsamplePixelDecoder, PixelDecoder}) == 2  # hashing stays by identity

    class Further(UpsamplePixelDecoder):
        pass
    assert Further != PixelDecoder


def _transformer_decoder(layers=1):
    attn = dict(embed_dims=BASE, num_heads=4, dropout=0.0, batch_first=True)
    return ConfigDict(return_intermediate=True, num_layers=layers, layer_cfg=dict(
        self_attn_cfg=attn, cross_attn_cfg=attn,
        ffn_cfg=dict(embed_dims=BASE, feedforward_channels=2 * BASE, num_fcs=2, ffn_drop=0.0,
                     act_cfg=dict(type='ReLU', inplace=True))), init_cfg=None)


def _losses(num_classes=11):
    # mmdet's head test facts: class weight 0.1 for the no-object class; mask CE and dice
    return dict(
        loss_cls=ConfigDict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                            reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=ConfigDict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                             loss_weight=5.0),
        loss_dice=ConfigDict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                             naive_dice=True, eps=1.0, loss_weight=5.0))


def _samples(batch=2):
    return [DetDataSample(metainfo=dict(batch_input_shape=(128, 160), pad_shape=(128, 160),
                                        img_shape=(120, 160), ori_shape=(60, 80)))
            for _ in range(batch)]


def _maskformer_head(pixel_decoder):
    pixel_decoder = dict(pixel_decoder, norm_cfg=NORM, act_cfg=dict(type='ReLU'))
    if 'TransformerEncoder' in pixel_decoder['type']:  # MaskFormer's COCO decoder
        pixel_decoder.update(encoder=_detr_encoder(),
                             positional_encoding=dict(num_feats=BASE // 2, normalize=True))
    return MaskFormerHead(
        in_channels=IN_CHANNELS, feat_channels=BASE, out_channels=BASE, num_things_classes=8,
        num_stuff_classes=3, num_queries=10, pixel_decoder=pixel_decoder,
        enforce_decoder_input_project=False, transformer_decoder=_transformer_decoder(),
        positional_encoding=dict(num_feats=BASE // 2, normalize=True), **_losses())


def _mask2former_head(pixel_decoder):
    return Mask2FormerHead(
        in_channels=IN_CHANNELS, strides=[4, 8, 16, 32], feat_channels=BASE, out_channels=BASE,
        num_things_classes=8, num_stuff_classes=3, num_queries=10, num_transformer_feat_level=3,
        pixel_decoder=ConfigDict(pixel_decoder, num_outs=3, norm_cfg=NORM, act_cfg=dict(type='ReLU'),
                           encoder=_encoder(),
                           positional_encoding=dict(num_feats=BASE // 2, normalize=True)),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=BASE // 2, normalize=True),
        transformer_decoder=_transformer_decoder(), **_losses())


@pytest.mark.parametrize('head, decoder', [(_maskformer_head, 'PixelDecoder'),
                                           (_maskformer_head, 'TransformerEncoderPixelDecoder'),
                                           (_mask2former_head, 'MSDeformAttnPixelDecoder')])
@pytest.mark.parametrize('upsample_cfg', [None, dict(type='DLU'), dict(type='FADE')])
def test_inside_the_heads(head, decoder, upsample_cfg):
    """mmdet's head test facts (batch input 128x160, levels 32x40 ... 4x5, 2 images): the head
    forward runs, and without a type the head's state_dict keys are those with the stock
    decoder (MaskFormerHead: decoder_input_proj kept although in_channels[-1] != embed dims,
    and the identity behind the DETR encoder, as with the stock decoders)."""
    torch.manual_seed(0)
    reference = head(dict(type=decoder))
    ours = head(dict(type='Upsample' + decoder, upsample_cfg=copy.deepcopy(upsample_cfg)))
    if decoder == 'PixelDecoder':
        assert isinstance(ours.decoder_input_proj, nn.Conv2d)  # in_channels[-1]=256 != 32
    if decoder == 'TransformerEncoderPixelDecoder':
        assert isinstance(reference.decoder_input_proj, nn.Identity)
        assert isinstance(ours.decoder_input_proj, nn.Identity)
    stock_keys = list(reference.state_dict())
    keys = [k for k in ours.state_dict() if '.upsamplers.' not in k]
    assert keys == stock_keys
    if upsample_cfg is not None:  # the head's init (which skips super()) reaches upsamplers
        with torch.no_grad():
            for p in ours.pixel_decoder.upsamplers.parameters():
                p.fill_(1.0)
    ours.init_weights()
    if upsample_cfg is not None and upsample_cfg['type'] == 'DLU':
        for up in ours.pixel_decoder.upsamplers:
            assert torch.count_nonzero(up.guidance_offsets.weight) == 0
    feats = [torch.rand(2, c, h, w) for c, (h, w) in zip(IN_CHANNELS, EXACT)]
    cls_scores, mask_preds = ours(feats, _samples())
    assert cls_scores[-1].shape == (2, 10, 12)
    assert mask_preds[-1].shape == (2, 10) + EXACT[0]
    if upsample_cfg is not None:
        backward_and_check([cls_scores[-1], mask_preds[-1]], ours.pixel_decoder.upsamplers)


def test_errors():
    with pytest.raises(ValueError, match="dict\\(mode='bilinear'\\)"):
        _msda(UpsampleMSDeformAttnPixelDecoder, upsample_cfg=dict(mode='nearest'))
    with pytest.raises(ValueError, match='available types'):
        _plain(UpsamplePixelDecoder, upsample_cfg=dict(type='Lanczos'))
