"""Read a checkpoint file on CPU without running foreign code, and say what a file is otherwise.

:func:`load_checkpoint` reads torch.save files (zip archives and the legacy pickle format) with
the allow-list of :mod:`dlu_mm.checkpoint`; :func:`split_checkpoint` takes the state_dict and meta
out of an mmengine / mmcv-runner container. Needs torch only (mmengine for mmengine's globals).

A file that is empty, truncated, corrupt or not a torch checkpoint at all raises
:class:`CheckpointFileError` naming the path and what it is; a real checkpoint whose pickle needs
a global outside the allow-list raises :class:`UnsafeCheckpointError` (nothing was executed).
"""
import codecs
import importlib
import os
import pickle
import pickletools
import re
import tarfile
import types
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Dict, Tuple, Union

import torch

from .checkpoint import mmengine_safe_globals, register_mmengine_safe_globals

LOADERS = ('auto', 'weights_only', 'restricted')
# CheckpointFileError.problem
FILE_PROBLEMS = ('empty', 'truncated', 'corrupt', 'not a checkpoint')

ZIP_MAGIC = b'PK\x03\x04'  # torch.save's default format is a zip archive (torch >= 1.6)
# torch.save(_use_new_zipfile_serialization=False) and torch < 1.6 write five pickles (torch's
# magic number, protocol version, sys info, the object, its storage keys), then the storages
LEGACY_PICKLES = 5
LEGACY_MAGICS = tuple(sorted({pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=protocol)
                              for protocol in range(pickle.HIGHEST_PROTOCOL + 1)}))
# what checkpoint_format returns
FORMAT_NAMES = {'zip': 'zip archive', 'legacy': 'legacy pickle format'}


