"""Multi-process runs (``--launcher pytorch``) of the tools on machines without GPUs.

mmengine (0.10.7) assumes a GPU per process in two places:

- ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before it creates the process group
  ("Found no NVIDIA driver" without one). The Runner only calls ``init_dist`` when no process
  group exists yet, so :func:`init_cpu_process_group` creates it first, over gloo.
- ``Runner.wrap_model`` gives ``MMDistributedDataParallel`` ``device_ids=[LOCAL_RANK]``, which
  DDP rejects for a module on the CPU. :func:`set_cpu_model_wrapper` writes a
  ``model_wrapper_cfg`` with ``device_ids=None`` (CPU DDP) and otherwise the Runner's own
  defaults (``broadcast_buffers=False``, the config's ``find_unused_parameters``).

Both are no-ops when CUDA is available (mmengine's own nccl path runs unchanged) and when the
launcher is ``'none'``. Nothing of mmengine is patched: the Runner is only configured.
"""
import datetime
import os

import torch

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# what torchrun (and torch.distributed.launch) set for every process
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def _check_launcher(launcher):
    if not isinstance(launcher, str):
        raise TypeError(f'launcher must be a str, got {type(launcher).__name__}')
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')


def is_cpu_distributed(launcher):
    """True when ``launcher`` asks for several processes and there is no CUDA device."""
    _check_launcher(launcher)
    return launcher != 'none' and not torch.cuda.is_available()


def init_cpu_process_group(launcher, dist_cfg=None):
    """Create the default process group over gloo when ``launcher`` is distributed and CUDA is
    not available; return whether this process now runs on the CPU with a process group.

    Call it before building the Runner. ``dist_cfg`` is the config's ``env_cfg.dist_cfg`` (what
    mmengine passes to ``init_dist``): its ``backend`` is used unless it is ``'nccl'`` (the
    OpenMMLab default, GPU only), which becomes ``'gloo'``; ``timeout`` is in seconds as for
    mmengine. Only ``'pytorch'`` (torchrun) is supported without GPUs: mmengine's slurm and mpi
    set-ups also select a CUDA device.
    """
    if not is_cpu_distributed(launcher):
        return False
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs GPUs (mmengine selects a CUDA device per '
                         'process); without GPUs start the processes with torchrun and '
                         '--launcher pytorch, e.g. bash tools/dist_train.sh CONFIG 2')
    if dist_cfg is None:
        dist_cfg = {}
    if not isinstance(dist_cfg, dict):
        raise TypeError(f'env_cfg.dist_cfg must be a dict, got {type(dist_cfg).__name__}')
    if not torch.distributed.is_available():
        raise RuntimeError('this torch build has no torch.distributed; --launcher pytorch needs it')
    if torch.distributed.is_initialized():
        return True
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch expects the environment torchrun sets '
                           f'({", ".join(missing)} missing); start the processes with '
                           'tools/dist_train.sh / tools/dist_test.sh or '
                           'python -m torch.distributed.run')
    kwargs = dict(dist_cfg)
    backend = kwargs.pop('backend', 'gloo')
    if backend is None or str(backend).lower() == 'nccl':
        backend = 'gloo'
    timeout = kwargs.pop('timeout', None)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f'env_cfg.dist_cfg.timeout must be a positive number of seconds, '
                             f'got {timeout!r}')
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch.distributed.init_process_group(backend=backend, **kwargs)
    return True


def _wrapper_type(type_):
    import mmengine.model  # noqa: F401  (registers mmengine's wrappers)
    from mmengine.registry import MODEL_WRAPPERS
    if isinstance(type_, str):
        found = MODEL_WRAPPERS.get(type_)
        if found is None:
            raise ValueError(f'model_wrapper_cfg.type {type_!r} is not a registered model wrapper')
        return found
    if isinstance(type_, type):
        return type_
    raise TypeError(f'model_wrapper_cfg.type must be a str or a class, got {type_!r}')


def set_cpu_model_wrapper(cfg, launcher=None):
    """On CPU with a distributed launcher, make ``cfg.model_wrapper_cfg`` build a CPU DDP wrapper
    (``device_ids=None``); elsewhere leave ``cfg`` alone. Returns ``cfg``.

    Without a ``model_wrapper_cfg`` this is the Runner's default wrapper minus the GPU:
    ``MMDistributedDataParallel(device_ids=None, broadcast_buffers=False,
    find_unused_parameters=cfg.find_unused_parameters or False)``. A user ``model_wrapper_cfg``
    whose type is a DistributedDataParallel gets ``device_ids=None`` (explicit device ids are an
    error on CPU); other wrappers are left as they are.
    """
    if launcher is None:
        launcher = cfg.get('launcher', 'none')
    if not is_cpu_distributed(launcher):
        return cfg
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        find_unused = cfg.get('find_unused_parameters', False)
        if not isinstance(find_unused, bool):
            raise TypeError(f'find_unused_parameters must be a bool, got {find_unused!r}')
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False,
                                     find_unused_parameters=find_unused)
        return cfg
    if not isinstance(wrapper, dict):
        raise TypeError(f'model_wrapper_cfg must be a dict, got {type(wrapper).__name__}')
    from torch.nn.parallel import DistributedDataParallel
    if issubclass(_wrapper_type(wrapper.get('type', 'MMDistributedDataParallel')),
                  DistributedDataParallel):
        device_ids = wrapper.get('device_ids', None)
        if device_ids is not None:
            raise ValueError(f'model_wrapper_cfg.device_ids must be None without GPUs (CPU DDP), '
                             f'got {device_ids!r}')
        wrapper['device_ids'] = None
    return cfg


def setup_cpu_distributed(cfg):
    """Both steps for a tools/ config (``cfg.launcher`` set): the gloo process group and the CPU
    DDP wrapper. No-op with CUDA or ``launcher='none'``. Returns whether it set anything up."""
    launcher = cfg.get('launcher', 'none')
    if not is_cpu_distributed(launcher):
        return False
    set_cpu_model_wrapper(cfg, launcher)  # validates the wrapper before any process group exists
    env_cfg = cfg.get('env_cfg', None) or {}
    return init_cpu_process_group(launcher, env_cfg.get('dist_cfg', None))


def teardown_cpu_distributed(cfg):
    """Destroy the process group :func:`setup_cpu_distributed` created (CPU runs only; on GPU
    machines the process group stays mmengine's business, as before)."""
    if (is_cpu_distributed(cfg.get('launcher', 'none')) and torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        torch.distributed.destroy_process_group()
