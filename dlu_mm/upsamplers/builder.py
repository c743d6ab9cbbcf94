"""Registry glue and ``build_upsampler``: one way for necks and heads to build any upsampler.

Where mmengine is installed, every learnable upsampler is registered in the ROOT mmengine
``MODELS`` registry under its class name, so ``type='DLU'`` resolves from the mmdet, mmseg and
mmpretrain scopes alike; ``build_upsampler`` itself needs torch only. The fixed
baselines mmcv offers ('nearest', 'bilinear', 'deconv', 'pixel_shuffle') are re-implemented here
with the common ``forward(x, guide=None)`` interface (no mmcv needed) and registered as
``NearestUpsample``, ``BilinearUpsample``, ``DeconvUpsample``, ``PixelShuffleUpsample``; mmcv's own
lower-case names stay untouched in mmcv's registry.
"""
import inspect

import torch.nn as nn
import torch.nn.functional as F

from ..utils import check_int, check_odd
from .base import MMENGINE_AVAILABLE, BaseUpsampler
from .carafe import CARAFE
from .ddf_up import DDFUp
from .dlu import DLU
from .dysample import DySample
from .fade import FADE
from .layers import xavier_init_convs
from .lda_aqu import LDAAQU
from .sapa import SAPA


# ---------------------------------------------------------------------------------------------
# Fixed baselines (mmcv semantics)
# ---------------------------------------------------------------------------------------------
class NearestUpsample(BaseUpsampler):
    """Nearest-neighbour upsampling, as mmcv's 'nearest' (``F.interpolate(mode='nearest')``)."""

    def upsample(self, x, guide=None):
        return F.interpolate(x, scale_factor=self.scale_factor, mode='nearest')

    def reset_parameters(self):
        pass


