// CPU subpixel_sample: row-wise kernels (the maths of ops/include/subpixel_sample.h, which the
// CUDA and generic backends instantiate).
//
// The functors set up the bilinear sample of an output pixel (two position reads, clamp, floor,
// four weights) once per channel, and grad_positions reads grad_out and x with a plane stride
// per channel. Here a task sets up one output row of one group once (RowSamples, without index
// divisions) and sweeps the group's channels over it in blocks of four (the pixel's corner
// offset and weights loaded once per block; corners o00, o00 + dx1, o00 + dy1, ... with steps
// uniform over the image); the backward computes both gradients in that one sweep when there
// are enough (n, g) tasks for the threads. The sums run in the functors' order (grad_x: output
// pixels in increasing order, corners 0..3; grad_positions: channels in increasing order), so
// the results are the functors' up to floating-point contraction, and do not depend on the
// thread count.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "subpixel_sample.h"

namespace dlu_mm {
namespace {

// The bilinear set-up of the sW pixels of one output row of one group.
template <typename scalar_t>
struct RowSamples {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<int64_t> base;                  // corner (y0, x0) offset in the plane
  std::vector<acc_t> w00, w01, w10, w11;      // corner weights
  std::vector<acc_t> ly, lx, gy, gx;          // fractions and in-range masks (backward)
  explicit RowSamples(int64_t sW)
      : base(sW), w00(sW), w01(sW), w10(sW), w11(sW), ly(sW), lx(sW), gy(sW), gx(sW) {}

