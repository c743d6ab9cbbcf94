// Shared building blocks of the dlu_mm native ops.
//
// Two kinds of kernels compute each op:
// - The templates of ops/include/<op>.h: functors over a flat 64-bit index with a `DLU_HD`
//   (host + device) call operator, called by the entry points <op>_impl<Driver> /
//   <op>_backward_impl<Driver> through a driver. They are instantiated twice: with CudaDriver
//   (dlu_cuda.cuh; ops/csrc/<op>/<op>_cuda.cu), the CUDA kernels, and with GenericCpuDriver
//   (dlu_generic.h; ops/csrc/generic/generic.cpp, backend 'generic'), the same functors and
//   index spaces run on the CPU, so CI executes the CUDA arithmetic without a GPU and the
//   CUDA vs generic test compares two drivers of the same functors.
// - The CPU kernels (ops/csrc/<op>/<op>_cpu.cpp): row kernels of their own, written for the
//   CPU's caches and vector units. They share with the templates the shape structs, the
//   argument checks and the bilinear set-up (BorderSample / ZeroSample below, reached through
//   the ops' data structs), not the functors; the one exception is guided_reassemble's
//   backward, which runs GuidedGradOffsets and GuidedScatterKernelSpace through dlu_cpu.h.
//   They are tested against the pure-PyTorch references (and, on a GPU, against CUDA).
// Accumulation is in at::opmath_type<scalar_t> (float for half/bfloat16).
#pragma once

#include <ATen/OpMathType.h>
#include <torch/types.h>

#include <math.h>

#include <cmath>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define DLU_HD __host__ __device__ __forceinline__
#define DLU_UNROLL _Pragma("unroll")
#else
#define DLU_HD inline
#define DLU_UNROLL
#endif

namespace dlu_mm {

// Threads per block of the CUDA kernels; the generic driver mirrors its block reduction.
constexpr int kBlockThreads = 256;

template <typename T>
DLU_HD T dlu_min(T a, T b) { return a < b ? a : b; }
template <typename T>
DLU_HD T dlu_max(T a, T b) { return a > b ? a : b; }
DLU_HD float dlu_floor(float v) { return floorf(v); }
DLU_HD double dlu_floor(double v) { return ::floor(v); }
DLU_HD float dlu_exp(float v) { return expf(v); }
DLU_HD double dlu_exp(double v) { return ::exp(v); }

// Bilinear sample of one (H, W) plane with BORDER padding: the coordinate is clamped to
// [0, H-1] x [0, W-1] (the values of grid_sample(align_corners=True, padding_mode='border')).
// The lower corner is floor(y) limited to H-2, so at integer coordinates (all of them at DLU's
// zero-offset init) d/dy is the one-sided in-image difference, also on the last row, and it is
// 0 only where the coordinate is strictly clamped (y < 0 or y > H-1), as clamp's gradient.
// This matches dlu_mm.ops.reassemble.sample_kernel_space. Finite for H or W == 1.
template <typename acc_t>
struct BorderSample {
  int64_t o00, o01, o10, o11;  // element offsets of the four corners in the plane
  acc_t ly, lx;                // fractional parts
  acc_t gy, gx;                // 1 where the coordinate is inside (gradient flows), else 0

