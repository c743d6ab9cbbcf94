// CPU instantiation of reassemble / guided_reassemble (maths in ops/include/reassemble.h).
//
// Dense reassembly has a row-wise CPU path: per task one output row (forward, kernel gradient)
// or one channel plane (input gradient), with the k*k taps as shifted row-times-row products.
// That keeps the inner loops contiguous and a row of kernels hot in cache across the channels
// of its group; it is the same sum as ReassembleForward & co., in the same tap order.
#include <algorithm>
#include <vector>

#include "dlu_cpu.h"
#include "reassemble.h"

namespace dlu_mm {
namespace {

// Valid low-res columns j of tap column kx: 0 <= j + kx - r < W.
inline void tap_columns(const ReassembleShape& sh, int64_t kx, int64_t& shift, int64_t& j0,
                        int64_t& j1) {
  shift = kx - sh.r;
  j0 = std::max<int64_t>(0, -shift);
  j1 = std::min<int64_t>(sh.W, sh.W - shift);
}

template <typename scalar_t>
void forward_rows(const ReassembleShape& sh, const scalar_t* x, const scalar_t* kernels,
                  scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, sh.N * sh.G * sh.sH, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.sW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, ng = row / sh.sH, g = ng % sh.G, n = ng / sh.G;
      const int64_t i = io / sh.s;
      const scalar_t* krow = kernels + ng * sh.kk * sh.oHW + io * sh.sW;
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const scalar_t* xp = x + (n * sh.C + c) * sh.HW;
        for (int64_t ky = 0; ky < sh.k; ++ky) {
          const int64_t iy = i + ky - sh.r;
          if (iy < 0 || iy >= sh.H) continue;
          const scalar_t* xr = xp + iy * sh.W;
          for (int64_t kx = 0; kx < sh.k; ++kx) {
            const scalar_t* kr = krow + (ky * sh.k + kx) * sh.oHW;
            int64_t shift, j0, j1;
            tap_columns(sh, kx, shift, j0, j1);
            for (int64_t j = j0; j < j1; ++j) {
              const acc_t xv = static_cast<acc_t>(xr[j + shift]);
              for (int64_t dx = 0; dx < sh.s; ++dx)
                acc[j * sh.s + dx] += static_cast<acc_t>(kr[j * sh.s + dx]) * xv;
            }
          }
        }
        scalar_t* orow = out + ((n * sh.C + c) * sh.sH + io) * sh.sW;
        for (int64_t jo = 0; jo < sh.sW; ++jo) orow[jo] = static_cast<scalar_t>(acc[jo]);
      }
    }
  });
}

// grad_x, one (n, c) plane per task: each output pixel adds K * grad_out to its k*k taps, in a
// fixed order inside the task (deterministic, no races between tasks).
template <typename scalar_t>
void grad_input_planes(const ReassembleShape& sh, const scalar_t* grad_out,
                       const scalar_t* kernels, scalar_t* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, sh.N * sh.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.HW);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t c = nc % sh.C, n = nc / sh.C, g = c / sh.Cg;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t io = 0; io < sh.sH; ++io) {
        const int64_t i = io / sh.s;
        const scalar_t* go = grad_out + nc * sh.oHW + io * sh.sW;
        const scalar_t* krow = kernels + (n * sh.G + g) * sh.kk * sh.oHW + io * sh.sW;
        for (int64_t ky = 0; ky < sh.k; ++ky) {
          const int64_t iy = i + ky - sh.r;
          if (iy < 0 || iy >= sh.H) continue;
          acc_t* arow = acc.data() + iy * sh.W;
          for (int64_t kx = 0; kx < sh.k; ++kx) {
            const scalar_t* kr = krow + (ky * sh.k + kx) * sh.oHW;
            int64_t shift, j0, j1;
            tap_columns(sh, kx, shift, j0, j1);
            for (int64_t j = j0; j < j1; ++j) {
              acc_t v = 0;
              for (int64_t dx = 0; dx < sh.s; ++dx)
                v += static_cast<acc_t>(kr[j * sh.s + dx]) * static_cast<acc_t>(go[j * sh.s + dx]);
              arow[j + shift] += v;
            }
          }
        }
      }
      scalar_t* gx = grad_x + nc * sh.HW;
      for (int64_t p = 0; p < sh.HW; ++p) gx[p] = static_cast<scalar_t>(acc[p]);
    }
  });
}

