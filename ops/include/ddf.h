// Decoupled dynamic filter (DDF, Zhou et al., CVPR 2021):
//   Y[n,c,p] = sum_t X[n, c, p*stride + dilation*(t - r)] * W(c, t, p),
//   W = S[n,t,p] * Ch[n,c,t] ('mul') or S[n,t,p] + Ch[n,c,t] ('add'); taps outside are skipped.
// channel_filter Ch (N, C, k, k), spatial_filter S (N, k*k, H//stride, W//stride).
#pragma once

#include "dlu_common.h"

namespace dlu_mm {

struct DdfShape {
  int64_t N, C, H, W, k, dil, stride, Ho, Wo, HW, oHW, kk, r;
  bool mul;
};

template <typename scalar_t>
struct DdfData {
  using acc_t = at::opmath_type<scalar_t>;
  DdfShape sh;
  const scalar_t* x;
  const scalar_t* channel_filter;
  const scalar_t* spatial_filter;
  // Weight of tap t for channel c at output pixel p of sample n.
  DLU_HD acc_t weight(int64_t n, int64_t c, int64_t t, int64_t p) const {
    const acc_t s = static_cast<acc_t>(spatial_filter[(n * sh.kk + t) * sh.oHW + p]);
    const acc_t ch = static_cast<acc_t>(channel_filter[(n * sh.C + c) * sh.kk + t]);
    return sh.mul ? s * ch : s + ch;
  }
  // Input offset of tap t at output pixel (py, px) of plane-local coordinates, or -1 if outside.
  DLU_HD int64_t tap(int64_t t, int64_t py, int64_t px) const {
    const int64_t iy = py * sh.stride + sh.dil * (t / sh.k - sh.r);
    const int64_t ix = px * sh.stride + sh.dil * (t % sh.k - sh.r);
    return (iy < 0 || iy >= sh.H || ix < 0 || ix >= sh.W) ? -1 : iy * sh.W + ix;
  }
};

// Output element (n, c, py, px) over N*C*Ho*Wo.
template <typename scalar_t>
struct DdfForward {
  using acc_t = at::opmath_type<scalar_t>;
  DdfData<scalar_t> d;
  scalar_t* out;
  DLU_HD void operator()(int64_t idx) const {
    const DdfShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nc = idx / sh.oHW, c = nc % sh.C, n = nc / sh.C;
    const scalar_t* xp = d.x + nc * sh.HW;
    acc_t acc = 0;
    for (int64_t t = 0; t < sh.kk; ++t) {
      const int64_t o = d.tap(t, p / sh.Wo, p % sh.Wo);
      if (o >= 0) acc += static_cast<acc_t>(xp[o]) * d.weight(n, c, t, p);
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
};

// grad_x element (n, c, iy, ix) over N*C*H*W: gathers the output pixels whose tap hits it.
template <typename scalar_t>
struct DdfGradInput {
  using acc_t = at::opmath_type<scalar_t>;
  DdfData<scalar_t> d;
  const scalar_t* grad_out;
  scalar_t* grad_x;
  DLU_HD void operator()(int64_t idx) const {
    const DdfShape& sh = d.sh;
    const int64_t ix = idx % sh.W, iy = (idx / sh.W) % sh.H, nc = idx / sh.HW;
    const int64_t c = nc % sh.C, n = nc / sh.C;
    const scalar_t* go = grad_out + nc * sh.oHW;
    acc_t acc = 0;
    for (int64_t ty = 0; ty < sh.k; ++ty) {
      const int64_t ny = iy - sh.dil * (ty - sh.r);
      if (ny < 0 || ny % sh.stride != 0 || ny / sh.stride >= sh.Ho) continue;
      for (int64_t tx = 0; tx < sh.k; ++tx) {
        const int64_t nx = ix - sh.dil * (tx - sh.r);
        if (nx < 0 || nx % sh.stride != 0 || nx / sh.stride >= sh.Wo) continue;
        const int64_t p = (ny / sh.stride) * sh.Wo + nx / sh.stride;
        acc += static_cast<acc_t>(go[p]) * d.weight(n, c, ty * sh.k + tx, p);
      }
    }
    grad_x[idx] = static_cast<scalar_t>(acc);
  }
};

// grad_spatial_filter element (n, t, p) over N*k*k*Ho*Wo: sums over channels.
template <typename scalar_t>
struct DdfGradSpatial {
  using acc_t = at::opmath_type<scalar_t>;
  DdfData<scalar_t> d;
  const scalar_t* grad_out;
  scalar_t* grad_spatial;
  DLU_HD void operator()(int64_t idx) const {
    const DdfShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nt = idx / sh.oHW, t = nt % sh.kk, n = nt / sh.kk;
    const int64_t o = d.tap(t, p / sh.Wo, p % sh.Wo);
    acc_t acc = 0;
    if (o >= 0) {
      for (int64_t c = 0; c < sh.C; ++c) {
        const acc_t v = static_cast<acc_t>(grad_out[(n * sh.C + c) * sh.oHW + p]) *
                        static_cast<acc_t>(d.x[(n * sh.C + c) * sh.HW + o]);
        acc += sh.mul ? v * static_cast<acc_t>(d.channel_filter[(n * sh.C + c) * sh.kk + t]) : v;
      }
    }
    grad_spatial[idx] = static_cast<scalar_t>(acc);
  }
};

// grad_channel_filter element (n, c, t) over N*C*k*k: a reduction over the Ho*Wo pixels.
template <typename scalar_t>
struct DdfGradChannel {
  using acc_t = at::opmath_type<scalar_t>;
  DdfData<scalar_t> d;
  const scalar_t* grad_out;
  scalar_t* grad_channel;
  int64_t count;  // Ho*Wo
  DLU_HD acc_t term(int64_t e, int64_t p) const {
    const DdfShape& sh = d.sh;
    const int64_t t = e % sh.kk, nc = e / sh.kk, n = nc / sh.C;
    const int64_t o = d.tap(t, p / sh.Wo, p % sh.Wo);
    if (o < 0) return acc_t(0);
    const acc_t v = static_cast<acc_t>(grad_out[nc * sh.oHW + p]) *
                    static_cast<acc_t>(d.x[nc * sh.HW + o]);
    return sh.mul ? v * static_cast<acc_t>(d.spatial_filter[(n * sh.kk + t) * sh.oHW + p]) : v;
  }
  DLU_HD void store(int64_t e, acc_t v) const { grad_channel[e] = static_cast<scalar_t>(v); }
};

// Argument checks run by every backend's entry points (ddf_checks.cpp); returns the geometry.
DdfShape check_ddf(const at::Tensor& x, const at::Tensor& channel_filter,
                   const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
                   const std::string& combine);

template <typename Driver>
at::Tensor ddf_impl(const at::Tensor& x_in, const at::Tensor& channel_in,
                    const at::Tensor& spatial_in, int64_t k, int64_t dilation, int64_t stride,
                    const std::string& combine) {
  const DdfShape sh = check_ddf(x_in, channel_in, spatial_in, k, dilation, stride, combine);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), channel = channel_in.contiguous();
  const at::Tensor spatial = spatial_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.Ho, sh.Wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ddf", [&] {
    const DdfData<scalar_t> d{sh, x.data_ptr<scalar_t>(), channel.data_ptr<scalar_t>(),
                              spatial.data_ptr<scalar_t>()};
    Driver::for_each(out.numel(), DdfForward<scalar_t>{d, out.data_ptr<scalar_t>()});
  });
  return out;
}