  // Row oy of group g: child (dy, dx) of low-res pixel (i, j) is output column j*s + dx; its
  // positions are read as position_index says, without its per-pixel index divisions.
  void locate(const SubpixelData<scalar_t>& d, int64_t n, int64_t g, int64_t oy) {
    const SubpixelShape& sh = d.sh;
    const int64_t i = oy / sh.s, dy = oy % sh.s;
    const scalar_t* px =
        d.positions + ((n * 2 * sh.G + g) * sh.ss + dy * sh.s) * sh.HW + i * sh.W;
    const scalar_t* py = px + d.y_stride();
    for (int64_t j = 0, ox = 0; j < sh.W; ++j)
      for (int64_t dx = 0; dx < sh.s; ++dx, ++ox)
        set(ox, d.sample_at(i, j, py[dx * sh.HW + j], px[dx * sh.HW + j]));
  }
  void set(int64_t ox, const BorderSample<acc_t>& bs) {
    base[ox] = bs.o00;
    w00[ox] = bs.w00();
    w01[ox] = bs.w01();
    w10[ox] = bs.w10();
    w11[ox] = bs.w11();
    ly[ox] = bs.ly;
    lx[ox] = bs.lx;
    gy[ox] = bs.gy;
    gx[ox] = bs.gx;
  }
};

// o01 - o00 and o10 - o00 (BorderSample: x1 = x0 + 1 unless W == 1, likewise for y).
inline int64_t step_x(const SubpixelShape& sh) { return sh.W > 1 ? 1 : 0; }
inline int64_t step_y(const SubpixelShape& sh) { return sh.H > 1 ? sh.W : 0; }

// Channels per inner loop: the row's set-up (corner offset, weights) is loaded once per block
// and the K channels' loads and stores interleave; each channel's arithmetic is unchanged.
constexpr int kBlock = 4;

// out rows of K channels: out[k][ox] = bilinear sample of plane xp[k].
template <int K, typename scalar_t>
inline void forward_block(const RowSamples<scalar_t>& rs, int64_t sW, int64_t dx1, int64_t dy1,
                          const scalar_t* const* xp, scalar_t* const* op) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t d11 = dx1 + dy1;
  for (int64_t ox = 0; ox < sW; ++ox) {
    const int64_t b = rs.base[ox];
    const acc_t w00 = rs.w00[ox], w01 = rs.w01[ox], w10 = rs.w10[ox], w11 = rs.w11[ox];
    for (int k = 0; k < K; ++k)
      op[k][ox] = static_cast<scalar_t>(
          w00 * static_cast<acc_t>(xp[k][b]) + w01 * static_cast<acc_t>(xp[k][b + dx1]) +
          w10 * static_cast<acc_t>(xp[k][b + dy1]) + w11 * static_cast<acc_t>(xp[k][b + d11]));
  }
}

// Forward, one (n, g, output row) per task.
template <typename scalar_t>
void forward_rows(const SubpixelData<scalar_t>& d, scalar_t* out) {
  const SubpixelShape& sh = d.sh;
  const int64_t dx1 = step_x(sh), dy1 = step_y(sh);
  at::parallel_for(0, sh.N * sh.G * sh.sH, 1, [&](int64_t begin, int64_t end) {
    RowSamples<scalar_t> rs(sh.sW);
    const scalar_t* xp[kBlock];
    scalar_t* op[kBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t oy = task % sh.sH, ng = task / sh.sH, g = ng % sh.G, n = ng / sh.G;
      rs.locate(d, n, g, oy);
      for (int64_t c = g * sh.Cg, c1 = (g + 1) * sh.Cg; c < c1;) {
        const int k = static_cast<int>(dlu_min<int64_t>(kBlock, c1 - c));
        for (int i = 0; i < k; ++i) {
          xp[i] = d.x + (n * sh.C + c + i) * sh.HW;
          op[i] = out + (n * sh.C + c + i) * sh.oHW + oy * sh.sW;
        }
        if (k == kBlock)
          forward_block<kBlock>(rs, sh.sW, dx1, dy1, xp, op);
        else
          for (int i = 0; i < k; ++i) forward_block<1>(rs, sh.sW, dx1, dy1, xp + i, op + i);
        c += k;
      }
    }
  });
}

// K channels of one output row: with kPos, adds their d sample / d (y, x) terms into ay / ax
// (channel by channel, in order); with kX, scatters their grad_out into the grad_x planes gp.
template <int K, bool kPos, bool kX, typename scalar_t>
inline void backward_block(const RowSamples<scalar_t>& rs, int64_t sW, int64_t dx1, int64_t dy1,
                           const scalar_t* const* xp, const scalar_t* const* go,
                           at::opmath_type<scalar_t>* const* gp, at::opmath_type<scalar_t>* ay,
                           at::opmath_type<scalar_t>* ax) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t d11 = dx1 + dy1;
  for (int64_t ox = 0; ox < sW; ++ox) {
    const int64_t b = rs.base[ox];
    acc_t sy = 0, sx = 0, ly = 0, lx = 0, w00 = 0, w01 = 0, w10 = 0, w11 = 0;
    if (kPos) {
      sy = ay[ox];
      sx = ax[ox];
      ly = rs.ly[ox];
      lx = rs.lx[ox];
    }
    if (kX) {  // in registers: the scatter's stores could alias the row arrays
      w00 = rs.w00[ox];
      w01 = rs.w01[ox];
      w10 = rs.w10[ox];
      w11 = rs.w11[ox];
    }
    for (int k = 0; k < K; ++k) {
      const acc_t v = static_cast<acc_t>(go[k][ox]);
      if (kPos) {
        const acc_t p00 = static_cast<acc_t>(xp[k][b]), p01 = static_cast<acc_t>(xp[k][b + dx1]);
        const acc_t p10 = static_cast<acc_t>(xp[k][b + dy1]);
        const acc_t p11 = static_cast<acc_t>(xp[k][b + d11]);
        sy += v * ((acc_t(1) - lx) * (p10 - p00) + lx * (p11 - p01));
        sx += v * ((acc_t(1) - ly) * (p01 - p00) + ly * (p11 - p10));
      }
      if (kX) {
        acc_t* plane = gp[k];
        plane[b] += v * w00;
        plane[b + dx1] += v * w01;
        plane[b + dy1] += v * w10;
        plane[b + d11] += v * w11;
      }
    }
    if (kPos) {
      ay[ox] = sy;
      ax[ox] = sx;
    }
  }
}