  DLU_HD BorderSample(acc_t y, acc_t x, int64_t H, int64_t W) {
    const acc_t ymax = static_cast<acc_t>(H - 1), xmax = static_cast<acc_t>(W - 1);
    gy = (y >= acc_t(0) && y <= ymax) ? acc_t(1) : acc_t(0);
    gx = (x >= acc_t(0) && x <= xmax) ? acc_t(1) : acc_t(0);
    y = dlu_min(dlu_max(y, acc_t(0)), ymax);
    x = dlu_min(dlu_max(x, acc_t(0)), xmax);
    const int64_t y0 = dlu_min(static_cast<int64_t>(dlu_floor(y)), dlu_max<int64_t>(H - 2, 0));
    const int64_t x0 = dlu_min(static_cast<int64_t>(dlu_floor(x)), dlu_max<int64_t>(W - 2, 0));
    const int64_t y1 = dlu_min(y0 + 1, H - 1), x1 = dlu_min(x0 + 1, W - 1);
    ly = y - static_cast<acc_t>(y0);
    lx = x - static_cast<acc_t>(x0);
    o00 = y0 * W + x0; o01 = y0 * W + x1; o10 = y1 * W + x0; o11 = y1 * W + x1;
  }
  DLU_HD acc_t w00() const { return (acc_t(1) - ly) * (acc_t(1) - lx); }
  DLU_HD acc_t w01() const { return (acc_t(1) - ly) * lx; }
  DLU_HD acc_t w10() const { return ly * (acc_t(1) - lx); }
  DLU_HD acc_t w11() const { return ly * lx; }
  // Corner c = 2*row + column of (y0, x0), (y0, x1), (y1, x0), (y1, x1): offset and weight.
  DLU_HD int64_t offset(int c) const { return c == 0 ? o00 : c == 1 ? o01 : c == 2 ? o10 : o11; }
  DLU_HD acc_t weight(int c) const {
    return c == 0 ? w00() : c == 1 ? w01() : c == 2 ? w10() : w11();
  }
  template <typename T>
  DLU_HD acc_t sample(const T* p) const {
    return w00() * static_cast<acc_t>(p[o00]) + w01() * static_cast<acc_t>(p[o01]) +
           w10() * static_cast<acc_t>(p[o10]) + w11() * static_cast<acc_t>(p[o11]);
  }
  template <typename T>  // d sample / d y
  DLU_HD acc_t dy(const T* p) const {
    return gy * ((acc_t(1) - lx) * (static_cast<acc_t>(p[o10]) - static_cast<acc_t>(p[o00])) +
                 lx * (static_cast<acc_t>(p[o11]) - static_cast<acc_t>(p[o01])));
  }
  template <typename T>  // d sample / d x
  DLU_HD acc_t dx(const T* p) const {
    return gx * ((acc_t(1) - ly) * (static_cast<acc_t>(p[o01]) - static_cast<acc_t>(p[o00])) +
                 ly * (static_cast<acc_t>(p[o11]) - static_cast<acc_t>(p[o10])));
  }
};

// Bilinear sample of one (H, W) plane with ZERO padding (grid_sample(padding_mode='zeros')):
// each corner outside the plane contributes 0 (its weight is dropped, not renormalised).
// Outside corners get weight 0 and offset 0, so sampling needs no branches.
template <typename acc_t>
struct ZeroSample {
  int64_t o[4];   // corner offsets (y0,x0), (y0,x1), (y1,x0), (y1,x1); 0 where outside
  acc_t w[4];     // bilinear weights, 0 where outside
  acc_t ly, lx;   // fractional parts
  unsigned char valid;  // bit k: corner k inside

