"""Let mmengine's ``resume`` / ``load_from`` work under torch >= 2.6 without weights_only=False.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7 checkpoints carry,
besides tensors, the message hub's ``HistoryBuffer`` objects and the numpy arrays, dtypes and
scalars inside them, so ``Runner.resume`` fails with ``UnpicklingError``. Instead of switching
weights_only off (which would allow arbitrary code on load) we allow-list exactly those globals.

``HistoryBuffer.__getstate__`` also pickles its statistics methods as ``getattr(HistoryBuffer,
'min')``. Allow-listing the builtin ``getattr`` would let a checkpoint reach any attribute of any
allowed object, so ``getattr`` is mapped to :func:`_history_buffer_getattr`, which resolves only
HistoryBuffer's public methods.
"""
import importlib
import pickle

_registered = False


# numpy 2 moved numpy.core to numpy._core; a pickle names the module of the numpy that wrote it,
# and each numpy imports both names (1.26 has a numpy._core shim, 2.x a numpy.core one)
NUMPY_MULTIARRAY_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')


def _numpy_globals():
    import numpy as np

    multiarray = None
    for module_name in reversed(NUMPY_MULTIARRAY_MODULES):  # the new name first: no warning
        try:
            multiarray = importlib.import_module(module_name)
            break
        except ImportError:
            continue
    found = [np.ndarray, np.dtype]
    # registered under both module names, whichever __module__ this numpy gives them
    found += [(getattr(multiarray, name), f'{module_name}.{name}')
              for module_name in NUMPY_MULTIARRAY_MODULES for name in ('_reconstruct', 'scalar')]
    # dtype instances pickle through their DType classes (numpy >= 1.25)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    return found


def _history_buffer_getattr(obj, name):
    """``getattr`` as seen by the weights_only unpickler: HistoryBuffer's public methods only."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_') \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); dlu_mm allows getattr only for '
        'HistoryBuffer statistics methods under weights_only=True')


def mmengine_safe_globals():
    """The globals mmengine checkpoints need beyond torch's defaults."""
    from mmengine.logging.history_buffer import HistoryBuffer
    # torch.save pickles with protocol 2, which names builtins '__builtin__'; newer ones 'builtins'
    getattr_aliases = [(_history_buffer_getattr, f'{module}.getattr')
                       for module in ('__builtin__', 'builtins')]
    return [HistoryBuffer] + _numpy_globals() + getattr_aliases


def register_mmengine_safe_globals():
    """Allow-list mmengine's checkpoint globals for ``torch.load(weights_only=True)``.

    No-op when mmengine is not installed (``dlu_mm.ops`` must import with torch alone) or under
    torch < 2.6, where ``torch.load`` defaults to weights_only=False and loads mmengine
    checkpoints as they are (and add_safe_globals, where it exists, takes no aliases).
    Returns True when the globals are registered.
    """
    global _registered
    if _registered:
        return True
    import torch

    from .ops.compat import TORCH_VERSION
    if TORCH_VERSION < (2, 6):
        return False
    try:
        safe = mmengine_safe_globals()
    except ImportError:
        return False
    torch.serialization.add_safe_globals(safe)
    _registered = True
    return True