class CheckpointFileError(ValueError):
    """The file is not a readable torch checkpoint.

    Attributes:
        path: the file.
        problem: one of :data:`FILE_PROBLEMS` ('empty', 'truncated', 'corrupt',
            'not a checkpoint').
    """

    def __init__(self, path: Union[str, os.PathLike], problem: str, detail: str):
        if problem not in FILE_PROBLEMS:
            raise ValueError(f'problem must be one of {list(FILE_PROBLEMS)}, got {problem!r}')
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f'{self.path!r} {detail}')


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle needs a global outside the allow-list; nothing was executed."""


# --------------------------------------------------------------------------- what a file is

def _describe_bytes(head: bytes) -> str:
    """What a file that is no torch checkpoint starts with, for a message."""
    try:  # final=False: a multi-byte character cut at the end of ``head`` is not an error
        text = codecs.getincrementaldecoder('utf-8')().decode(head, final=False)
    except UnicodeDecodeError:
        text = None
    if text and text.strip() and all(c.isprintable() or c in '\t\n\r\f\v' for c in text):
        first_line = text.strip().splitlines()[0]
        shown = first_line[:60] + ('...' if len(first_line) > 60 else '')
        return f'it is a text file (it starts with {shown!r})'
    if len(head) > 1 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return 'it is a Python pickle that torch.save did not write (no torch magic number)'
    return (f'its first bytes ({head[:8].hex(" ")}) are neither a torch zip archive '
            f"({ZIP_MAGIC!r}) nor torch's legacy pickle format")


def _check_zip(path: Union[str, os.PathLike], size: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as error:
        if str(error) == 'File is not a zip file':  # no end-of-archive record
            raise CheckpointFileError(
                path, 'truncated', f'is truncated: it starts as a torch zip archive, but its '
                f'{size} bytes end before the archive does (no zip central directory); the '
                f'download or copy stopped early') from None
        raise CheckpointFileError(path, 'corrupt', f'is a corrupt torch zip archive ({error})'
                                  ) from None
    if not any(name == 'data.pkl' or name.endswith('/data.pkl') for name in names):
        raise CheckpointFileError(
            path, 'not a checkpoint', f'is not a torch checkpoint: a zip archive without the '
            f'data.pkl record torch.save writes (it holds {names[:3]})')


def _check_legacy_pickles(path: Union[str, os.PathLike], size: int) -> None:
    """Walk the five pickles of a legacy file opcode by opcode (nothing is executed)."""
    with open(path, 'rb') as file:
        for _ in range(LEGACY_PICKLES):
            try:
                for _ in pickletools.genops(file):
                    pass
            except ValueError as error:
                if file.tell() >= size:
                    raise CheckpointFileError(
                        path, 'truncated', f'is truncated: a torch checkpoint (legacy pickle '
                        f'format) whose {size} bytes end inside its pickled objects; the '
                        f'download or copy stopped early') from None
                raise CheckpointFileError(path, 'corrupt', f'is a corrupt torch checkpoint '
                                          f'(legacy pickle format): {error}') from None


def checkpoint_format(path: Union[str, os.PathLike]) -> str:
    """The torch.save format of the file at ``path``: 'zip' or 'legacy' (five pickles).

    Reads the file's structure only (no pickle is executed) and raises
    :class:`CheckpointFileError` when the file is empty, truncated, corrupt or not a torch
    checkpoint at all (text, random bytes, another archive).
    """
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointFileError(path, 'empty', 'is empty (0 bytes), not a torch checkpoint')
    with open(path, 'rb') as file:
        head = file.read(512)
    if head.startswith(ZIP_MAGIC):
        _check_zip(path, size)
        return 'zip'
    if head.startswith(LEGACY_MAGICS):
        _check_legacy_pickles(path, size)
        return 'legacy'
    if head.startswith(pickle.PROTO) and any(magic.startswith(head) for magic in LEGACY_MAGICS):
        raise CheckpointFileError(path, 'truncated', f'is truncated: {size} bytes that end '
                                  f"inside torch's magic number")
    if tarfile.is_tarfile(path):
        raise CheckpointFileError(path, 'not a checkpoint', 'is a tar archive, not a checkpoint '
                                  'this loader reads (torch < 0.4 saved tar archives, which '
                                  'torch refuses to load with weights_only)')
    raise CheckpointFileError(path, 'not a checkpoint',
                              f'is not a torch checkpoint: {_describe_bytes(head)}')


# --------------------------------------------------------------------------- loading

def _restricted_globals():
    """(aliases {'module.name': object}, allowed objects by id, modules they live in): what a
    checkpoint may reference when torch has no weights_only allow-list."""
    import _codecs
    import builtins
    import collections
    aliases, objects = {}, []
    try:
        safe = mmengine_safe_globals()
    except ImportError:  # no mmengine: plain state_dicts only
        safe = []
    for entry in safe:
        if isinstance(entry, tuple):  # (function, 'module.name'): e.g. the safe getattr
            aliases[entry[1]] = entry[0]
        else:
            objects.append(entry)
    for owner, names in ((torch._utils, ('_rebuild_tensor_v2', '_rebuild_parameter',
                                         '_rebuild_parameter_with_state')),
                         (torch._tensor, ('_rebuild_from_type_v2',)),
                         (collections, ('OrderedDict',)), (_codecs, ('encode',)),
                         (torch, ('Size', 'device', 'Tensor')),
                         (builtins, ('set', 'frozenset', 'complex', 'slice'))):
        objects += [getattr(owner, name) for name in names if hasattr(owner, name)]
    objects += [v for v in vars(torch).values() if isinstance(v, torch.dtype)]
    for name in ('set', 'frozenset', 'complex', 'slice'):  # protocol 2 names builtins so
        aliases[f'__builtin__.{name}'] = getattr(builtins, name)
    # a pickle names an object by the module it was found in, which for numpy's and torch's
    # re-exported functions is not always its __module__: resolve names in these modules only
    modules = {'torch', 'torch._utils', 'torch._tensor', 'collections', '_codecs', 'builtins',
               'numpy', 'numpy.dtypes', 'numpy.core.multiarray', 'numpy._core.multiarray',
               'mmengine.logging.history_buffer'}
    modules |= {getattr(o, '__module__', None) for o in objects} - {None}
    return aliases, {id(o) for o in objects}, modules


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed objects: a name is looked up only in the
    modules those objects live in, and only an allow-listed object is returned."""

    allowed = None

    def find_class(self, module, name):
        if _RestrictedUnpickler.allowed is None:
            _RestrictedUnpickler.allowed = _restricted_globals()
        aliases, objects, modules = _RestrictedUnpickler.allowed
        found = aliases.get(f'{module}.{name}')
        if found is None and module in modules and '.' not in name:
            try:
                candidate = getattr(importlib.import_module(module), name, None)
            except ImportError:
                candidate = None
            if id(candidate) in objects:
                found = candidate
        if found is None:
            raise pickle.UnpicklingError(
                f'Unsupported global: GLOBAL {module}.{name} is not allow-listed')
        return found


