// CPU ddf: row-wise kernels (the maths of ops/include/ddf.h, which the CUDA and generic backends
// instantiate).
//
// The generic functors compute one element at a time with the tap index maths, the filter
// product and the border test per tap, and grad_spatial reads grad_out and x strided over the
// channels. Here every task works on whole output rows with the k*k taps outermost: for a tap,
// the valid output columns [lo, hi) are one contiguous range (unit stride: x row shifted by the
// tap's column offset), so each tap is a branch-free, vectorisable row-times-row product with
// the channel weight Ch[n, c, t] hoisted. The taps of an output element are summed in the same
// order as the functor's (t ascending, taps outside skipped), so the forward and grad_spatial
// are the functor's sums; grad_x and grad_channel sum the same terms in another order.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ddf.h"

namespace dlu_mm {
namespace {

// One tap of one output row: input row iy (or -1), column offset dx, valid columns [lo, hi).
struct TapRow {
  int64_t iy, dx, lo, hi;
};

// Output columns jo with 0 <= jo*stride + dx < W, as [lo, hi) (empty when none).
inline void tap_cols(const DdfShape& sh, int64_t dx, int64_t& lo, int64_t& hi) {
  lo = dx >= 0 ? 0 : (-dx + sh.stride - 1) / sh.stride;
  hi = (sh.W - 1 - dx) < 0 ? 0 : dlu_min<int64_t>(sh.Wo, (sh.W - 1 - dx) / sh.stride + 1);
  if (hi < lo) hi = lo;
}

// The k*k taps of output row io.
inline void tap_rows(const DdfShape& sh, int64_t io, TapRow* taps) {
  for (int64_t t = 0; t < sh.kk; ++t) {
    const int64_t iy = io * sh.stride + sh.dil * (t / sh.k - sh.r);
    TapRow& tr = taps[t];
    tr.iy = (iy < 0 || iy >= sh.H) ? -1 : iy;
    tr.dx = sh.dil * (t % sh.k - sh.r);
    tap_cols(sh, tr.dx, tr.lo, tr.hi);
  }
}

// The k*k spatial filter rows of (n, io), converted to acc_t: srow[t * Wo + jo].
template <typename scalar_t, typename acc_t>
inline void spatial_rows(const DdfShape& sh, const scalar_t* spatial, int64_t n, int64_t io,
                         acc_t* srow) {
  for (int64_t t = 0; t < sh.kk; ++t) {
    const scalar_t* s = spatial + (n * sh.kk + t) * sh.oHW + io * sh.Wo;
    for (int64_t jo = 0; jo < sh.Wo; ++jo) srow[t * sh.Wo + jo] = static_cast<acc_t>(s[jo]);
  }
}

// x row of a tap as seen from output column jo: xr[jo * stride] (unit: xr[jo]).
template <bool kUnit>
inline int64_t col(int64_t jo, int64_t stride) { return kUnit ? jo : jo * stride; }

// Forward, one (n, output row) per task, channels inside: the row's k*k spatial filter rows
// stay in L1 across all C channels.
template <typename scalar_t, bool kUnit>
void forward_rows(const DdfShape& sh, const scalar_t* x, const scalar_t* channel,
                  const scalar_t* spatial, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, sh.N * sh.Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.Wo), srow(sh.kk * sh.Wo);
    std::vector<TapRow> taps(sh.kk);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.Ho, n = row / sh.Ho;
      tap_rows(sh, io, taps.data());
      spatial_rows(sh, spatial, n, io, srow.data());
      for (int64_t c = 0; c < sh.C; ++c) {
        const scalar_t* xp = x + (n * sh.C + c) * sh.HW;
        const scalar_t* chp = channel + (n * sh.C + c) * sh.kk;
        acc_t* __restrict__ a = acc.data();
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t t = 0; t < sh.kk; ++t) {
          const TapRow& tr = taps[t];
          if (tr.iy < 0) continue;
          const acc_t w = static_cast<acc_t>(chp[t]);
          const scalar_t* __restrict__ xr = xp + tr.iy * sh.W + tr.dx;
          const acc_t* __restrict__ s = srow.data() + t * sh.Wo;
          if (sh.mul) {
            for (int64_t jo = tr.lo; jo < tr.hi; ++jo)
              a[jo] += static_cast<acc_t>(xr[col<kUnit>(jo, sh.stride)]) * (s[jo] * w);
          } else {
            for (int64_t jo = tr.lo; jo < tr.hi; ++jo)
              a[jo] += static_cast<acc_t>(xr[col<kUnit>(jo, sh.stride)]) * (s[jo] + w);
          }
        }
        scalar_t* orow = out + (n * sh.C + c) * sh.oHW + io * sh.Wo;
        for (int64_t jo = 0; jo < sh.Wo; ++jo) orow[jo] = static_cast<scalar_t>(a[jo]);
      }
    }
  });
}