// One output row's share of the backward for channels [c0, c1) of group g: adds the row's
// d sample / d (y, x) sums into ay / ax (when given) and scatters grad_out into grad_x (when
// given).
template <typename scalar_t>
inline void backward_row(const SubpixelData<scalar_t>& d, const RowSamples<scalar_t>& rs,
                         const scalar_t* grad_out, int64_t n, int64_t oy, int64_t c0, int64_t c1,
                         at::opmath_type<scalar_t>* ay, at::opmath_type<scalar_t>* ax,
                         at::opmath_type<scalar_t>* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  const SubpixelShape& sh = d.sh;
  const int64_t dx1 = step_x(sh), dy1 = step_y(sh);
  const scalar_t* xp[kBlock];
  const scalar_t* go[kBlock];
  acc_t* gp[kBlock];
  for (int64_t c = c0; c < c1;) {
    const int k = static_cast<int>(dlu_min<int64_t>(kBlock, c1 - c));
    for (int i = 0; i < k; ++i) {
      const int64_t nc = n * sh.C + c + i;
      xp[i] = d.x + nc * sh.HW;
      go[i] = grad_out + nc * sh.oHW + oy * sh.sW;
      gp[i] = grad_x != nullptr ? grad_x + nc * sh.HW : nullptr;
    }
    auto run = [&](auto block) {
      constexpr int B = decltype(block)::value;
      for (int i = 0; i < k; i += B) {
        if (ay != nullptr && grad_x != nullptr)
          backward_block<B, true, true>(rs, sh.sW, dx1, dy1, xp + i, go + i, gp + i, ay, ax);
        else if (ay != nullptr)
          backward_block<B, true, false>(rs, sh.sW, dx1, dy1, xp + i, go + i, gp + i, ay, ax);
        else
          backward_block<B, false, true>(rs, sh.sW, dx1, dy1, xp + i, go + i, gp + i, ay, ax);
      }
    };
    if (k == kBlock)
      run(std::integral_constant<int, kBlock>{});
    else
      run(std::integral_constant<int, 1>{});
    c += k;
  }
}

// Writes the finished position gradients of output row oy of (n, g).
template <typename scalar_t>
inline void store_position_grads(const SubpixelData<scalar_t>& d, const RowSamples<scalar_t>& rs,
                                 int64_t n, int64_t g, int64_t oy,
                                 const at::opmath_type<scalar_t>* ay,
                                 const at::opmath_type<scalar_t>* ax, scalar_t* grad_positions) {
  const SubpixelShape& sh = d.sh;
  const int64_t i = oy / sh.s, dy = oy % sh.s;
  scalar_t* gx = grad_positions + ((n * 2 * sh.G + g) * sh.ss + dy * sh.s) * sh.HW + i * sh.W;
  scalar_t* gy = gx + d.y_stride();
  // the functor multiplies every channel's term by the 0/1 mask: the same sum
  for (int64_t j = 0, ox = 0; j < sh.W; ++j)
    for (int64_t dx = 0; dx < sh.s; ++dx, ++ox) {
      gx[dx * sh.HW + j] = static_cast<scalar_t>(rs.gx[ox] * ax[ox]);
      gy[dx * sh.HW + j] = static_cast<scalar_t>(rs.gy[ox] * ay[ox]);
    }
}

}  // namespace

