"""dlu_mm upsamplers as layers of ultralytics YOLO models (model YAMLs, training, export).

ultralytics is AGPL-3.0: this module imports it at run time only (in :func:`register`), copies
nothing of it, and dlu_mm does not depend on it. Importing this module calls :func:`register`,
after which every dlu_mm upsampler name is a layer of ultralytics model YAMLs::

    - [-1, 1, DLU, [2]]                        # unguided: scale factor 2, channels inferred
    - [-1, 1, CARAFE, [2, {up_kernel: 3}]]     # operator keywords as an optional mapping
    - [[-1, 4], 1, FADE, [2]]                  # guided: input, then the guide (layer 4)

How each piece fits into ultralytics (8.4, read from ``ultralytics/nn/tasks.py``):

- Names. ``parse_model`` resolves a YAML module name as ``nn.X``, ``torchvision.ops.X`` or a
  global of ``ultralytics.nn.tasks``; :func:`register` adds the layer classes below to that
  module's namespace (never replacing a name ultralytics defines itself).
- Channels. For a class it does not know, ``parse_model`` keeps the input's channel count as the
  output's and calls ``Layer(*args)`` without it, so a layer builds its upsampler on its first
  forward from the input it sees; ``DetectionModel`` (and its -seg/-pose/-obb subclasses) runs a
  forward at construction to measure strides, so every layer is built before training, loading
  or export.
- Guided layers. ``parse_model`` cannot take a list ``from`` for a class it does not know
  (``ch[f]`` with a list). :func:`register` therefore wraps ``ultralytics.nn.tasks.parse_model``
  once: a row naming a guided dlu_mm layer with ``from: [x, guide]`` is handed to the original
  parser with ``from: x`` (so the output keeps x's channels), and the built layer gets its list
  back (``layer.f``) with the guide's index added to the saved outputs. All other rows go to the
  original parser untouched. A guide whose channel count differs from the input's (P4/P3
  backbone features vs. neck features) goes through a learned 1x1 conv (``guide_projection``)
  to the channels the upsampler expects; with equal counts there is none.
- Checkpoints. ``best.pt`` pickles the model; this module's layers and every dlu_mm module class
  are added to torch's weights_only allow-list (``torch.serialization.add_safe_globals``), so
  ultralytics' restricted loading (``ULTRALYTICS_SAFE_LOAD=1``) accepts them once this module is
  imported. Default (unrestricted) loading imports it by itself through the pickle.
"""
import inspect
import sys

import torch
import torch.nn as nn

from .. import upsamplers
from ..utils import check_int

#: dlu_mm upsampler classes usable as ultralytics layers, by YAML name
UPSAMPLER_CLASSES = {cls.__name__: cls for cls in (
    upsamplers.CARAFE, upsamplers.DLU, upsamplers.DDFUp, upsamplers.LDAAQU,
    upsamplers.DySample, upsamplers.FADE, upsamplers.SAPA)}


class UpsamplerLayer(nn.Module):
    """One dlu_mm upsampler as an ultralytics layer: ``Layer(scale_factor=2, options=None)``.

    ``options`` is a mapping of the operator's own keywords (e.g. ``{up_kernel: 3}``); the
    channel count is the input's, read on the first forward. Guided operators take
    ``[x, guide]`` and project a guide of another channel count with a 1x1 conv.
    """
    upsampler_class = None  # set by each subclass below

    def __init__(self, scale_factor=2, options=None):
        super().__init__()
        self.scale_factor = check_int('scale_factor', scale_factor, 1)
        name = type(self).__name__
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise TypeError(f'{name} options must be a mapping of {name} keywords, e.g. '
                            f'[{scale_factor}, {{up_kernel: 3}}], got {options!r}')
        for key in ('channels', 'scale_factor'):
            if key in options:
                raise ValueError(f'{name} options must not set {key} (got {key}='
                                 f'{options[key]!r}): channels come from the input, the scale '
                                 'factor is the first argument')
        try:  # bad keywords fail when the YAML is parsed, not at the first forward
            inspect.signature(self.upsampler_class).bind(1, self.scale_factor, **options)
        except TypeError as error:
            raise TypeError(f'bad {name} options {options!r}: {error}; its keywords are '
                            f'{inspect.signature(self.upsampler_class)}') from None
        self.options = dict(options)
        self.guided = bool(self.upsampler_class.cfg_requires_guide(**options))
        # built on the first forward: the upsampler, and for guided layers the guide projection
        # (None where the guide already has the channels the upsampler expects)
        self.upsampler = None
        self.guide_projection = None

    def forward(self, inputs):
        if self.guided:
            if not (isinstance(inputs, (list, tuple)) and len(inputs) == 2):
                raise ValueError(f'{type(self).__name__} is guided: its YAML row needs '
                                 'from: [input, guide] (e.g. [[-1, 4], 1, '
                                 f'{type(self).__name__}, [2]]), got {type(inputs).__name__}')
            x, guide = inputs
        else:
            x, guide = inputs, None
        if self.upsampler is None:
            self._build(x, guide)
        if self.guide_projection is not None:
            guide = self.guide_projection(guide)
        return self.upsampler(x, guide)

    def _build(self, x, guide):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f'{type(self).__name__} needs a (N, C, H, W) input, got '
                             f'{getattr(x, "shape", type(x).__name__)}')
        upsampler = self.upsampler_class(x.shape[1], self.scale_factor, **self.options)
        if self.guided:
            guide_channels = guide.shape[1]
            if guide_channels != upsampler.guide_channels:
                self.guide_projection = nn.Conv2d(guide_channels, upsampler.guide_channels,
                                                  1).to(x.device)
        self.upsampler = upsampler.to(x.device)

    def extra_repr(self):
        options = ''.join(f', {key}={value!r}' for key, value in self.options.items())
        built = '' if self.upsampler is not None else ', not built yet'
        return f'scale_factor={self.scale_factor}{options}{built}'


