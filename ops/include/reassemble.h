// Content-aware reassembly (CARAFE op) and DLU's guided reassembly (kernel sampled on the fly).
//
//   reassemble:        Y[n,c,i',j'] = sum_t K[n, g*k*k+t, i', j'] * X[n, c, i'/s+ky-r, j'/s+kx-r]
//   guided_reassemble: the same with K[.., t, i', j'] = kernel_space[n, g*k*k+t] bilinearly
//                      sampled (border clamp) at (i'/s + oy, j'/s + ox), (ox, oy) =
//                      offsets[n, 2g:2g+2, i', j'] in low-res pixels.
// Taps outside the image contribute 0; no renormalisation. Channel c uses group g = c / (C/G).
//
// Where the sampled kernels K (N, G*k*k, sH, sW) exist: the CUDA and generic kernels (the
// templates below) never store them, forward or backward: a functor samples each tap where it
// uses it, once per tile of kChannelTile channels. The CPU forward samples them for one parent
// row (the s output rows of one (n, g)) at a time into a per-task buffer. The CPU backward
// materialises them whole, in opmath precision, for the input gradient, and frees them before
// the kernel gradients. Every backward materialises d loss / d K, the same size in opmath.
#pragma once

#include "dlu_common.h"

namespace dlu_mm {

// Channels per task of the forward and input-gradient functors: a task computes (or samples) a
// tap's kernel value once and applies it to kChannelTile channels of the group, held in as many
// accumulators; the channel tiles give the parallelism that a whole-group loop would lose.
constexpr int kChannelTile = 16;
// Taps per task of the kernel-gradient functor: one pass over the group's channels reads each
// grad_out value once for kTapChunk taps (k = 3: one pass, k = 5: two) instead of once per tap.
constexpr int kTapChunk = 13;

struct ReassembleShape {
  int64_t N, C, H, W, k, G, s;
  int64_t sH, sW, HW, oHW, kk, r, Cg, tiles, tap_chunks;
  ReassembleShape(int64_t N_, int64_t C_, int64_t H_, int64_t W_, int64_t k_, int64_t G_,
                  int64_t s_)
      : N(N_), C(C_), H(H_), W(W_), k(k_), G(G_), s(s_), sH(H_ * s_), sW(W_ * s_),
        HW(H_ * W_), oHW(H_ * s_ * W_ * s_), kk(k_ * k_), r((k_ - 1) / 2), Cg(C_ / G_),
        tiles((C_ / G_ + kChannelTile - 1) / kChannelTile),
        tap_chunks((k_ * k_ + kTapChunk - 1) / kTapChunk) {}
  // Task (n, g, channel tile, pixel) of the tiled functors: its first channel and tile size.
  DLU_HD void tile_of(int64_t task, int64_t& n, int64_t& g, int64_t& c0, int& count) const {
    const int64_t tile = task % tiles, ng = task / tiles;
    g = ng % G;
    n = ng / G;
    c0 = g * Cg + tile * kChannelTile;
    count = static_cast<int>(dlu_min<int64_t>(kChannelTile, Cg - tile * kChannelTile));
  }
};

// Dense kernels (N, G*k*k, sH, sW): tap t of output pixel (i', j').
template <typename scalar_t>
struct DenseKernels {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* kernels;
  struct Taps {
    const scalar_t* p;
    int64_t stride;
    DLU_HD acc_t operator()(int64_t t) const { return static_cast<acc_t>(p[t * stride]); }
  };
  DLU_HD Taps taps(const ReassembleShape& sh, int64_t n, int64_t g, int64_t io, int64_t jo) const {
    return Taps{kernels + (n * sh.G + g) * sh.kk * sh.oHW + io * sh.sW + jo, sh.oHW};
  }
};

// Kernels sampled from the low-res kernel space (N, G*k*k, H, W) at the parent centre + offset.
template <typename scalar_t>
struct SampledKernels {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* kernel_space;
  const scalar_t* offsets;  // (N, 2G, sH, sW): channel 2g = x offset, 2g+1 = y offset
  struct Taps {
    const scalar_t* p;
    int64_t stride;
    BorderSample<acc_t> bs;
    DLU_HD acc_t operator()(int64_t t) const { return bs.sample(p + t * stride); }
  };
  DLU_HD BorderSample<acc_t> where(const ReassembleShape& sh, int64_t n, int64_t g, int64_t io,
                                   int64_t jo) const {
    const scalar_t* off = offsets + (n * 2 * sh.G + 2 * g) * sh.oHW + io * sh.sW + jo;
    const acc_t ox = static_cast<acc_t>(off[0]), oy = static_cast<acc_t>(off[sh.oHW]);
    return BorderSample<acc_t>(static_cast<acc_t>(io / sh.s) + oy,
                               static_cast<acc_t>(jo / sh.s) + ox, sh.H, sh.W);
  }
  DLU_HD Taps taps(const ReassembleShape& sh, int64_t n, int64_t g, int64_t io, int64_t jo) const {
    return Taps{kernel_space + (n * sh.G + g) * sh.kk * sh.HW, sh.HW, where(sh, n, g, io, jo)};
  }
};

// Output pixel (i', j') of channel tile (n, g, tile), over N*G*tiles*sH*sW (pixel fastest:
// neighbouring threads read neighbouring kernels / offsets and write neighbouring outputs).
// Each tap's kernel value is read (DLU: bilinearly sampled) once for the tile's channels.
template <typename scalar_t, typename Kernels>
struct ReassembleForward {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  const scalar_t* x;
  Kernels kernels;
  scalar_t* out;
  DLU_HD void operator()(int64_t idx) const {
    const int64_t p = idx % sh.oHW, jo = p % sh.sW, io = p / sh.sW;
    int64_t n, g, c0;
    int count;
    sh.tile_of(idx / sh.oHW, n, g, c0, count);
    const int64_t i = io / sh.s, j = jo / sh.s;
    const scalar_t* xp = x + (n * sh.C + c0) * sh.HW;
    const auto taps = kernels.taps(sh, n, g, io, jo);
    acc_t acc[kChannelTile];
    DLU_UNROLL
    for (int c = 0; c < kChannelTile; ++c) acc[c] = acc_t(0);
    for (int64_t ky = 0; ky < sh.k; ++ky) {
      const int64_t iy = i + ky - sh.r;
      if (iy < 0 || iy >= sh.H) continue;
      for (int64_t kx = 0; kx < sh.k; ++kx) {
        const int64_t ix = j + kx - sh.r;
        if (ix < 0 || ix >= sh.W) continue;
        const acc_t w = taps(ky * sh.k + kx);
        const scalar_t* xc = xp + iy * sh.W + ix;
        DLU_UNROLL
        for (int c = 0; c < kChannelTile; ++c)
          if (c < count) acc[c] += w * static_cast<acc_t>(xc[c * sh.HW]);
      }
    }
    scalar_t* o = out + (n * sh.C + c0) * sh.oHW + p;
    DLU_UNROLL
    for (int c = 0; c < kChannelTile; ++c)
      if (c < count) o[c * sh.oHW] = static_cast<scalar_t>(acc[c]);
  }
};

// grad_x pixel (iy, ix) of channel tile (n, g, tile), over N*G*tiles*H*W: gathers from every
// output pixel whose window holds (iy, ix), i.e. the s*s children of each parent (i, j) within
// r of (iy, ix); each kernel value is read (sampled) once for the tile's channels.
template <typename scalar_t, typename Kernels>
struct ReassembleGradInput {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  const scalar_t* grad_out;
  Kernels kernels;
  scalar_t* grad_x;
  DLU_HD void operator()(int64_t idx) const {
    const int64_t q = idx % sh.HW, ix = q % sh.W, iy = q / sh.W;
    int64_t n, g, c0;
    int count;
    sh.tile_of(idx / sh.HW, n, g, c0, count);
    const scalar_t* go = grad_out + (n * sh.C + c0) * sh.oHW;
    acc_t acc[kChannelTile];
    DLU_UNROLL
    for (int c = 0; c < kChannelTile; ++c) acc[c] = acc_t(0);
    for (int64_t i = dlu_max<int64_t>(iy - sh.r, 0); i <= dlu_min(iy + sh.r, sh.H - 1); ++i) {
      const int64_t ky = iy - i + sh.r;
      for (int64_t j = dlu_max<int64_t>(ix - sh.r, 0); j <= dlu_min(ix + sh.r, sh.W - 1); ++j) {
        const int64_t t = ky * sh.k + (ix - j + sh.r);
        for (int64_t dy = 0; dy < sh.s; ++dy) {
          const int64_t io = i * sh.s + dy;
          for (int64_t dx = 0; dx < sh.s; ++dx) {
            const int64_t jo = j * sh.s + dx;
            const acc_t w = kernels.taps(sh, n, g, io, jo)(t);
            const scalar_t* gc = go + io * sh.sW + jo;
            DLU_UNROLL
            for (int c = 0; c < kChannelTile; ++c)
              if (c < count) acc[c] += w * static_cast<acc_t>(gc[c * sh.oHW]);
          }
        }
      }
    }
    scalar_t* gx = grad_x + (n * sh.C + c0) * sh.HW + q;
    DLU_UNROLL
    for (int c = 0; c < kChannelTile; ++c)
      if (c < count) gx[c * sh.HW] = static_cast<scalar_t>(acc[c]);
  }
};

// grad_kernels of output pixel (i', j') for tap chunk (n, g, chunk), over
// N*G*tap_chunks*sH*sW (pixel fastest): d loss / d K[n, g*k*k+t, i', j'] for its kTapChunk taps
// in one pass over the group's channels (terms grad_out[c, i', j'] * X[c, tap], c ascending).
// out_t = acc_t: the buffer of d loss / d sampled kernels of guided_reassemble's backward.
template <typename scalar_t, typename out_t = scalar_t>
struct ReassembleGradKernels {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  const scalar_t* x;
  const scalar_t* grad_out;
  out_t* grad_kernels;
  DLU_HD void operator()(int64_t idx) const {
    const int64_t p = idx % sh.oHW, jo = p % sh.sW, io = p / sh.sW, task = idx / sh.oHW;
    const int64_t t0 = (task % sh.tap_chunks) * kTapChunk, ng = task / sh.tap_chunks;
    const int64_t n = ng / sh.G, g = ng % sh.G, i = io / sh.s, j = jo / sh.s;
    int64_t tap[kTapChunk];  // offset of each tap in an input plane, -1 outside / past k*k
    acc_t acc[kTapChunk];
    DLU_UNROLL
    for (int u = 0; u < kTapChunk; ++u) {
      const int64_t t = t0 + u, iy = i + t / sh.k - sh.r, ix = j + t % sh.k - sh.r;
      tap[u] = (t < sh.kk && iy >= 0 && iy < sh.H && ix >= 0 && ix < sh.W) ? iy * sh.W + ix : -1;
      acc[u] = acc_t(0);
    }
    const int64_t c0 = n * sh.C + g * sh.Cg;
    const scalar_t* xp = x + c0 * sh.HW;
    const scalar_t* go = grad_out + c0 * sh.oHW + p;
    for (int64_t c = 0; c < sh.Cg; ++c) {
      const acc_t v = static_cast<acc_t>(go[c * sh.oHW]);
      DLU_UNROLL
      for (int u = 0; u < kTapChunk; ++u)
        if (tap[u] >= 0) acc[u] += v * static_cast<acc_t>(xp[c * sh.HW + tap[u]]);
    }
    out_t* out = grad_kernels + (ng * sh.kk + t0) * sh.oHW + p;
    DLU_UNROLL
    for (int u = 0; u < kTapChunk; ++u)
      if (t0 + u < sh.kk) out[u * sh.oHW] = static_cast<out_t>(acc[u]);
  }
};

// grad_offsets element (n, g, i', j') over N*G*sH*sW: chain rule through the bilinear sample.
template <typename scalar_t>
struct GuidedGradOffsets {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  SampledKernels<scalar_t> kernels;
  scalar_t* grad_offsets;
  const acc_t* kernel_grads;  // d loss / d sampled kernels (N, G*k*k, sH, sW)
  DLU_HD void operator()(int64_t idx) const {
    const int64_t jo = idx % sh.sW, io = (idx / sh.sW) % sh.sH, ng = idx / sh.oHW;
    const int64_t g = ng % sh.G, n = ng / sh.G;
    const BorderSample<acc_t> bs = kernels.where(sh, n, g, io, jo);
    const scalar_t* ks = kernels.kernel_space + ng * sh.kk * sh.HW;
    acc_t gy = 0, gx = 0;
    for (int64_t t = 0; t < sh.kk; ++t) {
      const acc_t gk = kernel_grads[(ng * sh.kk + t) * sh.oHW + io * sh.sW + jo];
      gy += gk * bs.dy(ks + t * sh.HW);
      gx += gk * bs.dx(ks + t * sh.HW);
    }
    scalar_t* out = grad_offsets + n * 2 * sh.oHW * sh.G + 2 * g * sh.oHW + io * sh.sW + jo;
    out[0] = static_cast<scalar_t>(gx);
    out[sh.oHW] = static_cast<scalar_t>(gy);
  }
};

// Scatter of d loss / d K' into grad_kernel_space (acc_t buffer), element (n, g, t, i', j')
// over N*G*k*k*sH*sW; it writes only to plane (n, g*k*k+t).
template <typename scalar_t, typename Add>
struct GuidedScatterKernelSpace {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  SampledKernels<scalar_t> kernels;
  acc_t* grad_kernel_space;
  const acc_t* kernel_grads;  // d loss / d sampled kernels (N, G*k*k, sH, sW)
  DLU_HD void operator()(int64_t idx) const {
    const int64_t jo = idx % sh.sW, io = (idx / sh.sW) % sh.sH, plane = idx / sh.oHW;
    const int64_t g = (plane / sh.kk) % sh.G, n = plane / sh.kk / sh.G;
    const acc_t gk = kernel_grads[idx];
    if (gk == acc_t(0)) return;
    const BorderSample<acc_t> bs = kernels.where(sh, n, g, io, jo);
    acc_t* p = grad_kernel_space + plane * sh.HW;
    Add::add(p + bs.o00, gk * bs.w00());
    Add::add(p + bs.o01, gk * bs.w01());
    Add::add(p + bs.o10, gk * bs.w10());
    Add::add(p + bs.o11, gk * bs.w11());
  }
};

// The deterministic kernel-space gradient. Entry e = 4 * output pixel + corner of row (n, g)
// targets the corner's kernel-space cell; every tap t of the group shares the location.
template <typename scalar_t>
struct GuidedCorners {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  SampledKernels<scalar_t> kernels;
  DLU_HD int64_t operator()(int64_t ng, int64_t e) const {
    const int64_t p = e / 4;
    return kernels.where(sh, ng / sh.G, ng % sh.G, p / sh.sW, p % sh.sW)
        .offset(static_cast<int>(e % 4));
  }
};

// grad_kernel_space element (n, g*k*k+t, y, x) over N*G*k*k*H*W: the gather form of
// GuidedScatterKernelSpace, summing the same products over the cell's sorted entries.
template <typename scalar_t>
struct GuidedGatherKernelSpace {
  using acc_t = at::opmath_type<scalar_t>;
  ReassembleShape sh;
  SampledKernels<scalar_t> kernels;
  const acc_t* kernel_grads;  // (N, G*k*k, sH, sW)
  const int64_t* order;       // ScatterIndex of GuidedCorners
  const int64_t* bounds;
  acc_t* grad_kernel_space;
  DLU_HD void operator()(int64_t idx) const {
    const int64_t cell = idx % sh.HW, plane = idx / sh.HW, ng = plane / sh.kk;
    const int64_t entries = 4 * sh.oHW;
    const int64_t* keys = order + ng * entries;
    const int64_t* range = bounds + ng * (sh.HW + 1) + cell;
    acc_t acc = 0;
    for (int64_t i = range[0]; i < range[1]; ++i) {
      const int64_t e = keys[i] % entries, p = e / 4;
      const acc_t gk = kernel_grads[plane * sh.oHW + p];
      if (gk == acc_t(0)) continue;
      const BorderSample<acc_t> bs = kernels.where(sh, ng / sh.G, ng % sh.G, p / sh.sW, p % sh.sW);
      acc += gk * bs.weight(static_cast<int>(e % 4));
    }
    grad_kernel_space[idx] = acc;
  }
};

// Argument checks run by every backend's entry points (reassemble_checks.cpp);
// check_reassemble returns the geometry.
ReassembleShape check_reassemble(const at::Tensor& x, const at::Tensor& kernels, int64_t k,
                                 int64_t groups, int64_t scale_factor, const char* kernels_name,
                                 bool low_res_kernels);
void check_offsets(const at::Tensor& offsets, const at::Tensor& x, const ReassembleShape& sh);

// Entry points of the CUDA and generic backends, templated on the driver: CudaDriver
// (dlu_cuda.cuh) in ops/csrc/reassemble/reassemble_cuda.cu, GenericCpuDriver (dlu_generic.h) in
// ops/csrc/generic/generic.cpp. The CPU backend is reassemble_cpu.cpp's row kernels.
template <typename Driver>
at::Tensor reassemble_impl(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t k,
                           int64_t groups, int64_t s) {
  const ReassembleShape sh = check_reassemble(x_in, kernels_in, k, groups, s, "kernels", false);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "reassemble", [&] {
    Driver::for_each(sh.N * sh.G * sh.tiles * sh.oHW,
                     ReassembleForward<scalar_t, DenseKernels<scalar_t>>{
        sh, x.data_ptr<scalar_t>(), {kernels.data_ptr<scalar_t>()}, out.data_ptr<scalar_t>()});
  });
  return out;
}

