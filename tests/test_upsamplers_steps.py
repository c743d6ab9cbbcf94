"""The top-down step shared by UpsampleFPN and UpsampleUPerHead (dlu_mm.upsamplers.steps)."""
import torch
import torch.nn.functional as F

from dlu_mm.upsamplers import build_upsampler, is_guided
from dlu_mm.upsamplers.steps import crop_or_resize, guide_for, upsample_to


def test_crop_or_resize():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8)
    assert crop_or_resize(x, (6, 8)) is x
    assert torch.equal(crop_or_resize(x, (5, 7)), x[..., :5, :7])  # top-left crop
    assert torch.equal(crop_or_resize(x, (7, 8)),  # too small in one dim -> resize
                       F.interpolate(x, size=(7, 8), mode='bilinear', align_corners=False))


def test_guide_for():
    x = torch.randn(2, 3, 6, 8)
    low = torch.zeros(2, 3, 3, 4)
    assert guide_for(low, x, 2) is x
    target = torch.randn(2, 3, 5, 7)
    assert torch.equal(guide_for(low, target, 2),
                       F.interpolate(target, size=(6, 8), mode='bilinear', align_corners=False))
    assert guide_for(low, target, 1).shape[-2:] == (3, 4)


def _recording(module):
    seen = []
    module.register_forward_hook(lambda m, args, out: seen.append(args))
    return seen


def test_upsample_to_guides_at_the_scale_the_upsampler_expects():
    torch.manual_seed(0)
    coarse, fine = torch.randn(1, 8, 5, 4), torch.randn(1, 8, 9, 7)  # odd lateral: 10x8 -> 9x7
    for cfg, guide_size in [(dict(type='FADE', compressed_channels=4), (10, 8)),
                            (dict(type='DDFUp', joint_channels=8), (5, 4)),  # same-size guide
                            (dict(type='DLU', compressed_channels=4), None)]:
        upsampler = build_upsampler(cfg, 8, 2)
        assert is_guided(cfg) == (guide_size is not None) == is_guided(upsampler)
        seen = _recording(upsampler)
        out = upsample_to(upsampler, coarse, fine)
        assert out.shape == fine.shape
        guide = seen[0][1] if len(seen[0]) > 1 else None
        assert (None if guide is None else tuple(guide.shape[-2:])) == guide_size
        # the fitted output is the top-left crop of the full 2x result
        want = upsampler(coarse, guide)[..., :9, :7]
        torch.testing.assert_close(out, want)