// grad_kernels, one (n, g, output row) per task: sums grad_out * X over the group's channels.
template <typename scalar_t>
void grad_kernel_rows(const ReassembleShape& sh, const scalar_t* x, const scalar_t* grad_out,
                      scalar_t* grad_kernels) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, sh.N * sh.G * sh.sH, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.kk * sh.sW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, ng = row / sh.sH, g = ng % sh.G, n = ng / sh.G;
      const int64_t i = io / sh.s;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        const scalar_t* go = grad_out + (n * sh.C + c) * sh.oHW + io * sh.sW;
        const scalar_t* xp = x + (n * sh.C + c) * sh.HW;
        for (int64_t ky = 0; ky < sh.k; ++ky) {
          const int64_t iy = i + ky - sh.r;
          if (iy < 0 || iy >= sh.H) continue;
          const scalar_t* xr = xp + iy * sh.W;
          for (int64_t kx = 0; kx < sh.k; ++kx) {
            acc_t* arow = acc.data() + (ky * sh.k + kx) * sh.sW;
            int64_t shift, j0, j1;
            tap_columns(sh, kx, shift, j0, j1);
            for (int64_t j = j0; j < j1; ++j) {
              const acc_t xv = static_cast<acc_t>(xr[j + shift]);
              for (int64_t dx = 0; dx < sh.s; ++dx)
                arow[j * sh.s + dx] += static_cast<acc_t>(go[j * sh.s + dx]) * xv;
            }
          }
        }
      }
      scalar_t* gk = grad_kernels + ng * sh.kk * sh.oHW + io * sh.sW;
      for (int64_t t = 0; t < sh.kk; ++t)
        for (int64_t jo = 0; jo < sh.sW; ++jo)
          gk[t * sh.oHW + jo] = static_cast<scalar_t>(acc[t * sh.sW + jo]);
    }
  });
}

}  // namespace

at::Tensor reassemble_cpu(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t k,
                          int64_t groups, int64_t scale_factor) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernels_in, k, groups, scale_factor, "kernels", false);
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "reassemble", [&] {
    forward_rows(sh, x.data_ptr<scalar_t>(), kernels.data_ptr<scalar_t>(),
                 out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> reassemble_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& kernels_in,
    int64_t k, int64_t groups, int64_t scale_factor) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernels_in, k, groups, scale_factor, "kernels", false);
  check_grad_out(grad_out_in, x_in, sh.C, sh.sH, sh.sW);
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = at::empty_like(x), grad_kernels = at::empty_like(kernels);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "reassemble_backward", [&] {
        grad_input_planes(sh, grad_out.data_ptr<scalar_t>(), kernels.data_ptr<scalar_t>(),
                          grad_x.data_ptr<scalar_t>());
        grad_kernel_rows(sh, x.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                         grad_kernels.data_ptr<scalar_t>());
      });
  return {grad_x, grad_kernels};
}

at::Tensor guided_reassemble_cpu(const at::Tensor& x, const at::Tensor& kernel_space,
                                 const at::Tensor& offsets, int64_t k, int64_t groups,
                                 int64_t scale_factor) {
  return guided_reassemble_impl<CpuDriver>(x, kernel_space, offsets, k, groups, scale_factor);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> guided_reassemble_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernel_space,
    const at::Tensor& offsets, int64_t k, int64_t groups, int64_t scale_factor) {
  return guided_reassemble_backward_impl<CpuDriver>(grad_out, x, kernel_space, offsets, k, groups,
                                                    scale_factor);
}

}  // namespace dlu_mm