# One class per operator: the YAML name is the class name, and pickles (best.pt) name the class.
class CARAFE(UpsamplerLayer):
    upsampler_class = upsamplers.CARAFE


class DLU(UpsamplerLayer):
    upsampler_class = upsamplers.DLU


class DDFUp(UpsamplerLayer):
    upsampler_class = upsamplers.DDFUp


class LDAAQU(UpsamplerLayer):
    upsampler_class = upsamplers.LDAAQU


class DySample(UpsamplerLayer):
    upsampler_class = upsamplers.DySample


class FADE(UpsamplerLayer):
    upsampler_class = upsamplers.FADE


class SAPA(UpsamplerLayer):
    upsampler_class = upsamplers.SAPA


#: layer classes by YAML name
LAYERS = {cls.__name__: cls for cls in (CARAFE, DLU, DDFUp, LDAAQU, DySample, FADE, SAPA)}


def _row_options(args):
    """The options mapping of a YAML row's args ``[scale_factor, options]`` (for guidedness)."""
    options = args[1] if len(args) > 1 else None
    return options if isinstance(options, dict) else {}


def split_guided_rows(model_dict):
    """Copy of ``model_dict`` whose guided dlu_mm rows read only their input, and those rows.

    Returns ``(plain_dict, guided)`` with ``guided = {layer index: [x_from, guide_from]}``.
    Rows naming a dlu_mm layer are checked here so that a wrong ``from`` fails with its reason.
    """
    rows = list(model_dict.get('backbone', [])) + list(model_dict.get('head', []))
    n_backbone = len(model_dict.get('backbone', []))
    guided, new_rows = {}, []
    for index, row in enumerate(rows):
        source, repeats, name, args = row
        layer = LAYERS.get(name) if isinstance(name, str) else None
        if layer is None:
            new_rows.append(row)
            continue
        args = list(args or [])
        is_guided = bool(layer.upsampler_class.cfg_requires_guide(**_row_options(args)))
        if is_guided:
            if not (isinstance(source, list) and len(source) == 2
                    and all(isinstance(s, int) for s in source)):
                raise ValueError(f'model layer {index} ({name}) is a guided upsampler: from must '
                                 f'be [input, guide], e.g. [-1, 4], got {source!r}')
            if repeats != 1:
                raise ValueError(f'model layer {index} ({name}): a guided upsampler cannot be '
                                 f'repeated, number must be 1, got {repeats!r}')
            guided[index] = list(source)
            row = [source[0], repeats, name, args]
        elif not isinstance(source, int):
            raise ValueError(f'model layer {index} ({name}) upsamples one input: from must be '
                             f'one layer index, e.g. -1, got {source!r}')
        new_rows.append(row)
    plain = dict(model_dict)
    plain['backbone'], plain['head'] = new_rows[:n_backbone], new_rows[n_backbone:]
    return plain, guided


def wrap_parse_model(parse_model):
    """``parse_model`` that also accepts ``from: [input, guide]`` rows of guided dlu_mm layers."""
    if getattr(parse_model, 'dlu_mm_wrapped', False):
        return parse_model

    def parse_model_with_guided_upsamplers(d, ch, verbose=True):
        plain, guided = split_guided_rows(d)
        model, save = parse_model(plain, ch, verbose)
        for index, sources in guided.items():
            model[index].f = sources  # the model's forward now passes [x, guide]
            save.extend(s % index for s in sources if s != -1)
        return model, sorted(set(save))

    parse_model_with_guided_upsamplers.dlu_mm_wrapped = True
    parse_model_with_guided_upsamplers.__wrapped__ = parse_model
    parse_model_with_guided_upsamplers.__doc__ = parse_model.__doc__
    return parse_model_with_guided_upsamplers


def safe_globals():
    """Every class a pickled model with dlu_mm layers names: these layers and the nn.Modules
    defined in ``dlu_mm.upsamplers`` (all its modules are imported with it)."""
    package = upsamplers.__name__
    found = set(LAYERS.values())
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == package or module_name.startswith(package + '.')):
            continue
        found.update(obj for obj in vars(module).values()
                     if isinstance(obj, type) and issubclass(obj, nn.Module)
                     and obj.__module__.startswith(package))
    return sorted(found, key=lambda cls: (cls.__module__, cls.__qualname__))


def register():
    """Make every dlu_mm upsampler a layer of ultralytics model YAMLs (idempotent).

    Adds the layer classes to ``ultralytics.nn.tasks``' namespace (a ValueError if ultralytics
    defines one of these names itself), wraps its ``parse_model`` for guided rows and allow-lists
    the classes for weights_only checkpoint loading. Needs ultralytics (imported here only).
    """
    from ultralytics.nn import tasks

    for name, layer in LAYERS.items():
        existing = tasks.__dict__.get(name)
        if existing is not None and existing is not layer:
            raise ValueError(f'ultralytics.nn.tasks already defines {name} ({existing!r}); '
                             f'dlu_mm will not replace it')
    for name, layer in LAYERS.items():
        setattr(tasks, name, layer)
    tasks.parse_model = wrap_parse_model(tasks.parse_model)
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(safe_globals())


register()
