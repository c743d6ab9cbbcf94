"""One upsampling step of a top-down path (FPN, UPerNet), shared by the necks and heads.

``upsample_to(upsampler, coarse, fine)`` brings ``coarse`` to ``fine``'s (H, W): guided
upsamplers get ``fine`` as their guide, resized to exactly what they expect
(``guide_scale_factor`` x the coarse map), and the result is cropped or resized to ``fine``'s
size, so odd sizes (ceil-divided pyramid levels) work.
"""
import torch.nn.functional as F

from ..ops import is_onnx_exporting


def crop_or_resize(x, size):
    """Fit ``x`` (N, C, h, w) to ``size`` (H, W).

    Crops the bottom/right when x is at least as large in both dims (2x of a ceil-divided level
    overshoots an odd lateral by one pixel; the top-left crop keeps the sub-pixel alignment),
    otherwise resizes bilinearly.
    """
    if is_onnx_exporting():
        # keep the traced sizes (a dynamic graph must fit every input size, not the traced
        # one): 2x of a ceil-divided level is never smaller than the finer level, and a crop
        # to the same size is a no-op
        return x[..., :size[0], :size[1]]
    size = tuple(int(v) for v in size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return x[..., :size[0], :size[1]]
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def guide_for(x, target, scale):
    """``target`` as a guide at exactly ``scale`` x ``x``'s (H, W) (resized when it is not)."""
    size = (x.shape[-2] * scale, x.shape[-1] * scale)
    if is_onnx_exporting():  # traced sizes, resized always (the identity when they match)
        return F.interpolate(target, size=size, mode='bilinear', align_corners=False)
    if tuple(target.shape[-2:]) == size:
        return target
    return F.interpolate(target, size=size, mode='bilinear', align_corners=False)


def upsample_to(upsampler, coarse, fine):
    """``upsampler(coarse[, guide from fine])`` fitted to ``fine``'s (H, W)."""
    guide = None
    if getattr(upsampler, 'requires_guide', False):
        guide = guide_for(coarse, fine, upsampler.guide_scale_factor)
    return crop_or_resize(upsampler(coarse, guide), fine.shape[-2:])  # (N, C, H, W) of fine
