// Parallel loops for running shared functors (ops/include/<op>.h) from a CPU kernel. The CPU
// kernels are row kernels of their own (ops/csrc/<op>/*_cpu.cpp); only guided_reassemble's
// backward (reassemble_cpu.cpp) calls functors through these two, for its offset gradient
// (GuidedGradOffsets) and its kernel-space scatter (GuidedScatterKernelSpace with PlainAdd).
// Deterministic: every task writes only its own outputs, and sums run in a fixed order.
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

}  // namespace dlu_mm
