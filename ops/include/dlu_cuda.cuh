// The CUDA driver of the op templates (see dlu_common.h): launches their functors as
// grid-stride kernels and block reductions; instantiated in ops/csrc/<op>/<op>_cuda.cu. Only
// c10/cuda headers: ATen/cuda pulls in cuSPARSE/cuBLAS headers that a bare nvcc install (CI)
// does not have.
#pragma once

#include <ATen/Context.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "dlu_common.h"

namespace dlu_mm {

constexpr int kThreads = kBlockThreads;

template <typename F>
__global__ void for_each_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    f(i);
}

template <typename F>
void cuda_for_each(int64_t n, const F& f) {
  if (n <= 0) return;
  const int64_t blocks = dlu_min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
  for_each_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                    c10::cuda::getCurrentCUDAStream()>>>(n, f);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Atomic accumulation into float/double buffers (scatters whose targets are data-dependent).
struct AtomicAdd {
  template <typename T>
  __device__ __forceinline__ static void add(T* p, T v) { atomicAdd(p, v); }
};

// Block-per-element deterministic reduction: a fixed-order tree sum in shared memory.
template <typename acc_t, typename F>
__global__ void reduce_kernel(int64_t elems, F f) {
  __shared__ acc_t partial[kThreads];
  for (int64_t e = blockIdx.x; e < elems; e += gridDim.x) {
    acc_t acc = 0;
    for (int64_t i = threadIdx.x; i < f.count; i += blockDim.x) acc += f.term(e, i);
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) f.store(e, partial[0]);
    __syncthreads();
  }
}

template <typename acc_t, typename F>
void cuda_reduce(int64_t elems, const F& f) {
  if (elems <= 0) return;
  const int64_t blocks = dlu_min<int64_t>(elems, int64_t(1) << 16);
  reduce_kernel<acc_t><<<static_cast<unsigned>(blocks), kThreads, 0,
                         c10::cuda::getCurrentCUDAStream()>>>(elems, f);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The device driver the op templates are instantiated with on CUDA. Scatters use atomicAdd
// (order-dependent rounding): with torch.use_deterministic_algorithms(True) the op templates
// call their gather formulation instead, so `scatter` is only reached in the default mode; the
// alert stays as a guard against a template that forgets it.
struct CudaDriver {
  using Guard = c10::cuda::CUDAGuard;
  using Add = AtomicAdd;
  template <typename F>
  static void for_each(int64_t n, const F& f) { cuda_for_each(n, f); }
  template <typename F>
  static void scatter(const char* what, int64_t slices, int64_t len, const F& f) {
    if (slices * len > 0) at::globalContext().alertNotDeterministic(what);
    cuda_for_each(slices * len, f);
  }
  template <typename acc_t, typename F>
  static void reduce(int64_t elems, const F& f) { cuda_reduce<acc_t>(elems, f); }
};

}  // namespace dlu_mm
