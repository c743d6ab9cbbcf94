"""Argument checks shared by ops and upsamplers.

Every check raises where the bad value enters, naming the argument, the value and what is
allowed. Imports torch only (``dlu_mm.ops`` must work on a box without mmengine/mmcv).
"""
import numbers

import torch


def check_int(name, value, min_value=None):
    """Return ``value`` as int; TypeError for non-integers (bools and floats included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{name} must be an integer, got {value!r} ({type(value).__name__})')
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f'{name} must be an integer >= {min_value}, got {value}')
    return value


def check_odd(name, value, min_value=1):
    value = check_int(name, value, min_value)
    if value % 2 != 1:
        raise ValueError(f'{name} must be an odd integer >= {min_value} (centred window), '
                         f'got {value}')
    return value


def check_divisible(name, value, divisor_name, divisor):
    if value % divisor != 0:
        raise ValueError(f'{name}={value} must be divisible by {divisor_name}={divisor}')
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'{name} must be one of {list(choices)}, got {value!r}')
    return value


def check_4d(name, tensor, channels=None):
    """A (N, C, H, W) tensor, optionally with a given channel count."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of shape (N, C, H, W), '
                        f'got {type(tensor).__name__}')
    if tensor.dim() != 4:
        raise ValueError(f'{name} must be 4-D (N, C, H, W), got shape {tuple(tensor.shape)}')
    if channels is not None and tensor.shape[1] != channels:
        raise ValueError(f'{name} must have {channels} channels, got shape '
                         f'{tuple(tensor.shape)}')
    return tensor


def check_same_device_dtype(name, tensor, ref_name, ref):
    if tensor.device != ref.device:
        raise ValueError(f'{name} is on {tensor.device} but {ref_name} is on {ref.device}: '
                         'both must be on the same device')
    if tensor.dtype != ref.dtype:
        raise TypeError(f'{name} has dtype {tensor.dtype} but {ref_name} has {ref.dtype}: '
                        'both must have the same dtype')
    return tensor


def check_spatial_scale(name, tensor, ref_name, ref, scale):
    """``tensor``'s (H, W) must be exactly ``scale`` times ``ref``'s."""
    want = (ref.shape[-2] * scale, ref.shape[-1] * scale)
    if tuple(tensor.shape[-2:]) != want:
        raise ValueError(f'{name} must have spatial size {want} ({scale} x {ref_name}\'s '
                         f'{tuple(ref.shape[-2:])}), got {tuple(tensor.shape[-2:])}')
    return tensor