template <typename Driver>
std::tuple<at::Tensor, at::Tensor> reassemble_backward_impl(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& kernels_in,
    int64_t k, int64_t groups, int64_t s) {
  const ReassembleShape sh = check_reassemble(x_in, kernels_in, k, groups, s, "kernels", false);
  check_grad_out(grad_out_in, x_in, sh.C, sh.sH, sh.sW);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = at::empty_like(x), grad_kernels = at::empty_like(kernels);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "reassemble_backward", [&] {
        Driver::for_each(sh.N * sh.G * sh.tiles * sh.HW,
                         ReassembleGradInput<scalar_t, DenseKernels<scalar_t>>{
            sh, grad_out.data_ptr<scalar_t>(), {kernels.data_ptr<scalar_t>()},
            grad_x.data_ptr<scalar_t>()});
        Driver::for_each(sh.N * sh.G * sh.tap_chunks * sh.oHW, ReassembleGradKernels<scalar_t>{
            sh, x.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
            grad_kernels.data_ptr<scalar_t>()});
      });
  return {grad_x, grad_kernels};
}

template <typename Driver>
at::Tensor guided_reassemble_impl(const at::Tensor& x_in, const at::Tensor& kernel_space_in,
                                  const at::Tensor& offsets_in, int64_t k, int64_t groups,
                                  int64_t s) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernel_space_in, k, groups, s, "kernel_space", true);
  check_offsets(offsets_in, x_in, sh);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), kernel_space = kernel_space_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "guided_reassemble", [&] {
        Driver::for_each(sh.N * sh.G * sh.tiles * sh.oHW,
                         ReassembleForward<scalar_t, SampledKernels<scalar_t>>{
            sh, x.data_ptr<scalar_t>(),
            {kernel_space.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>()},
            out.data_ptr<scalar_t>()});
      });
  return out;
}

