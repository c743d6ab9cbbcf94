"""The ``upsample_cfg`` contract shared by every dlu_mm neck, head and pixel decoder.

``upsample_cfg`` without ``type`` means the stock module (its interpolation arguments, if it has
any); with ``type`` it is an upsampler config for :func:`dlu_mm.upsamplers.build_upsampler`, and
the module builds one upsampler per upsampling step. Needs torch + mmengine only (no mmdet/mmseg).
"""
from .upsamplers import is_guided


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
