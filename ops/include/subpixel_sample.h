// DySample's point sampling (Liu et al., ICCV 2023) as one op: output pixel (i*s + dy, j*s + dx)
// of channel group g bilinearly samples (BORDER padding) the group's channels of x at
//   row    i + positions[n, (G + g)*s*s + dy*s + dx, i, j],
//   column j + positions[n, g*s*s + dy*s + dx, i, j]
// in input pixel-index coordinates (pixel centres at integers), i.e. the positions are relative
// to the parent low-res pixel; DySample's are offset + (d - (s-1)/2)/s. Neither the
// pixel-shuffled positions (N, 2G, sH, sW) nor a sampling grid exist: each output pixel reads its
// two position values from the low-res map directly.
// The sampling is BorderSample (dlu_common.h): border clamp, at integer coordinates the
// right-sided difference as d/dy, d/dx (grid_sample's), and, as in grid_sample, no position
// gradient for a point on or beyond the first / last row or column.
#pragma once

#include "dlu_common.h"

namespace dlu_mm {

struct SubpixelShape {
  int64_t N, C, H, W, G, Cg, s, ss, sH, sW, HW, oHW;
};

template <typename scalar_t>
struct SubpixelData {
  using acc_t = at::opmath_type<scalar_t>;
  SubpixelShape sh;
  const scalar_t* x;          // (N, C, H, W)
  const scalar_t* positions;  // (N, 2*G*s*s, H, W): x (column) positions, then y (row) ones

  // Element offset in `positions` of the column position of output pixel p (of sH*sW) of group
  // g; its row position is G*s*s planes further (y_stride()).
  DLU_HD int64_t position_index(int64_t n, int64_t g, int64_t p) const {
    const int64_t oy = p / sh.sW, ox = p % sh.sW;
    const int64_t sub = (oy % sh.s) * sh.s + ox % sh.s;
    return ((n * 2 * sh.G + g) * sh.ss + sub) * sh.HW + (oy / sh.s) * sh.W + ox / sh.s;
  }
  DLU_HD int64_t y_stride() const { return sh.G * sh.ss * sh.HW; }
  // The sample of a child of low-res pixel (i, j) whose position values are py (row), px (col).
  DLU_HD BorderSample<acc_t> sample_at(int64_t i, int64_t j, scalar_t py, scalar_t px) const {
    const acc_t y = static_cast<acc_t>(i) + static_cast<acc_t>(py);
    const acc_t x_ = static_cast<acc_t>(j) + static_cast<acc_t>(px);
    BorderSample<acc_t> bs(y, x_, sh.H, sh.W);
    // grid_sample's border padding: the gradient flows only strictly inside (a point exactly on
    // the first / last row or column counts as clamped), unlike DLU's inclusive BorderSample
    bs.gy = (y > acc_t(0) && y < static_cast<acc_t>(sh.H - 1)) ? acc_t(1) : acc_t(0);
    bs.gx = (x_ > acc_t(0) && x_ < static_cast<acc_t>(sh.W - 1)) ? acc_t(1) : acc_t(0);
    return bs;
  }
  DLU_HD BorderSample<acc_t> where(int64_t n, int64_t g, int64_t p) const {
    const int64_t at = position_index(n, g, p);
    return sample_at((p / sh.sW) / sh.s, (p % sh.sW) / sh.s, positions[at + y_stride()],
                     positions[at]);
  }
};

// Output element (n, c, p) over N*C*sH*sW.
template <typename scalar_t>
struct SubpixelForward {
  SubpixelData<scalar_t> d;
  scalar_t* out;
  DLU_HD void operator()(int64_t idx) const {
    const SubpixelShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nc = idx / sh.oHW, n = nc / sh.C;
    out[idx] = static_cast<scalar_t>(d.where(n, (nc % sh.C) / sh.Cg, p).sample(d.x + nc * sh.HW));
  }
};

// grad_positions of output pixel p of group g, element (n, g, p) over N*G*sH*sW: the channels'
// d sample / d (y, x) weighted by grad_out, summed over the group's channels in order. Each
// (n, g, p) owns its two position values (no two pixels share one).
template <typename scalar_t>
struct SubpixelGradPositions {
  using acc_t = at::opmath_type<scalar_t>;
  SubpixelData<scalar_t> d;
  const scalar_t* grad_out;
  scalar_t* grad_positions;
  DLU_HD void operator()(int64_t idx) const {
    const SubpixelShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, ng = idx / sh.oHW, g = ng % sh.G, n = ng / sh.G;
    const BorderSample<acc_t> bs = d.where(n, g, p);
    acc_t gy = 0, gx = 0;
    for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
      const int64_t nc = n * sh.C + c;
      const acc_t go = static_cast<acc_t>(grad_out[nc * sh.oHW + p]);
      gy += go * bs.dy(d.x + nc * sh.HW);
      gx += go * bs.dx(d.x + nc * sh.HW);
    }
    const int64_t at = d.position_index(n, g, p);
    grad_positions[at] = static_cast<scalar_t>(gx);
    grad_positions[at + d.y_stride()] = static_cast<scalar_t>(gy);
  }
};

