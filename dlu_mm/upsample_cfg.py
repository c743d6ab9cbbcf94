"""The ``upsample_cfg`` contract shared by every dlu_mm neck, head and pixel decoder.

``upsample_cfg`` without ``type`` means the stock module (its interpolation arguments, if it has
any); with ``type`` it is an upsampler config for :func:`dlu_mm.upsamplers.build_upsampler`, and
the module builds one upsampler per upsampling step. Needs torch + mmengine only (no mmdet/mmseg).
"""
import torch.nn as nn
import torch.nn.functional as F

from .upsamplers import build_upsampler, is_guided
from .upsamplers.steps import upsample_to


def split_upsample_cfg(upsample_cfg, owner):
    """``(upsampler cfg or None, interpolate kwargs or None)`` of a module's ``upsample_cfg``.

    An unknown ``type`` is a ValueError listing the known ones; a non-dict a TypeError.
    """
    if upsample_cfg is None:
        return None, None
    if not isinstance(upsample_cfg, dict):
        raise TypeError(f'{owner}: upsample_cfg must be a dict (interpolate kwargs, or '
                        f'type=<upsampler> plus its kwargs) or None, got '
                        f'{type(upsample_cfg).__name__}: {upsample_cfg!r}')
    if 'type' not in upsample_cfg:
        return None, dict(upsample_cfg)
    upsampler_cfg = dict(upsample_cfg)
    is_guided(upsampler_cfg)  # unknown type -> ValueError listing the known ones
    return upsampler_cfg, None


def check_fixed_interpolation(owner, interp, upsample_cfg, mode):
    """For stock modules that hard-code their interpolation: an untyped ``upsample_cfg`` may
    only restate it (``None``, ``{}`` or ``dict(mode=mode)``), it would be ignored otherwise."""
    if interp not in (None, {}, dict(mode=mode)):
        raise ValueError(f"{owner}: without 'type', upsample_cfg can only be None, {{}} or "
                         f"dict(mode='{mode}') (the stock module always interpolates {mode}), "
                         f"got {upsample_cfg!r}; give a type (e.g. dict(type='DLU')) for a "
                         'learnable upsampler')


def init_upsamplers(upsamplers):
    """Each upsampler's own init, after a module's global pass (Kaiming / Xavier on every conv)."""
    if upsamplers is not None:
        for upsampler in upsamplers:
            upsampler.init_weights()


class InitStepUpsamplers:
    """Mixin (before the stock class) for modules holding ``self.upsamplers``: the stock module's
    global init pass (Kaiming / Xavier on every conv, the upsamplers' included), then, the first
    time, each upsampler's own init."""

    def init_weights(self):
        first_time = not self._is_init
        super().init_weights()
        if first_time:
            init_upsamplers(self.upsamplers)


def build_step_upsamplers(upsampler_cfg, channels, num_steps, scale_factor=2):
    """``num_steps`` upsamplers of ``channels`` channels (a ModuleList), or None without a cfg."""
    if upsampler_cfg is None:
        return None
    return nn.ModuleList(build_upsampler(upsampler_cfg, channels, scale_factor)
                         for _ in range(num_steps))


def top_down_sum(upsamplers, laterals):
    """FPN's top-down path on the list ``laterals`` (finest first), from the coarsest level
    down: ``laterals[i - 1] += upsamplers[i - 1](laterals[i])`` (guide: ``laterals[i - 1]``),
    fitted to the finer level's size."""
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + upsample_to(upsamplers[i - 1], laterals[i],
                                                        laterals[i - 1])
    return laterals


def append_fpn_extra_levels(fpn, inputs, laterals, outs):
    """FPN's levels beyond the backbone's (mmdet's and mmseg's FPN alike): max-pool, or the
    ``add_extra_convs`` convs of ``fpn`` ('on_input', 'on_lateral', 'on_output')."""
    num_levels = len(laterals)
    if fpn.num_outs <= num_levels:
        return outs
    if not fpn.add_extra_convs:
        outs += [F.max_pool2d(outs[-1], 1, stride=2) for _ in range(fpn.num_outs - num_levels)]
        return outs
    source = {'on_input': inputs[fpn.backbone_end_level - 1], 'on_lateral': laterals[-1],
              'on_output': outs[-1]}[fpn.add_extra_convs]
    outs.append(fpn.fpn_convs[num_levels](source))
    for i in range(num_levels + 1, fpn.num_outs):
        previous = F.relu(outs[-1]) if fpn.relu_before_extra_convs else outs[-1]
        outs.append(fpn.fpn_convs[i](previous))
    return outs
