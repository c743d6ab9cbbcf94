"""MaskFormer / Mask2Former pixel decoders whose FPN steps use dlu_mm upsamplers.

MaskFormer's ``PixelDecoder`` (Cheng et al., NeurIPS 2021) is an FPN from 1/32 to 1/4 with nearest
steps; Mask2Former's ``MSDeformAttnPixelDecoder`` (Cheng et al., CVPR 2022) runs a deformable
transformer encoder over the 3 coarse levels and then the same FPN step (bilinear) to the
remaining finer level(s); MaskFormer's COCO configs use ``TransformerEncoderPixelDecoder``,
``PixelDecoder``'s FPN behind a DETR encoder on the 1/32 level. Each step is
``y = lateral(feat_i) + up(y)``; here ``up`` can be any dlu_mm upsampler, one per step
(``upsamplers[i]`` brings the next coarser map to level i), built with ``feat_channels`` and
``scale_factor=2``. Guided upsamplers (FADE, SAPA) take the projected
lateral ``lateral_convs[i](feats[i])`` as guide: it has ``feat_channels`` channels, so no
projection is needed (the raw ``feats[i]`` would not: R50's 256/512 or Swin's 128/256 ...).

Without ``type`` in ``upsample_cfg`` the classes are the stock decoders (same state_dict keys,
``forward`` is the stock one). They register in mmdet's MODELS: mmseg configs name them
``'mmdet.UpsamplePixelDecoder'`` / ``'mmdet.UpsampleMSDeformAttnPixelDecoder'``.

MaskFormerHead's check ``type(pixel_decoder) == PixelDecoder`` (it decides whether the
transformer decoder's input gets a 1x1 projection) is met by ``UpsamplePixelDecoder`` through its
metaclass, whose ``==`` counts ``UpsamplePixelDecoder`` as ``PixelDecoder``: the head then builds
exactly the stock ``decoder_input_proj``, in mmdet's and mmseg's MaskFormerHead alike, with no
head subclass and no config change beyond the decoder's type.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.layers import (MSDeformAttnPixelDecoder, PixelDecoder,
                                 TransformerEncoderPixelDecoder)
from mmdet.registry import MODELS

from ..upsample_cfg import check_fixed_interpolation, init_upsamplers, split_upsample_cfg
from ..upsamplers import build_upsampler
from ..upsamplers.steps import upsample_to
from .pafpn import STEP_SCALE


class _CountsAsPixelDecoder(type(PixelDecoder)):
    """Metaclass: ``UpsamplePixelDecoder == PixelDecoder`` (for MaskFormerHead's type check)."""

    def __eq__(cls, other):
        if cls is other:
            return True
        # only the class itself, not a further subclass (as with the stock PixelDecoder)
        return cls.__dict__.get('counts_as_pixel_decoder', False) and other is PixelDecoder

    __hash__ = type.__hash__


class _MaskFormerFPNUpsamplers:
    """Mixin (before the stock class) for MaskFormer's two decoders: ``upsample_cfg``, one
    upsampler per FPN step (``num_inputs - 1``), their init after the stock one (which inits 2
    of the 3 laterals and does not call ``super()``), and the FPN steps themselves."""

    def __init__(self, in_channels, feat_channels, out_channels, upsample_cfg=None, **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        check_fixed_interpolation(type(self).__name__, interp, upsample_cfg, 'nearest')
        super().__init__(in_channels, feat_channels, out_channels, **kwargs)
        self.upsamplers = None if upsampler_cfg is None else nn.ModuleList(
            build_upsampler(upsampler_cfg, feat_channels, STEP_SCALE)
            for _ in range(self.num_inputs - 1))

    def init_weights(self):
        super().init_weights()
        init_upsamplers(self.upsamplers)

    def _top_down(self, y, feats):
        """The FPN steps from ``y`` (the coarsest level's map) down to ``feats[0]``:
        ``y = output_convs[i](lateral_convs[i](feats[i]) + upsamplers[i](y))``."""
        for i in range(self.num_inputs - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = self.output_convs[i](lateral + upsample_to(self.upsamplers[i], y, lateral))
        return y


@MODELS.register_module()
class UpsamplePixelDecoder(_MaskFormerFPNUpsamplers, PixelDecoder,
                           metaclass=_CountsAsPixelDecoder):
    """mmdet ``PixelDecoder`` (MaskFormer) with a learnable upsampler in each FPN step.

    Args (beyond ``PixelDecoder``'s):
        upsample_cfg: ``None`` (stock: nearest to the finer level's size) or with ``type``: one
            upsampler per step (``num_inputs - 1``), ``feat_channels`` channels, 2x; guided
            ones get ``lateral_convs[i](feats[i])`` as guide.
    """
    counts_as_pixel_decoder = True

    def forward(self, feats, batch_img_metas):
        if self.upsamplers is None:
            return super().forward(feats, batch_img_metas)
        y = self.last_feat_conv(feats[-1])  # (N, feat_channels, H/32, W/32)
        return self.mask_feature(self._top_down(y, feats)), feats[-1]


@MODELS.register_module()
class UpsampleTransformerEncoderPixelDecoder(_MaskFormerFPNUpsamplers,
                                             TransformerEncoderPixelDecoder):
    """mmdet ``TransformerEncoderPixelDecoder`` (MaskFormer's COCO configs: a DETR encoder on
    the 1/32 level, then ``PixelDecoder``'s FPN) with a learnable upsampler in each FPN step.

    Args (beyond ``TransformerEncoderPixelDecoder``'s): ``upsample_cfg`` as
    :class:`UpsamplePixelDecoder`'s (one upsampler per step, ``feat_channels`` channels, 2x, the
    projected lateral as guide). MaskFormerHead's ``type(...) == PixelDecoder`` check is False
    for the stock class and for this one alike (no input projection is needed: the encoder
    already gives ``feat_channels``).
    """

    def _memory(self, feat_last, batch_img_metas):
        """The encoder's output on the coarsest level (N, feat_channels, h, w), as the stock
        forward computes it (padding mask from the images' shapes, sine positions)."""
        bs, _, h, w = feat_last.shape
        input_h, input_w = batch_img_metas[0]['batch_input_shape']
        padding_mask = feat_last.new_ones((bs, input_h, input_w), dtype=torch.float32)
        for i, meta in enumerate(batch_img_metas):
            img_h, img_w = meta['img_shape']
            padding_mask[i, :img_h, :img_w] = 0
        padding_mask = F.interpolate(padding_mask.unsqueeze(1), size=(h, w),
                                     mode='nearest').to(torch.bool).squeeze(1)
        pos_embed = self.positional_encoding(padding_mask).flatten(2).permute(0, 2, 1)
        query = self.encoder_in_proj(feat_last).flatten(2).permute(0, 2, 1)  # (N, h*w, C)
        memory = self.encoder(query=query, query_pos=pos_embed,
                              key_padding_mask=padding_mask.flatten(1))
        return memory.permute(0, 2, 1).view(bs, self.encoder_embed_dims, h, w)

    def forward(self, feats, batch_img_metas):
        if self.upsamplers is None:
            return super().forward(feats, batch_img_metas)
        memory = self._memory(feats[-1], batch_img_metas)
        y = self.encoder_out_proj(memory)
        return self.mask_feature(self._top_down(y, feats)), memory


@MODELS.register_module()
class UpsampleMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """mmdet ``MSDeformAttnPixelDecoder`` (Mask2Former) with learnable upsamplers in its FPN.

    Args (beyond ``MSDeformAttnPixelDecoder``'s):
        upsample_cfg: ``None`` (stock: bilinear to the finer level's size) or with ``type``: one
            upsampler per level below the encoder's (1 in the stock configs), ``feat_channels``
            channels, 2x; guided ones get ``lateral_convs[i](feats[i])`` as guide.

    The stock ``init_weights`` does not call ``super()`` and Mask2FormerHead calls it directly, so
    the upsamplers' init is called here explicitly.
    """

    def __init__(self, in_channels=[256, 512, 1024, 2048], strides=[4, 8, 16, 32],
                 feat_channels=256, upsample_cfg=None, **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        check_fixed_interpolation(type(self).__name__, interp, upsample_cfg, 'bilinear')
        super().__init__(in_channels=in_channels, strides=strides, feat_channels=feat_channels,
                         **kwargs)
        num_fpn_levels = self.num_input_levels - self.num_encoder_levels
        self.upsamplers = None if upsampler_cfg is None else nn.ModuleList(
            build_upsampler(upsampler_cfg, feat_channels, STEP_SCALE)
            for _ in range(num_fpn_levels))

    def init_weights(self):
        super().init_weights()
        init_upsamplers(self.upsamplers)

    def _encode(self, feats):
        """The encoder levels after the deformable transformer, coarsest first (stock steps)."""
        batch_size = feats[0].shape[0]
        queries, query_pos, masks, shapes, points = [], [], [], [], []
        for i in range(self.num_encoder_levels):
            level = self.num_input_levels - i - 1
            feat = feats[level]
            hw = torch._shape_as_tensor(feat)[2:].to(feat.device)
            mask = feat.new_zeros((batch_size, ) + feat.shape[-2:], dtype=torch.bool)
            pos = self.postional_encoding(mask) + self.level_encoding.weight[i].view(1, -1, 1, 1)
            priors = self.point_generator.single_level_grid_priors(feat.shape[-2:], level,
                                                                   device=feat.device)
            points.append(priors / (hw.unsqueeze(0).flip(dims=[0, 1]) * self.strides[level]))
            queries.append(self.input_convs[i](feat).flatten(2).permute(0, 2, 1))  # (N, hw, C)
            query_pos.append(pos.flatten(2).permute(0, 2, 1))
            masks.append(mask.flatten(1))
            shapes.append(hw)
        spatial_shapes = torch.cat(shapes).view(-1, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = torch.cat(points, dim=0)[None, :, None].repeat(
            batch_size, 1, self.num_encoder_levels, 1)
        memory = self.encoder(
            query=torch.cat(queries, dim=1), query_pos=torch.cat(query_pos, dim=1),
            key_padding_mask=torch.cat(masks, dim=1), spatial_shapes=spatial_shapes,
            reference_points=reference_points, level_start_index=level_start_index,
            valid_ratios=reference_points.new_ones((batch_size, self.num_encoder_levels, 2)))
        memory = memory.permute(0, 2, 1)  # (N, C, sum of h*w)
        # sizes stay tensors (as in the stock decoder) so that a traced graph is dynamic
        per_level = torch.split(memory, [hw[0] * hw[1] for hw in shapes], dim=-1)
        return [x.reshape(batch_size, -1, hw[0], hw[1]) for x, hw in zip(per_level, shapes)]

    def forward(self, feats):
        if self.upsamplers is None:
            return super().forward(feats)
        outs = self._encode(feats)
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            # lateral_convs[i] by level, as the stock decoder indexes them
            lateral = self.lateral_convs[i](feats[i])
            outs.append(self.output_convs[i](lateral + upsample_to(self.upsamplers[i], outs[-1],
                                                                   lateral)))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