// grad_x scatter, element (n, c, p) over N*C*sH*sW: adds grad_out * corner weight into the four
// corners of plane (n, c) through Add (atomicAdd on CUDA, a compare-and-swap add on generic).
template <typename scalar_t, typename Add>
struct SubpixelScatter {
  using acc_t = at::opmath_type<scalar_t>;
  SubpixelData<scalar_t> d;
  const scalar_t* grad_out;
  acc_t* grad_x;  // (N, C, H, W)
  DLU_HD void operator()(int64_t idx) const {
    const SubpixelShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nc = idx / sh.oHW, n = nc / sh.C;
    const acc_t v = static_cast<acc_t>(grad_out[idx]);
    const BorderSample<acc_t> bs = d.where(n, (nc % sh.C) / sh.Cg, p);
    acc_t* plane = grad_x + nc * sh.HW;
    for (int k = 0; k < 4; ++k) Add::add(plane + bs.offset(k), v * bs.weight(k));
  }
};

// The deterministic grad_x: entry e = 4*p + corner of row (n, g) targets that corner's cell.
template <typename scalar_t>
struct SubpixelCorners {
  SubpixelData<scalar_t> d;
  DLU_HD int64_t operator()(int64_t ng, int64_t e) const {
    return d.where(ng / d.sh.G, ng % d.sh.G, e / 4).offset(static_cast<int>(e % 4));
  }
};

// grad_x element (n, c, cell) over N*C*H*W: the gather form of SubpixelScatter over the cell's
// sorted entries (increasing p, then corner: also the CPU kernel's order).
template <typename scalar_t>
struct SubpixelGather {
  using acc_t = at::opmath_type<scalar_t>;
  SubpixelData<scalar_t> d;
  const scalar_t* grad_out;
  const int64_t* order;   // ScatterIndex of SubpixelCorners
  const int64_t* bounds;
  acc_t* grad_x;
  DLU_HD void operator()(int64_t idx) const {
    const SubpixelShape& sh = d.sh;
    const int64_t cell = idx % sh.HW, nc = idx / sh.HW, n = nc / sh.C, g = (nc % sh.C) / sh.Cg;
    const int64_t entries = 4 * sh.oHW, ng = n * sh.G + g;
    const int64_t* keys = order + ng * entries;
    const int64_t* range = bounds + ng * (sh.HW + 1) + cell;
    acc_t acc = 0;
    for (int64_t i = range[0]; i < range[1]; ++i) {
      const int64_t e = keys[i] % entries, p = e / 4;
      acc += static_cast<acc_t>(grad_out[nc * sh.oHW + p]) *
             d.where(n, g, p).weight(static_cast<int>(e % 4));
    }
    grad_x[idx] = acc;
  }
};

// Argument checks run by every backend's entry points (subpixel_sample_checks.cpp); returns
// the geometry.
SubpixelShape check_subpixel_sample(const at::Tensor& x, const at::Tensor& positions,
                                    int64_t groups, int64_t scale_factor);

template <typename Driver>
at::Tensor subpixel_sample_impl(const at::Tensor& x_in, const at::Tensor& positions_in,
                                int64_t groups, int64_t scale_factor) {
  const SubpixelShape sh = check_subpixel_sample(x_in, positions_in, groups, scale_factor);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), positions = positions_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "subpixel_sample",
                                  [&] {
    const SubpixelData<scalar_t> d{sh, x.data_ptr<scalar_t>(), positions.data_ptr<scalar_t>()};
    Driver::for_each(out.numel(), SubpixelForward<scalar_t>{d, out.data_ptr<scalar_t>()});
  });
  return out;
}

template <typename Driver>
std::tuple<at::Tensor, at::Tensor> subpixel_sample_backward_impl(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& positions_in,
    int64_t groups, int64_t scale_factor) {
  const SubpixelShape sh = check_subpixel_sample(x_in, positions_in, groups, scale_factor);
  check_grad_out(grad_out_in, x_in, sh.C, sh.sH, sh.sW);
  typename Driver::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), positions = positions_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const auto acc_options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor grad_x = at::zeros(x.sizes(), acc_options);
  at::Tensor grad_positions = at::empty_like(positions);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "subpixel_sample_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SubpixelData<scalar_t> d{sh, x.data_ptr<scalar_t>(), positions.data_ptr<scalar_t>()};
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    Driver::for_each(sh.N * sh.G * sh.oHW, SubpixelGradPositions<scalar_t>{
                                               d, go, grad_positions.data_ptr<scalar_t>()});
    if (!at::globalContext().deterministicAlgorithms()) {
      Driver::scatter("subpixel_sample_backward (input gradient)", sh.N * sh.C, sh.oHW,
                      SubpixelScatter<scalar_t, typename Driver::Add>{
                          d, go, grad_x.data_ptr<acc_t>()});
    } else {  // deterministic: one sorted index of the sample corners per (n, g), one gather
      const ScatterIndex index = invert_scatter<Driver>(
          sh.N * sh.G, 4 * sh.oHW, sh.HW, SubpixelCorners<scalar_t>{d}, x.options());
      Driver::for_each(grad_x.numel(), SubpixelGather<scalar_t>{
                                           d, go, index.order.data_ptr<int64_t>(),
                                           index.bounds.data_ptr<int64_t>(),
                                           grad_x.data_ptr<acc_t>()});
    }
  });
  return {grad_x.to(x.scalar_type()), grad_positions};
}

at::Tensor subpixel_sample_cpu(const at::Tensor& x, const at::Tensor& positions, int64_t groups,
                               int64_t scale_factor);
std::tuple<at::Tensor, at::Tensor> subpixel_sample_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& positions, int64_t groups,
    int64_t scale_factor);
at::Tensor subpixel_sample_cuda(const at::Tensor& x, const at::Tensor& positions, int64_t groups,
                                int64_t scale_factor);
std::tuple<at::Tensor, at::Tensor> subpixel_sample_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& positions, int64_t groups,
    int64_t scale_factor);

}  // namespace dlu_mm