at::Tensor subpixel_sample_cpu(const at::Tensor& x_in, const at::Tensor& positions_in,
                               int64_t groups, int64_t scale_factor) {
  const SubpixelShape sh = check_subpixel_sample(x_in, positions_in, groups, scale_factor);
  const at::Tensor x = x_in.contiguous(), positions = positions_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "subpixel_sample",
                                  [&] {
    const SubpixelData<scalar_t> d{sh, x.data_ptr<scalar_t>(), positions.data_ptr<scalar_t>()};
    forward_rows<scalar_t>(d, out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> subpixel_sample_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& positions_in,
    int64_t groups, int64_t scale_factor) {
  const SubpixelShape sh = check_subpixel_sample(x_in, positions_in, groups, scale_factor);
  check_grad_out(grad_out_in, x_in, sh.C, sh.sH, sh.sW);
  const at::Tensor x = x_in.contiguous(), positions = positions_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  if (grad_out.numel() == 0)  // no output: every gradient is 0
    return {at::zeros_like(x), at::zeros_like(positions)};
  const auto acc_dtype = at::toOpMathType(x.scalar_type());
  at::Tensor grad_x = at::zeros(x.sizes(), x.options().dtype(acc_dtype));
  at::Tensor grad_positions = at::empty_like(positions);
  // Pieces of a group's channels per grad_x task: the whole group (and the position gradients
  // in the same sweep) when there are enough (n, g) tasks for the threads, else a second pass.
  const int64_t ng_tasks = sh.N * sh.G, threads = at::get_num_threads();
  const int64_t pieces =
      dlu_min<int64_t>(sh.Cg, dlu_max<int64_t>(1, (2 * threads + ng_tasks - 1) / ng_tasks));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "subpixel_sample_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SubpixelData<scalar_t> d{sh, x.data_ptr<scalar_t>(), positions.data_ptr<scalar_t>()};
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    scalar_t* gpos = grad_positions.data_ptr<scalar_t>();
    acc_t* gx = grad_x.data_ptr<acc_t>();
    // The position gradients of output row oy of (n, g), over all of g's channels, and with
    // grad_x given, those channels' input-gradient scatter in the same sweep.
    auto position_row = [&](RowSamples<scalar_t>& rs, std::vector<acc_t>& ay,
                            std::vector<acc_t>& ax, int64_t n, int64_t g, int64_t oy,
                            acc_t* grad_x_or_null) {
      rs.locate(d, n, g, oy);
      std::fill(ay.begin(), ay.end(), acc_t(0));
      std::fill(ax.begin(), ax.end(), acc_t(0));
      backward_row<scalar_t>(d, rs, go, n, oy, g * sh.Cg, (g + 1) * sh.Cg, ay.data(), ax.data(),
                             grad_x_or_null);
      store_position_grads(d, rs, n, g, oy, ay.data(), ax.data(), gpos);
    };
    if (pieces == 1) {  // one task per (n, g): both gradients in one sweep
      at::parallel_for(0, ng_tasks, 1, [&](int64_t begin, int64_t end) {
        RowSamples<scalar_t> rs(sh.sW);
        std::vector<acc_t> ay(sh.sW), ax(sh.sW);
        for (int64_t ng = begin; ng < end; ++ng)
          for (int64_t oy = 0; oy < sh.sH; ++oy)
            position_row(rs, ay, ax, ng / sh.G, ng % sh.G, oy, gx);
      });
    } else {
      // position gradients: one (n, g, output row) per task
      at::parallel_for(0, ng_tasks * sh.sH, 1, [&](int64_t begin, int64_t end) {
        RowSamples<scalar_t> rs(sh.sW);
        std::vector<acc_t> ay(sh.sW), ax(sh.sW);
        for (int64_t task = begin; task < end; ++task)
          position_row(rs, ay, ax, task / sh.sH / sh.G, (task / sh.sH) % sh.G, task % sh.sH,
                       nullptr);
      });
      // grad_x: one (n, g, piece of channels) per task, owning those planes
      const int64_t per_piece = (sh.Cg + pieces - 1) / pieces;
      at::parallel_for(0, ng_tasks * pieces, 1, [&](int64_t begin, int64_t end) {
        RowSamples<scalar_t> rs(sh.sW);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t piece = task % pieces, ng = task / pieces, g = ng % sh.G, n = ng / sh.G;
          const int64_t c0 = g * sh.Cg + piece * per_piece;
          const int64_t c1 = dlu_min((g + 1) * sh.Cg, c0 + per_piece);
          if (c0 >= c1) continue;
          for (int64_t oy = 0; oy < sh.sH; ++oy) {
            rs.locate(d, n, g, oy);
            backward_row<scalar_t>(d, rs, go, n, oy, c0, c1, nullptr, nullptr, gx);
          }
        }
      });
    }
  });
  return {grad_x.to(x.scalar_type()), grad_positions};
}

}  // namespace dlu_mm
