// CPU drivers of the shared functors (see dlu_common.h). Deterministic: every task writes only
// its own outputs, and sums run in a fixed order.
#pragma once

#include <ATen/Parallel.h>

#include "dlu_common.h"

namespace dlu_mm {

// f(i) for i in [0, n): one write per index.
template <typename F>
void cpu_for_each(int64_t n, const F& f, int64_t grain = 256) {
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

// Scatter functors: f(slice * len + p) writes only inside slice `slice` of the output, so the
// slices run in parallel and each slice's contributions are added serially in index order.
template <typename F>
void cpu_for_each_slice(int64_t slices, int64_t len, const F& f) {
  at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s)
      for (int64_t p = 0; p < len; ++p) f(s * len + p);
  });
}

// Reductions: out[e] = sum_{i < f.count} f.term(e, i), each element summed serially.
template <typename acc_t, typename F>
void cpu_reduce(int64_t elems, const F& f) {
  at::parallel_for(0, elems, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      acc_t acc = 0;
      for (int64_t i = 0; i < f.count; ++i) acc += f.term(e, i);
      f.store(e, acc);
    }
  });
}

// The device driver the op templates are instantiated with on CPU. Its scatter is already
// deterministic (each slice is summed serially in index order), so the templates keep it under
// torch.use_deterministic_algorithms(True) (kOrderedScatter).
struct CpuDriver {
  struct Guard {
    explicit Guard(const c10::Device&) {}
  };
  using Add = PlainAdd;
  static constexpr bool kOrderedScatter = true;
  template <typename F>
  static void for_each(int64_t n, const F& f) { cpu_for_each(n, f); }
  template <typename F>
  static void scatter(const char*, int64_t slices, int64_t len, const F& f) {
    cpu_for_each_slice(slices, len, f);
  }
  template <typename acc_t, typename F>
  static void reduce(int64_t elems, const F& f) { cpu_reduce<acc_t>(elems, f); }
};

}  // namespace dlu_mm