// Sum of p[lo..hi) in 8 interleaved partial sums (vectorisable without reassociation flags;
// a fixed order, so deterministic).
template <typename acc_t>
inline acc_t row_sum(const acc_t* __restrict__ p, int64_t lo, int64_t hi) {
  acc_t l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = lo;
  for (; j + 8 <= hi; j += 8)
    for (int q = 0; q < 8; ++q) l[q] += p[j + q];
  acc_t total = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; j < hi; ++j) total += p[j];
  return total;
}

// grad_spatial and grad_channel, one (n, output row) per task: per channel and tap,
// v = grad_out * x_tap over the row; grad_spatial's row accumulates v * Ch over the channels
// (the functor's order), and the row's share of grad_channel[n, c, t] = sum v * S goes to
// partial[(n*Ho + io), c, t], summed over the rows afterwards in row order.
template <typename scalar_t, bool kUnit>
void filter_grad_rows(const DdfShape& sh, const scalar_t* x, const scalar_t* channel,
                      const scalar_t* spatial, const scalar_t* grad_out,
                      scalar_t* grad_spatial, at::opmath_type<scalar_t>* partial) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, sh.N * sh.Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gs(sh.kk * sh.Wo), srow(sh.kk * sh.Wo), gor(sh.Wo), prod(sh.Wo);
    std::vector<TapRow> taps(sh.kk);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.Ho, n = row / sh.Ho;
      tap_rows(sh, io, taps.data());
      spatial_rows(sh, spatial, n, io, srow.data());
      std::fill(gs.begin(), gs.end(), acc_t(0));
      acc_t* part = partial + row * sh.C * sh.kk;
      for (int64_t c = 0; c < sh.C; ++c) {
        const scalar_t* xp = x + (n * sh.C + c) * sh.HW;
        const scalar_t* chp = channel + (n * sh.C + c) * sh.kk;
        const scalar_t* go = grad_out + (n * sh.C + c) * sh.oHW + io * sh.Wo;
        acc_t* __restrict__ g = gor.data();
        for (int64_t jo = 0; jo < sh.Wo; ++jo) g[jo] = static_cast<acc_t>(go[jo]);
        for (int64_t t = 0; t < sh.kk; ++t) {
          const TapRow& tr = taps[t];
          if (tr.iy < 0) {
            part[c * sh.kk + t] = 0;
            continue;
          }
          const acc_t w = static_cast<acc_t>(chp[t]);
          const scalar_t* __restrict__ xr = xp + tr.iy * sh.W + tr.dx;
          const acc_t* __restrict__ s = srow.data() + t * sh.Wo;
          acc_t* __restrict__ gst = gs.data() + t * sh.Wo;
          acc_t* __restrict__ pr = prod.data();
          if (sh.mul) {
            for (int64_t jo = tr.lo; jo < tr.hi; ++jo) {
              const acc_t v = g[jo] * static_cast<acc_t>(xr[col<kUnit>(jo, sh.stride)]);
              gst[jo] += v * w;
              pr[jo] = v * s[jo];
            }
          } else {
            for (int64_t jo = tr.lo; jo < tr.hi; ++jo) {
              const acc_t v = g[jo] * static_cast<acc_t>(xr[col<kUnit>(jo, sh.stride)]);
              gst[jo] += v;
              pr[jo] = v;
            }
          }
          part[c * sh.kk + t] = row_sum(pr, tr.lo, tr.hi);
        }
      }
      for (int64_t t = 0; t < sh.kk; ++t) {
        scalar_t* out = grad_spatial + (n * sh.kk + t) * sh.oHW + io * sh.Wo;
        for (int64_t jo = 0; jo < sh.Wo; ++jo) out[jo] = static_cast<scalar_t>(gs[t * sh.Wo + jo]);
      }
    }
  });
}

