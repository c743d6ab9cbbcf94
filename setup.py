"""Build hook of dlu_mm: compiles the native ops in ``ops/`` into ``dlu_mm._C_torch<X>_<Y>``.

``pip install --no-build-isolation -e .`` builds against the torch in the environment.
C++ sources (``ops/**/*.cpp``) are always compiled; CUDA sources (``ops/**/*.cu``) are compiled
when ``DLU_MM_WITH_CUDA`` is 1, or when it is unset and nvcc plus a CUDA build of torch are
present (no GPU is needed to compile) and nvcc's CUDA major version is torch's (torch refuses
to build otherwise: the CUDA kernels are then skipped with one line, the CPU ones still build).
``DLU_MM_WITH_CUDA=0`` skips them for quick local builds.
``TORCH_CUDA_ARCH_LIST`` defaults to "8.0;9.0" (A100, H100/H200).
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _say(message):
    """One line for the build log: only in the build step (pip runs this file more than once)."""
    if {'build_ext', 'bdist_wheel', 'editable_wheel', 'develop', 'install'} & set(sys.argv):
        print(f'dlu_mm: {message}', flush=True)


def _nvcc_version(cuda_home):
    """(major, minor) of ``cuda_home``'s nvcc, or None when it cannot be run."""
    try:
        out = subprocess.run([os.path.join(cuda_home, 'bin', 'nvcc'), '--version'],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'release (\d+)\.(\d+)', out)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _want_cuda(cuda_home):
    flag = os.environ.get('DLU_MM_WITH_CUDA', '').strip()
    if flag not in ('', '0', '1'):
        raise ValueError(f'DLU_MM_WITH_CUDA must be 0 or 1, got {flag!r}')
    if flag == '0':
        return False
    import torch
    nvcc = _nvcc_version(cuda_home) if cuda_home else None
    if torch.version.cuda is None or nvcc is None:
        if flag == '1':
            raise RuntimeError(
                'DLU_MM_WITH_CUDA=1 but no CUDA toolchain was found '
                f'(CUDA_HOME={cuda_home!r}, torch.version.cuda={torch.version.cuda!r})')
        return False
    torch_cuda = tuple(int(part) for part in torch.version.cuda.split('.')[:2])
    if nvcc[0] != torch_cuda[0]:
        # torch refuses to build with another CUDA major version; the CPU kernels still build
        why = (f'torch {torch.__version__} is a CUDA {torch.version.cuda} build and nvcc in '
               f'{cuda_home} is CUDA {nvcc[0]}.{nvcc[1]}; point CUDA_HOME at a CUDA '
               f'{torch_cuda[0]}.x toolkit to build them')
        if flag == '1':
            raise RuntimeError(f'DLU_MM_WITH_CUDA=1 but {why}')
        _say(f'skipping the CUDA kernels, building the CPU ones only: {why}')
        return False
    return True


def _find_cuda_home(torch_guess):
    """The CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, else the first candidate with headers.

    torch guesses nvcc's grandparent, which is wrong when nvcc on PATH is a link or a wrapper
    script (/usr/local/bin/nvcc -> /usr/local has no CUDA headers or lib64).
    """
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which('nvcc')
    candidates = [torch_guess, '/usr/local/cuda']
    if nvcc:
        candidates.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for root in candidates:
        if root and os.path.exists(os.path.join(root, 'include', 'cuda_runtime.h')) \
                and os.path.exists(os.path.join(root, 'bin', 'nvcc')):
            return root
    return torch_guess


def _cuda_runtime_libdirs():
    """Library dirs of the CUDA runtime shipped by the pip ``nvidia-*`` packages.

    A pip CUDA torch links against these rather than a system toolkit, and a machine with only
    nvcc (CI) has no libcudart elsewhere.
    """
    import torch
    site = os.path.dirname(os.path.dirname(torch.__file__))
    dirs = sorted(d for d in glob.glob(os.path.join(site, 'nvidia', '**', 'lib'), recursive=True)
                  if glob.glob(os.path.join(d, 'libcudart.so*')))
    # The pip packages ship only libcudart.so.<major>, and CUDAExtension links with -lcudart:
    # give the linker an unversioned name (build/cuda_link/libcudart.so -> libcudart.so.<major>).
    # The extension still records the soname libcudart.so.<major> and finds it via the rpath.
    if dirs and not any(os.path.exists(os.path.join(d, 'libcudart.so')) for d in dirs):
        versioned = sorted(glob.glob(os.path.join(dirs[0], 'libcudart.so.*')))
        if versioned:
            link_dir = os.path.join(ROOT, 'build', 'cuda_link')
            os.makedirs(link_dir, exist_ok=True)
            link = os.path.join(link_dir, 'libcudart.so')
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(versioned[0], link)
            return dirs + [link_dir]
    return dirs


# The torch range dlu_mm supports and tests (README, pyproject.toml)
TORCH_MIN, TORCH_MAX = (2, 1), (2, 14)


def _check_torch(version):
    found = tuple(int(part) for part in version.split('+')[0].split('.')[:2])
    if found < TORCH_MIN:
        raise RuntimeError(f'dlu_mm needs torch >= {TORCH_MIN[0]}.{TORCH_MIN[1]}, this environment '
                           f'has torch {version}')
    if found > TORCH_MAX:
        _say(f'torch {version} is newer than the newest tested ({TORCH_MAX[0]}.{TORCH_MAX[1]}); '
             'building anyway')
    return found


def _extensions():
    cpp = sorted(glob.glob(os.path.join('ops', '**', '*.cpp'), recursive=True))
    if not cpp:
        return [], {}
    from torch.utils import cpp_extension
    cu = sorted(glob.glob(os.path.join('ops', '**', '*.cu'), recursive=True))
    cuda_home = _find_cuda_home(cpp_extension.CUDA_HOME)
    cpp_extension.CUDA_HOME = cuda_home
    with_cuda = bool(cu) and _want_cuda(cuda_home)
    os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
    # Named after the torch it is compiled against (its C++ ABI fits that one only): see
    # dlu_mm/ops/native.py, which loads the one for the running torch.
    import torch
    name = 'dlu_mm._C_torch{}_{}'.format(*_check_torch(torch.__version__))
    # No -std flag: torch's BuildExtension adds the C++ standard its own headers need
    # (C++17 for torch 2.1, C++20 for the newer ones; torch 2.14's headers refuse C++17).
    # at::parallel_for is inline OpenMP code in torch's headers: without -fopenmp it runs serially
    cxx = ['-O3', '-fopenmp']
    include_dirs = [os.path.join(ROOT, 'ops', 'include')]
    if with_cuda:
        _say(f'building the CUDA kernels with {cuda_home} for torch {torch.__version__}')
        libdirs = _cuda_runtime_libdirs()
        ext = cpp_extension.CUDAExtension(
            name, cpp + cu, include_dirs=include_dirs,
            define_macros=[('DLU_MM_WITH_CUDA', '1')],
            library_dirs=libdirs, runtime_library_dirs=libdirs,
            extra_compile_args={'cxx': cxx, 'nvcc': ['-O3', '-lineinfo']},
            extra_link_args=['-fopenmp'])
    else:
        ext = cpp_extension.CppExtension(
            name, cpp, include_dirs=include_dirs, extra_compile_args={'cxx': cxx},
            extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': cpp_extension.BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