class BilinearUpsample(BaseUpsampler):
    """Bilinear upsampling, as mmcv's 'bilinear' in mmdet's FPNs (align_corners=False)."""

    def __init__(self, channels, scale_factor=2, align_corners=False, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        if not isinstance(align_corners, bool):
            raise TypeError(f'align_corners must be a bool, got {align_corners!r}')
        self.align_corners = align_corners

    def upsample(self, x, guide=None):
        return F.interpolate(x, scale_factor=self.scale_factor, mode='bilinear',
                             align_corners=self.align_corners)

    def reset_parameters(self):
        pass

    def extra_repr(self):
        return f'{super().extra_repr()}, align_corners={self.align_corners}'


class DeconvUpsample(BaseUpsampler):
    """Transposed conv C -> C, as mmdet's FPN_CARAFE builds 'deconv'.

    FPN_CARAFE with ``upsample_kernel=3`` builds ``nn.ConvTranspose2d(C, C, 3, stride=2,
    padding=1, output_padding=1)`` and xavier-initialises it (uniform, zero bias). Here
    padding = (kernel - 1) // 2 and output_padding = s - kernel + 2 * padding (= s - 1 for odd
    kernels, 1 at s = 2), so the output is exactly s x the input for any s.
    """

    def __init__(self, channels, scale_factor=2, upsample_kernel=3, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.upsample_kernel = check_int('upsample_kernel', upsample_kernel, 1)
        s, k = self.scale_factor, self.upsample_kernel
        padding = (k - 1) // 2
        output_padding = s - k + 2 * padding
        if not 0 <= output_padding < s:
            raise ValueError(f'upsample_kernel={k} cannot give an exact {s}x output with '
                             f'padding {padding} (output_padding would be {output_padding}); '
                             'use an odd upsample_kernel')
        self.deconv = nn.ConvTranspose2d(channels, channels, k, stride=s, padding=padding,
                                         output_padding=output_padding)
        self.reset_parameters()

    def upsample(self, x, guide=None):
        return self.deconv(x)

    def reset_parameters(self):
        xavier_init_convs(self)


class PixelShuffleUpsample(BaseUpsampler):
    """Conv C -> C*s*s (``upsample_kernel``, 'same' padding) + pixel shuffle.

    mmcv's PixelShufflePack (FPN_CARAFE's 'pixel_shuffle', upsample_kernel=3), xavier-uniform
    init with zero bias as there.
    """

    def __init__(self, channels, scale_factor=2, upsample_kernel=3, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.upsample_kernel = check_odd('upsample_kernel', upsample_kernel)
        s, k = self.scale_factor, self.upsample_kernel
        self.upsample_conv = nn.Conv2d(channels, channels * s * s, k, padding=(k - 1) // 2)
        self.reset_parameters()

    def upsample(self, x, guide=None):
        return F.pixel_shuffle(self.upsample_conv(x), self.scale_factor)

    def reset_parameters(self):
        xavier_init_convs(self)


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------
def register_upsampler(cls, name=None):
    """Register ``cls`` in the root ``MODELS`` registry under ``name`` (default: class name).

    Idempotent for the same class (or a reloaded copy of it); any other clash is a KeyError,
    so mmcv's or a user's module of the same name is never overwritten silently. Needs mmengine
    (``build_upsampler`` does not: it takes a class as ``type`` too).
    """
    if not MMENGINE_AVAILABLE:
        raise ModuleNotFoundError('register_upsampler registers in mmengine\'s MODELS registry, '
                                  'and mmengine is not installed; build_upsampler accepts the '
                                  'class itself as type without registration', name='mmengine')
    from mmengine.registry import MODELS

    if not (isinstance(cls, type) and issubclass(cls, BaseUpsampler)):
        raise TypeError(f'register_upsampler expects a BaseUpsampler subclass, got {cls!r}')
    name = name or cls.__name__
    existing = MODELS.module_dict.get(name)
    same = existing is not None and (existing.__module__, existing.__qualname__) == (
        cls.__module__, cls.__qualname__)
    MODELS.register_module(name=name, module=cls, force=same)  # KeyError on a foreign clash
    return cls


# learnable operators, then the fixed baselines under their registry (CamelCase) names
_LEARNABLE = (CARAFE, DLU, DDFUp, LDAAQU, DySample, FADE, SAPA)
_BASELINES = {'nearest': NearestUpsample, 'bilinear': BilinearUpsample,
              'deconv': DeconvUpsample, 'pixel_shuffle': PixelShuffleUpsample}
if MMENGINE_AVAILABLE:
    for _cls in _LEARNABLE + tuple(_BASELINES.values()):
        register_upsampler(_cls)

_TYPES = {cls.__name__: cls for cls in _LEARNABLE + tuple(_BASELINES.values())}
_TYPES.update(_BASELINES)
#: every ``type`` build_upsampler accepts
UPSAMPLERS = tuple(_TYPES)


def _resolve_type(upsampler_type):
    if isinstance(upsampler_type, type) and issubclass(upsampler_type, BaseUpsampler):
        return upsampler_type
    if isinstance(upsampler_type, str) and upsampler_type in _TYPES:
        return _TYPES[upsampler_type]
    raise ValueError(f'unknown upsampler type {upsampler_type!r}; available types: '
                     f'{", ".join(UPSAMPLERS)} (or a BaseUpsampler subclass)')


def _check_cfg(cfg):
    if not isinstance(cfg, dict):
        raise TypeError(f'upsampler cfg must be a dict with a "type" key, got '
                        f'{type(cfg).__name__}: {cfg!r}')
    if 'type' not in cfg:
        raise ValueError(f'upsampler cfg needs a "type" key (one of {", ".join(UPSAMPLERS)}), '
                         f'got {dict(cfg)!r}')


def build_upsampler(cfg, channels, scale_factor=2):
    """Build an upsampler from ``cfg`` = dict(type=..., **operator kwargs).

    ``channels`` and ``scale_factor`` come from the caller (the neck knows them); a cfg may
    repeat them only with the same values.
    """
    _check_cfg(cfg)
    kwargs = dict(cfg)
    cls = _resolve_type(kwargs.pop('type'))
    for key, value in (('channels', channels), ('scale_factor', scale_factor)):
        if key in kwargs and kwargs.pop(key) != value:
            raise ValueError(f'upsampler cfg sets {key}={cfg[key]!r} but the caller builds it '
                             f'with {key}={value!r}; drop {key} from the cfg')
    try:
        inspect.signature(cls).bind(channels, scale_factor, **kwargs)
    except TypeError as error:
        raise TypeError(f'bad arguments for upsampler {cls.__name__}: {error}; its signature '
                        f'is {cls.__name__}{inspect.signature(cls)}') from None
    return cls(channels, scale_factor, **kwargs)


def is_guided(cfg_or_module):
    """Whether the upsampler (module, class, cfg dict or type name) needs ``forward(x, guide)``.

    ``None`` and cfgs without a type (plain interpolation kwargs) are not guided.
    """
    if cfg_or_module is None:
        return False
    if isinstance(cfg_or_module, nn.Module):
        return bool(getattr(cfg_or_module, 'requires_guide', False))
    if isinstance(cfg_or_module, dict):
        if 'type' not in cfg_or_module:
            return False
        kwargs = {k: v for k, v in cfg_or_module.items() if k != 'type'}
        return bool(_resolve_type(cfg_or_module['type']).cfg_requires_guide(**kwargs))
    return bool(_resolve_type(cfg_or_module).requires_guide)