template <typename Driver>
std::tuple<at::Tensor, at::Tensor, at::Tensor> guided_reassemble_backward_impl(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& kernel_space_in,
    const at::Tensor& offsets_in, int64_t k, int64_t groups, int64_t s) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernel_space_in, k, groups, s, "kernel_space", true);
  check_offsets(offsets_in, x_in, sh);
  check_grad_out(grad_out_in, x_in, sh.C, sh.sH, sh.sW);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), kernel_space = kernel_space_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = at::empty_like(x), grad_offsets = at::empty_like(offsets);
  // The kernel-space gradient is a scatter (offsets are data): accumulate in opmath precision.
  const auto acc_dtype = at::toOpMathType(x.scalar_type());
  at::Tensor grad_ks_acc = at::zeros(kernel_space.sizes(), x.options().dtype(acc_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "guided_reassemble_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const SampledKernels<scalar_t> kernels{kernel_space.data_ptr<scalar_t>(),
                                               offsets.data_ptr<scalar_t>()};
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* go = grad_out.data_ptr<scalar_t>();
        acc_t* grad_ks = grad_ks_acc.data_ptr<acc_t>();
        Driver::for_each(sh.N * sh.G * sh.tiles * sh.HW,
                         ReassembleGradInput<scalar_t, SampledKernels<scalar_t>>{
            sh, go, kernels, grad_x.data_ptr<scalar_t>()});
        // d loss / d sampled kernels once into an (N, G*k*k, sH, sW) buffer (G*k*k/C of
        // grad_out's size): both the offset and the kernel-space gradients read it.
        at::Tensor kernel_grads =
            at::empty({sh.N, sh.G * sh.kk, sh.sH, sh.sW}, x.options().dtype(acc_dtype));
        acc_t* kg = kernel_grads.data_ptr<acc_t>();
        Driver::for_each(sh.N * sh.G * sh.tap_chunks * sh.oHW,
                         ReassembleGradKernels<scalar_t, acc_t>{sh, xp, go, kg});
        Driver::for_each(sh.N * sh.G * sh.oHW, GuidedGradOffsets<scalar_t>{
            sh, kernels, grad_offsets.data_ptr<scalar_t>(), kg});
        if (!at::globalContext().deterministicAlgorithms()) {
          Driver::scatter("guided_reassemble_backward (kernel_space gradient)",
                          sh.N * sh.G * sh.kk, sh.oHW,
                          GuidedScatterKernelSpace<scalar_t, typename Driver::Add>{
                              sh, kernels, grad_ks, kg});
        } else {  // deterministic: every kernel-space cell gathers in one fixed order
          const ScatterIndex index = invert_scatter<Driver>(
              sh.N * sh.G, 4 * sh.oHW, sh.HW, GuidedCorners<scalar_t>{sh, kernels}, x.options());
          Driver::for_each(grad_ks_acc.numel(), GuidedGatherKernelSpace<scalar_t>{
              sh, kernels, kg, index.order.data_ptr<int64_t>(),
              index.bounds.data_ptr<int64_t>(), grad_ks});
        }
      });
  return {grad_x, grad_ks_acc.to(x.scalar_type()), grad_offsets};
}

