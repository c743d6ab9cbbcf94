// The 'generic' verification driver: runs, on the CPU, the functors the CUDA driver
// (dlu_cuda.cuh) launches, through the same driver interface and index spaces, so every line of
// the CUDA path's arithmetic executes in CI without a GPU (dlu_mm.ops.set_backend('generic')).
//   for_each  the grid-stride kernel: one call per flat index, in parallel;
//   scatter   the same flat index space with atomic adds (a compare-and-swap loop), so it is as
//             order-dependent as atomicAdd; with deterministic algorithms on, the templates use
//             their gather formulation instead, as on CUDA;
//   reduce    the block reduction: kBlockThreads strided partial sums, then the same fixed tree,
//             so it rounds exactly as the CUDA kernel does (up to FMA contraction).
// Slow by design (no row paths, no vectorisation): a test driver, not the CPU backend (the CPU
// kernels of ops/csrc/<op>/*_cpu.cpp are row kernels of their own).
#pragma once

#include <ATen/Parallel.h>

#include <cstring>
#include <mutex>
#include <type_traits>

#include "dlu_common.h"

namespace dlu_mm {

// atomicAdd on the host for float / double: add to the value read, publish it only if the
// location still holds that value, else retry with the newer one.
struct CpuAtomicAdd {
  template <typename T>
  static void add(T* p, T v) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "CpuAtomicAdd: float or double buffers");
    using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
#if defined(__GNUC__) || defined(__clang__)
    Bits* bits = reinterpret_cast<Bits*>(p);
    Bits seen = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
      T current;
      std::memcpy(&current, &seen, sizeof(T));
      const T updated = current + v;
      Bits desired;
      std::memcpy(&desired, &updated, sizeof(T));
      if (__atomic_compare_exchange_n(bits, &seen, desired, /*weak=*/true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED))
        return;
    }
#else
    static std::mutex lock;
    std::lock_guard<std::mutex> guard(lock);
    *p += v;
#endif
  }
};

struct GenericCpuDriver {
  struct Guard {
    explicit Guard(const c10::Device&) {}
  };
  using Add = CpuAtomicAdd;
  template <typename F>
  static void for_each(int64_t n, const F& f) {
    at::parallel_for(0, n, kBlockThreads, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) f(i);
    });
  }
  template <typename F>
  static void scatter(const char* what, int64_t slices, int64_t len, const F& f) {
    if (slices * len > 0) at::globalContext().alertNotDeterministic(what);
    for_each(slices * len, f);
  }
  template <typename acc_t, typename F>
  static void reduce(int64_t elems, const F& f) {
    at::parallel_for(0, elems, 1, [&](int64_t begin, int64_t end) {
      acc_t partial[kBlockThreads];
      for (int64_t e = begin; e < end; ++e) {
        for (int tid = 0; tid < kBlockThreads; ++tid) {
          acc_t acc = 0;
          for (int64_t i = tid; i < f.count; i += kBlockThreads) acc += f.term(e, i);
          partial[tid] = acc;
        }
        for (int stride = kBlockThreads / 2; stride > 0; stride >>= 1)
          for (int tid = 0; tid < stride; ++tid) partial[tid] += partial[tid + stride];
        f.store(e, partial[0]);
      }
    });
  }
};

}  // namespace dlu_mm
