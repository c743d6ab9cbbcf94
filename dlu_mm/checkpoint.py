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


def _numpy_globals():
    import numpy as np

    # numpy 2 moved numpy.core to numpy._core; pickles name whichever wrote them
    found = [np.ndarray, np.dtype]
    for module_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [module._reconstruct, module.scalar]
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

    No-op when mmengine is not installed (``dlu_mm.ops`` must import with torch alone) or when
    torch has no ``add_safe_globals`` (< 2.4, where weights_only is not the default anyway).
    Returns True when the globals are registered.
    """
    global _registered
    if _registered:
        return True
    import torch
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    try:
        safe = mmengine_safe_globals()
    except ImportError:
        return False
    add_safe_globals(safe)
    _registered = True
    return True