def _restricted_pickle_module():
    module = types.ModuleType('dlu_mm_restricted_pickle')
    module.Unpickler = _RestrictedUnpickler
    module.load = lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def load_checkpoint(path: Union[str, os.PathLike], loader: str = 'auto') -> Any:
    """Read a checkpoint file on CPU without running foreign code.

    ``loader='weights_only'``: ``torch.load(weights_only=True)`` with dlu_mm's allow-list of
    mmengine's checkpoint globals (registered from torch 2.6 on, see :mod:`dlu_mm.checkpoint`).
    ``'restricted'``: ``torch.load`` with an unpickler that resolves only tensors, containers and
    that same allow-list (for older torch). ``'auto'``: the first where available.

    Raises :class:`CheckpointFileError` for a file that is empty, truncated, corrupt or no torch
    checkpoint, and :class:`UnsafeCheckpointError` naming a global outside the allow-list (it is
    never imported or called).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'path must be a str or os.PathLike, got {type(path).__name__}')
    if loader not in LOADERS:
        raise ValueError(f'loader must be one of {list(LOADERS)}, got {loader!r}')
    if os.path.isdir(path):
        raise IsADirectoryError(f'checkpoint is a directory, not a file: {os.fspath(path)!r}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {os.fspath(path)!r}')
    file_format = checkpoint_format(path)
    # dlu_mm's allow-list exists where torch takes safe globals with aliases (torch >= 2.6)
    has_allow_list = register_mmengine_safe_globals()
    if loader == 'auto':
        loader = 'weights_only' if has_allow_list else 'restricted'
    if loader == 'weights_only' and not has_allow_list:
        raise ValueError(f"loader='weights_only' needs dlu_mm's allow-list of mmengine globals, "
                         f'registered from torch 2.6 on; this is torch {torch.__version__}: use '
                         f"loader='restricted'")
    try:
        if loader == 'weights_only':
            return torch.load(path, map_location='cpu', weights_only=True)
        return torch.load(path, map_location='cpu', weights_only=False,
                          pickle_module=_restricted_pickle_module())
    except pickle.UnpicklingError as error:
        found = re.search(r'GLOBAL ([\w.]+)', str(error)) or re.search(
            r'Unsupported class ([\w.]+)', str(error))
        name = found.group(1) if found else None
        what = f'the pickle global {name!r}' if name else 'a pickle construct'
        raise UnsafeCheckpointError(
            f'refusing to load {os.fspath(path)!r}: it needs {what}, which is not on the '
            f'allow-list (tensors, containers and the globals mmengine checkpoints hold); it was '
            f'not imported or executed. Only load it without weights_only if you trust its '
            f'origin. ({str(error).splitlines()[-1] if str(error) else type(error).__name__})'
        ) from None
    except RuntimeError as error:  # torch's reader of the storages behind the pickle
        if 'unexpected EOF' in str(error):
            raise CheckpointFileError(
                path, 'truncated', f'is truncated: a torch checkpoint '
                f'({FORMAT_NAMES[file_format]}) whose {os.path.getsize(path)} bytes end inside '
                f'its tensor data '
                f'({str(error).splitlines()[0]})') from None
        if 'PytorchStreamReader' in str(error):
            raise CheckpointFileError(path, 'corrupt', f'is a corrupt torch zip archive '
                                      f'({str(error).splitlines()[0]})') from None
        raise


def split_checkpoint(checkpoint: Mapping) -> Tuple['OrderedDict[str, torch.Tensor]',
                                                    Dict[str, Any], str]:
    """(state_dict, meta, container) of a loaded checkpoint; a leading ``module.`` is stripped.

    container: 'mmengine' (message_hub / mmengine_version), 'mmcv-runner' (mmdet 2.x:
    mmcv_version in meta), 'state_dict' (another {'state_dict': ...} dict) or 'bare'.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'checkpoint must be a dict (a state_dict or a {{"state_dict": ...}} '
                        f'container), got {type(checkpoint).__name__}')
    if 'state_dict' in checkpoint and isinstance(checkpoint['state_dict'], Mapping):
        state_dict = checkpoint['state_dict']
        meta = checkpoint.get('meta') or {}
        if not isinstance(meta, Mapping):
            meta = {}
        if 'message_hub' in checkpoint or 'mmengine_version' in meta:
            container = 'mmengine'
        elif 'mmcv_version' in meta:
            container = 'mmcv-runner'
        else:
            container = 'state_dict'
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict, meta, container = checkpoint, {}, 'bare'
    else:
        raise TypeError(f'checkpoint holds no state_dict: top-level keys {sorted(checkpoint)[:10]}')
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'state_dict values must be tensors; not for {bad[:5]}')
    stripped = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
    return stripped, dict(meta), container