// grad_x, one (n, block of channels) per task: output rows outermost (their spatial filter
// rows stay in L1 for the block), each tap adds grad_out * W along a contiguous input row
// segment of the channel's acc_t plane (the transpose of the forward's row product).
template <typename scalar_t, bool kUnit>
void grad_input_planes(const DdfShape& sh, const scalar_t* channel, const scalar_t* spatial,
                       const scalar_t* grad_out, scalar_t* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kBlock = 8;
  const int64_t blocks = (sh.C + kBlock - 1) / kBlock;
  at::parallel_for(0, sh.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(kBlock * sh.HW), srow(sh.kk * sh.Wo), gor(sh.Wo);
    std::vector<TapRow> taps(sh.kk);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % blocks, n = task / blocks, c0 = b * kBlock;
      const int64_t nb = dlu_min<int64_t>(kBlock, sh.C - c0);
      std::fill(acc.begin(), acc.begin() + nb * sh.HW, acc_t(0));
      for (int64_t io = 0; io < sh.Ho; ++io) {
        tap_rows(sh, io, taps.data());
        spatial_rows(sh, spatial, n, io, srow.data());
        for (int64_t cc = 0; cc < nb; ++cc) {
          const int64_t c = c0 + cc;
          const scalar_t* chp = channel + (n * sh.C + c) * sh.kk;
          const scalar_t* go = grad_out + (n * sh.C + c) * sh.oHW + io * sh.Wo;
          acc_t* __restrict__ g = gor.data();
          for (int64_t jo = 0; jo < sh.Wo; ++jo) g[jo] = static_cast<acc_t>(go[jo]);
          acc_t* plane = acc.data() + cc * sh.HW;
          for (int64_t t = 0; t < sh.kk; ++t) {
            const TapRow& tr = taps[t];
            if (tr.iy < 0) continue;
            const acc_t w = static_cast<acc_t>(chp[t]);
            acc_t* __restrict__ ar = plane + tr.iy * sh.W + tr.dx;
            const acc_t* __restrict__ s = srow.data() + t * sh.Wo;
            if (sh.mul) {
              for (int64_t jo = tr.lo; jo < tr.hi; ++jo)
                ar[col<kUnit>(jo, sh.stride)] += g[jo] * (s[jo] * w);
            } else {
              for (int64_t jo = tr.lo; jo < tr.hi; ++jo)
                ar[col<kUnit>(jo, sh.stride)] += g[jo] * (s[jo] + w);
            }
          }
        }
      }
      for (int64_t cc = 0; cc < nb; ++cc) {
        scalar_t* gx = grad_x + (n * sh.C + c0 + cc) * sh.HW;
        const acc_t* plane = acc.data() + cc * sh.HW;
        for (int64_t i = 0; i < sh.HW; ++i) gx[i] = static_cast<scalar_t>(plane[i]);
      }
    }
  });
}

}  // namespace

at::Tensor ddf_cpu(const at::Tensor& x_in, const at::Tensor& channel_filter,
                   const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
                   c10::string_view combine) {
  const DdfShape sh =
      check_ddf(x_in, channel_filter, spatial_filter, k, dilation, stride, std::string(combine));
  const at::Tensor x = x_in.contiguous(), channel = channel_filter.contiguous();
  const at::Tensor spatial = spatial_filter.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.Ho, sh.Wo}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ddf", [&] {
    auto run = [&](auto unit) {
      forward_rows<scalar_t, decltype(unit)::value>(
          sh, x.data_ptr<scalar_t>(), channel.data_ptr<scalar_t>(),
          spatial.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    };
    if (sh.stride == 1) run(std::true_type{}); else run(std::false_type{});
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddf_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& channel_filter,
    const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
    c10::string_view combine) {
  const DdfShape sh =
      check_ddf(x_in, channel_filter, spatial_filter, k, dilation, stride, std::string(combine));
  check_grad_out(grad_out_in, x_in, sh.C, sh.Ho, sh.Wo);
  const at::Tensor x = x_in.contiguous(), channel = channel_filter.contiguous();
  const at::Tensor spatial = spatial_filter.contiguous(), grad_out = grad_out_in.contiguous();
  if (grad_out.numel() == 0 || x.numel() == 0)  // no output: every gradient is 0
    return {at::zeros_like(x), at::zeros_like(channel), at::zeros_like(spatial)};
  // every element of the three is written below (grad_x planes in full, from their buffers)
  at::Tensor grad_x = at::empty_like(x), grad_channel = at::empty_like(channel);
  at::Tensor grad_spatial = at::empty_like(spatial);
  const auto acc_dtype = at::toOpMathType(x.scalar_type());
  // per output row shares of grad_channel: (N, Ho, C, k*k)
  at::Tensor partial = at::empty({sh.N, sh.Ho, sh.C, sh.kk}, x.options().dtype(acc_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ddf_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto run = [&](auto unit) {
      constexpr bool kUnit = decltype(unit)::value;
      grad_input_planes<scalar_t, kUnit>(sh, channel.data_ptr<scalar_t>(),
                                         spatial.data_ptr<scalar_t>(),
                                         grad_out.data_ptr<scalar_t>(),
                                         grad_x.data_ptr<scalar_t>());
      filter_grad_rows<scalar_t, kUnit>(sh, x.data_ptr<scalar_t>(), channel.data_ptr<scalar_t>(),
                                        spatial.data_ptr<scalar_t>(),
                                        grad_out.data_ptr<scalar_t>(),
                                        grad_spatial.data_ptr<scalar_t>(),
                                        partial.data_ptr<acc_t>());
    };
    if (sh.stride == 1) run(std::true_type{}); else run(std::false_type{});
    // grad_channel[n, c, t] = sum over the output rows of their shares, in row order
    const acc_t* part = partial.data_ptr<acc_t>();
    scalar_t* gc = grad_channel.data_ptr<scalar_t>();
    const int64_t ckk = sh.C * sh.kk;
    at::parallel_for(0, sh.N * ckk, 256, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t n = e / ckk, ct = e % ckk;
        acc_t total = 0;
        for (int64_t io = 0; io < sh.Ho; ++io) total += part[(n * sh.Ho + io) * ckk + ct];
        gc[e] = static_cast<scalar_t>(total);
      }
    });
  });
  return {grad_x, grad_channel, grad_spatial};
}

}  // namespace dlu_mm
