"""Build hook of dlu_mm: compiles the native ops in ``ops/`` into ``dlu_mm._C``.

``pip install --no-build-isolation -e .`` builds against the torch in the environment.
C++ sources (``ops/**/*.cpp``) are always compiled; CUDA sources (``ops/**/*.cu``) are compiled
when ``DLU_MM_WITH_CUDA`` is 1, or when it is unset and nvcc plus a CUDA build of torch are
present (no GPU is needed to compile). ``DLU_MM_WITH_CUDA=0`` skips them for quick local builds.
``TORCH_CUDA_ARCH_LIST`` defaults to "8.0;9.0" (A100, H100/H200).
"""
import glob
import os
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda(cuda_home):
    flag = os.environ.get('DLU_MM_WITH_CUDA', '').strip()
    if flag not in ('', '0', '1'):
        raise ValueError(f'DLU_MM_WITH_CUDA must be 0 or 1, got {flag!r}')
    import torch
    available = cuda_home is not None and torch.version.cuda is not None
    if flag == '1' and not available:
        raise RuntimeError(
            'DLU_MM_WITH_CUDA=1 but no CUDA toolchain was found '
            f'(CUDA_HOME={cuda_home!r}, torch.version.cuda={torch.version.cuda!r})')
    return available if flag == '' else flag == '1'


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
    # at::parallel_for is inline OpenMP code in torch's headers: without -fopenmp it runs serially
    cxx = ['-O3', '-std=c++17', '-fopenmp']
    include_dirs = [os.path.join(ROOT, 'ops', 'include')]
    if with_cuda:
        libdirs = _cuda_runtime_libdirs()
        ext = cpp_extension.CUDAExtension(
            'dlu_mm._C', cpp + cu, include_dirs=include_dirs,
            define_macros=[('DLU_MM_WITH_CUDA', '1')],
            library_dirs=libdirs, runtime_library_dirs=libdirs,
            extra_compile_args={'cxx': cxx, 'nvcc': ['-O3', '-std=c++17', '-lineinfo']},
            extra_link_args=['-fopenmp'])
    else:
        ext = cpp_extension.CppExtension(
            'dlu_mm._C', cpp, include_dirs=include_dirs, extra_compile_args={'cxx': cxx},
            extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': cpp_extension.BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