  DLU_HD ZeroSample() : o{0, 0, 0, 0}, w{0, 0, 0, 0}, ly(0), lx(0), valid(0) {}
  DLU_HD ZeroSample(acc_t y, acc_t x, int64_t H, int64_t W) {
    // Far-away points would overflow int64 after floor: they have no valid corner anyway.
    const acc_t lim = static_cast<acc_t>(4) * static_cast<acc_t>(H + W) + acc_t(4);
    y = dlu_min(dlu_max(y, -lim), lim);
    x = dlu_min(dlu_max(x, -lim), lim);
    const acc_t fy = dlu_floor(y), fx = dlu_floor(x);
    const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
    ly = y - fy;
    lx = x - fx;
    valid = 0;
    for (int k = 0; k < 4; ++k) {
      const int64_t yy = y0 + (k >> 1), xx = x0 + (k & 1);
      const bool inside = yy >= 0 && yy < H && xx >= 0 && xx < W;
      const acc_t wy = (k >> 1) ? ly : acc_t(1) - ly, wx = (k & 1) ? lx : acc_t(1) - lx;
      o[k] = inside ? yy * W + xx : 0;
      w[k] = inside ? wy * wx : acc_t(0);
      valid |= inside ? (1 << k) : 0;
    }
  }
  template <typename T>
  DLU_HD acc_t sample(const T* p) const {
    return w[0] * static_cast<acc_t>(p[o[0]]) + w[1] * static_cast<acc_t>(p[o[1]]) +
           w[2] * static_cast<acc_t>(p[o[2]]) + w[3] * static_cast<acc_t>(p[o[3]]);
  }
  template <typename T>  // d sample / d y and d sample / d x
  DLU_HD void grad(const T* p, acc_t& d_y, acc_t& d_x) const {
    acc_t c[4];
    for (int k = 0; k < 4; ++k)
      c[k] = ((valid >> k) & 1) ? static_cast<acc_t>(p[o[k]]) : acc_t(0);
    d_y = (acc_t(1) - lx) * (c[2] - c[0]) + lx * (c[3] - c[1]);
    d_x = (acc_t(1) - ly) * (c[1] - c[0]) + ly * (c[3] - c[2]);
  }
  // Adds v * weight to each inside corner of plane p through `Add` (plain or atomic).
  template <typename Add>
  DLU_HD void scatter(acc_t* p, acc_t v) const {
    for (int k = 0; k < 4; ++k)
      if ((valid >> k) & 1) Add::add(p + o[k], v * w[k]);
  }
};

// Non-atomic accumulation: used where each task owns the written slice (guided_reassemble's
// CPU backward, through cpu_for_each_slice).
struct PlainAdd {
  template <typename T>
  DLU_HD static void add(T* p, T v) { *p += v; }
};

// Deterministic form of a data-dependent scatter. `rows` independent rows (e.g. one per (n, g)),
// each with `entries` contributions; entry e of row `row` adds into cell targets(row, e) of that
// row's `cells` (targets returns `cells` for "no target"). Instead of atomically adding, the
// entries are sorted by (cell, e): a gather functor then sums cell c's contributions
// order[row, bounds[row, c] .. bounds[row, c+1]) (key % entries = e) in increasing e, one fixed
// order on every device, run and thread count. Keys are unique, so any sort gives one result.
template <typename Targets>
struct ScatterKeys {
  Targets targets;
  int64_t entries;
  int64_t* keys;
  DLU_HD void operator()(int64_t idx) const {
    const int64_t e = idx % entries;
    keys[idx] = targets(idx / entries, e) * entries + e;
  }
};

struct ScatterIndex {
  at::Tensor order;   // (rows, entries) int64 keys target * entries + e, sorted per row
  at::Tensor bounds;  // (rows, cells + 1) int64: start of each cell's entries in `order`
};

template <typename Driver, typename Targets>
ScatterIndex invert_scatter(int64_t rows, int64_t entries, int64_t cells, const Targets& targets,
                            const at::TensorOptions& options) {
  const auto long_options = options.dtype(at::kLong);
  if (rows * entries == 0)
    return {at::empty({rows, entries}, long_options), at::zeros({rows, cells + 1}, long_options)};
  at::Tensor keys = at::empty({rows, entries}, long_options);
  Driver::for_each(keys.numel(), ScatterKeys<Targets>{targets, entries, keys.data_ptr<int64_t>()});
  at::Tensor order = std::get<0>(at::sort(keys, -1));
  at::Tensor starts = at::arange(cells + 1, long_options).mul_(entries);
  at::Tensor bounds = at::searchsorted(order, starts.expand({rows, cells + 1}).contiguous());
  return {order, bounds};
}

// Shared argument checks (run before any kernel, on every device).
inline void check_float_tensor(const at::Tensor& t, const char* name, int64_t dim,
                               const at::Tensor& like) {
  TORCH_CHECK(t.dim() == dim, name, " must be a ", dim, "-D tensor, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ",
              like.scalar_type(), " like the first input, got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), name, " must be on device ", like.device(),
              " like the first input, got ", t.device());
}

inline void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, name, " must be a 4-D (N, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), name,
              " must be float16, bfloat16, float32 or float64, got ", x.scalar_type());
}

// x (N, C, H, W) upsampled by scale_factor with `groups` channel groups (reassemble,
// guided_reassemble, subpixel_sample).
inline void check_grouped_upsampling(const at::Tensor& x, int64_t groups, int64_t scale_factor) {
  check_input(x, "x");
  TORCH_CHECK(groups >= 1, "groups must be >= 1, got ", groups);
  TORCH_CHECK(scale_factor >= 1, "scale_factor must be >= 1, got ", scale_factor);
  TORCH_CHECK(x.size(1) % groups == 0, "x's channels (", x.size(1),
              ") must be divisible by groups (", groups, ")");
}

inline void check_odd_kernel(int64_t k, const char* name) {
  TORCH_CHECK(k >= 1 && k % 2 == 1, name, " must be a positive odd integer, got ", k);
}

inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& x, int64_t C, int64_t H,
                    int64_t W) {
  check_float_tensor(grad_out, "grad_out", 4, x);
  TORCH_CHECK(grad_out.size(0) == x.size(0) && grad_out.size(1) == C && grad_out.size(2) == H &&
                  grad_out.size(3) == W,
              "grad_out must have shape (", x.size(0), ", ", C, ", ", H, ", ", W, "), got ",
              grad_out.sizes());
}

}  // namespace dlu_mm