template <typename Driver>
std::tuple<at::Tensor, at::Tensor, at::Tensor> ddf_backward_impl(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& channel_in,
    const at::Tensor& spatial_in, int64_t k, int64_t dilation, int64_t stride,
    const std::string& combine) {
  const DdfShape sh = check_ddf(x_in, channel_in, spatial_in, k, dilation, stride, combine);
  check_grad_out(grad_out_in, x_in, sh.C, sh.Ho, sh.Wo);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), channel = channel_in.contiguous();
  const at::Tensor spatial = spatial_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = at::empty_like(x), grad_channel = at::empty_like(channel);
  at::Tensor grad_spatial = at::empty_like(spatial);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ddf_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DdfData<scalar_t> d{sh, x.data_ptr<scalar_t>(), channel.data_ptr<scalar_t>(),
                              spatial.data_ptr<scalar_t>()};
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    Driver::for_each(grad_x.numel(), DdfGradInput<scalar_t>{d, go, grad_x.data_ptr<scalar_t>()});
    Driver::for_each(grad_spatial.numel(),
                     DdfGradSpatial<scalar_t>{d, go, grad_spatial.data_ptr<scalar_t>()});
    Driver::template reduce<acc_t>(
        grad_channel.numel(),
        DdfGradChannel<scalar_t>{d, go, grad_channel.data_ptr<scalar_t>(), sh.oHW});
  });
  return {grad_x, grad_channel, grad_spatial};
}

at::Tensor ddf_cpu(const at::Tensor& x, const at::Tensor& channel_filter,
                   const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
                   c10::string_view combine);
std::tuple<at::Tensor, at::Tensor, at::Tensor> ddf_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& channel_filter,
    const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
    c10::string_view combine);
at::Tensor ddf_cuda(const at::Tensor& x, const at::Tensor& channel_filter,
                    const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
                    c10::string_view combine);
std::tuple<at::Tensor, at::Tensor, at::Tensor> ddf_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& channel_filter,
    const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
    c10::string_view combine);

}  // namespace dlu_mm