at::Tensor reassemble_cpu(const at::Tensor& x, const at::Tensor& kernels, int64_t k,
                          int64_t groups, int64_t scale_factor);
std::tuple<at::Tensor, at::Tensor> reassemble_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels, int64_t k,
    int64_t groups, int64_t scale_factor);
at::Tensor guided_reassemble_cpu(const at::Tensor& x, const at::Tensor& kernel_space,
                                 const at::Tensor& offsets, int64_t k, int64_t groups,
                                 int64_t scale_factor);
std::tuple<at::Tensor, at::Tensor, at::Tensor> guided_reassemble_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernel_space,
    const at::Tensor& offsets, int64_t k, int64_t groups, int64_t scale_factor);

at::Tensor reassemble_cuda(const at::Tensor& x, const at::Tensor& kernels, int64_t k,
                           int64_t groups, int64_t scale_factor);
std::tuple<at::Tensor, at::Tensor> reassemble_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels, int64_t k,
    int64_t groups, int64_t scale_factor);
at::Tensor guided_reassemble_cuda(const at::Tensor& x, const at::Tensor& kernel_space,
                                  const at::Tensor& offsets, int64_t k, int64_t groups,
                                  int64_t scale_factor);
std::tuple<at::Tensor, at::Tensor, at::Tensor> guided_reassemble_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernel_space,
    const at::Tensor& offsets, int64_t k, int64_t groups, int64_t scale_factor);

}  // namespace dlu_mm
