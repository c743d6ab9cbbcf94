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

// Nearest-upsampled, zero-padded copy of input row xr: xu[(j + r)*s + dx] = xr[j]. Tap column
// kx of output pixel j' then reads xu[j' + kx*s]: every tap is a contiguous, branch-free
// row-times-row product (vectorisable), the borders come from the zero padding.
template <typename scalar_t, typename acc_t>
inline void upsample_row(const ReassembleShape& sh, const scalar_t* __restrict__ xr,
                         acc_t* __restrict__ xu) {
  acc_t* mid = xu + sh.r * sh.s;
  for (int64_t j = 0; j < sh.W; ++j) {
    const acc_t v = static_cast<acc_t>(xr[j]);
    for (int64_t dx = 0; dx < sh.s; ++dx) mid[j * sh.s + dx] = v;
  }
}

// Kernel rows of the row-wise paths: row(ng, io, buf, stride) returns the k*k taps of output
// row io of (n, g) as rows of sW elements `stride` apart. Dense kernels are read in place; DLU's
// sampled kernels are bilinearly sampled ONCE per (n, g, output row) into buf, so the channel
// loop reuses them instead of re-sampling per channel (the functor path does that per element).
template <typename scalar_t>
struct DenseRows {
  using kernel_t = scalar_t;
  const scalar_t* kernels;
  const kernel_t* row(const ReassembleShape& sh, int64_t ng, int64_t io,
                      at::opmath_type<scalar_t>*, int64_t& stride) const {
    stride = sh.oHW;
    return kernels + ng * sh.kk * sh.oHW + io * sh.sW;
  }
};

template <typename scalar_t>
struct SampledRows {
  using acc_t = at::opmath_type<scalar_t>;
  using kernel_t = acc_t;
  SampledKernels<scalar_t> kernels;
  // Taps t of row io into dst[t * dst_stride + jo].
  void sample(const ReassembleShape& sh, int64_t ng, int64_t io, acc_t* dst,
              int64_t dst_stride) const {
    const int64_t g = ng % sh.G, n = ng / sh.G;
    const scalar_t* ks = kernels.kernel_space + ng * sh.kk * sh.HW;
    for (int64_t jo = 0; jo < sh.sW; ++jo) {
      const BorderSample<acc_t> bs = kernels.where(sh, n, g, io, jo);
      for (int64_t t = 0; t < sh.kk; ++t) dst[t * dst_stride + jo] = bs.sample(ks + t * sh.HW);
    }
  }
  const kernel_t* row(const ReassembleShape& sh, int64_t ng, int64_t io, acc_t* buf,
                      int64_t& stride) const {
    sample(sh, ng, io, buf, sh.sW);
    stride = sh.sW;
    return buf;
  }
};

template <typename scalar_t, typename Rows>
void forward_rows(const ReassembleShape& sh, const scalar_t* x, const Rows& rows,
                  scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  using kernel_t = typename Rows::kernel_t;
  at::parallel_for(0, sh.N * sh.G * sh.sH, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.sW), xu(sh.sW + 2 * sh.r * sh.s, acc_t(0)), kbuf(sh.kk * sh.sW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, ng = row / sh.sH, g = ng % sh.G, n = ng / sh.G;
      const int64_t i = io / sh.s;
      int64_t kstride = 0;
      const kernel_t* krow = rows.row(sh, ng, io, kbuf.data(), kstride);
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        acc_t* __restrict__ a = acc.data();
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t ky = 0; ky < sh.k; ++ky) {
          const int64_t iy = i + ky - sh.r;
          if (iy < 0 || iy >= sh.H) continue;
          upsample_row(sh, x + (n * sh.C + c) * sh.HW + iy * sh.W, xu.data());
          for (int64_t kx = 0; kx < sh.k; ++kx) {
            const kernel_t* __restrict__ kr = krow + (ky * sh.k + kx) * kstride;
            const acc_t* __restrict__ xs = xu.data() + kx * sh.s;
            for (int64_t jo = 0; jo < sh.sW; ++jo) a[jo] += static_cast<acc_t>(kr[jo]) * xs[jo];
          }
        }
        scalar_t* orow = out + ((n * sh.C + c) * sh.sH + io) * sh.sW;
        for (int64_t jo = 0; jo < sh.sW; ++jo) orow[jo] = static_cast<scalar_t>(a[jo]);
      }
    }
  });
}

// grad_x, one (n, c) plane per task (deterministic, no races between tasks). Accumulates at
// full column resolution: output pixel (i', j') of tap (ky, kx) adds K * grad_out to row
// i'/s + ky - r, column j' + kx*s of a zero-padded (H, sW + 2rs) buffer (a contiguous,
// vectorisable row update, the transpose of the forward's), and the s columns of each input
// pixel are summed once at the end. kernels: dense (N, G*k*k, sH, sW) of type kernel_t.
template <typename scalar_t, typename kernel_t>
void grad_input_planes(const ReassembleShape& sh, const scalar_t* grad_out,
                       const kernel_t* kernels, scalar_t* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Wu = sh.sW + 2 * sh.r * sh.s;  // upsampled-padded row, as upsample_row's
  at::parallel_for(0, sh.N * sh.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.H * Wu), gor(sh.sW);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t c = nc % sh.C, n = nc / sh.C, g = c / sh.Cg;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const kernel_t* kplane = kernels + (n * sh.G + g) * sh.kk * sh.oHW;
      for (int64_t io = 0; io < sh.sH; ++io) {
        const int64_t i = io / sh.s;
        const scalar_t* go = grad_out + nc * sh.oHW + io * sh.sW;
        acc_t* __restrict__ gr = gor.data();
        for (int64_t jo = 0; jo < sh.sW; ++jo) gr[jo] = static_cast<acc_t>(go[jo]);
        for (int64_t ky = 0; ky < sh.k; ++ky) {
          const int64_t iy = i + ky - sh.r;
          if (iy < 0 || iy >= sh.H) continue;
          for (int64_t kx = 0; kx < sh.k; ++kx) {
            const kernel_t* __restrict__ kr = kplane + (ky * sh.k + kx) * sh.oHW + io * sh.sW;
            acc_t* __restrict__ ar = acc.data() + iy * Wu + kx * sh.s;
            for (int64_t jo = 0; jo < sh.sW; ++jo) ar[jo] += static_cast<acc_t>(kr[jo]) * gr[jo];
          }
        }
      }
      scalar_t* gx = grad_x + nc * sh.HW;
      for (int64_t iy = 0; iy < sh.H; ++iy) {
        const acc_t* ar = acc.data() + iy * Wu + sh.r * sh.s;
        for (int64_t ix = 0; ix < sh.W; ++ix) {
          acc_t v = 0;
          for (int64_t dx = 0; dx < sh.s; ++dx) v += ar[ix * sh.s + dx];
          gx[iy * sh.W + ix] = static_cast<scalar_t>(v);
        }
      }
    }
  });
}

// grad_kernels, one (n, g, output row) per task: sums grad_out * X over the group's channels.
template <typename scalar_t, typename out_t>
void grad_kernel_rows(const ReassembleShape& sh, const scalar_t* x, const scalar_t* grad_out,
                      out_t* grad_kernels) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, sh.N * sh.G * sh.sH, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.kk * sh.sW), xu(sh.sW + 2 * sh.r * sh.s, acc_t(0)), gor(sh.sW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, ng = row / sh.sH, g = ng % sh.G, n = ng / sh.G;
      const int64_t i = io / sh.s;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        const scalar_t* go = grad_out + (n * sh.C + c) * sh.oHW + io * sh.sW;
        for (int64_t jo = 0; jo < sh.sW; ++jo) gor[jo] = static_cast<acc_t>(go[jo]);
        for (int64_t ky = 0; ky < sh.k; ++ky) {
          const int64_t iy = i + ky - sh.r;
          if (iy < 0 || iy >= sh.H) continue;
          upsample_row(sh, x + (n * sh.C + c) * sh.HW + iy * sh.W, xu.data());
          for (int64_t kx = 0; kx < sh.k; ++kx) {
            acc_t* __restrict__ a = acc.data() + (ky * sh.k + kx) * sh.sW;
            const acc_t* __restrict__ xs = xu.data() + kx * sh.s;
            const acc_t* __restrict__ gr = gor.data();
            for (int64_t jo = 0; jo < sh.sW; ++jo) a[jo] += gr[jo] * xs[jo];
          }
        }
      }
      out_t* gk = grad_kernels + ng * sh.kk * sh.oHW + io * sh.sW;
      for (int64_t t = 0; t < sh.kk; ++t)
        for (int64_t jo = 0; jo < sh.sW; ++jo)
          gk[t * sh.oHW + jo] = static_cast<out_t>(acc[t * sh.sW + jo]);
    }
  });
}

}  // namespace

at::Tensor reassemble_kernel_grads_cpu(const ReassembleShape& sh, const at::Tensor& x,
                                       const at::Tensor& grad_out) {
  const auto acc_dtype = at::toOpMathType(x.scalar_type());
  at::Tensor out = at::empty({sh.N, sh.G * sh.kk, sh.sH, sh.sW}, x.options().dtype(acc_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "reassemble_kernel_grads", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        grad_kernel_rows(sh, x.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                         out.data_ptr<acc_t>());
      });
  return out;
}

template <>
at::Tensor CpuDriver::kernel_grads(const ReassembleShape& sh, const at::Tensor& x,
                                   const at::Tensor& grad_out) {
  return reassemble_kernel_grads_cpu(sh, x, grad_out);
}

at::Tensor reassemble_cpu(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t k,
                          int64_t groups, int64_t scale_factor) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernels_in, k, groups, scale_factor, "kernels", false);
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "reassemble", [&] {
    forward_rows(sh, x.data_ptr<scalar_t>(), DenseRows<scalar_t>{kernels.data_ptr<scalar_t>()},
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

at::Tensor guided_reassemble_cpu(const at::Tensor& x_in, const at::Tensor& kernel_space_in,
                                 const at::Tensor& offsets_in, int64_t k, int64_t groups,
                                 int64_t scale_factor) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernel_space_in, k, groups, scale_factor, "kernel_space", true);
  check_offsets(offsets_in, x_in, sh);
  const at::Tensor x = x_in.contiguous(), kernel_space = kernel_space_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "guided_reassemble", [&] {
        const SampledRows<scalar_t> rows{
            {kernel_space.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>()}};
        forward_rows(sh, x.data_ptr<scalar_t>(), rows, out.data_ptr<scalar_t>());
      });
  return out;
}

// The CPU backward holds the sampled kernels (N, G*k*k, sH, sW) in opmath precision (G*k*k/C of
// grad_out's size), sampled once, so grad_x is the dense reassemble's input gradient; the kernel
// gradients (same size) then go through the bilinear sampling to offsets and kernel_space.
std::tuple<at::Tensor, at::Tensor, at::Tensor> guided_reassemble_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& kernel_space_in,
    const at::Tensor& offsets_in, int64_t k, int64_t groups, int64_t scale_factor) {
  const ReassembleShape sh =
      check_reassemble(x_in, kernel_space_in, k, groups, scale_factor, "kernel_space", true);
  check_offsets(offsets_in, x_in, sh);
  check_grad_out(grad_out_in, x_in, sh.C, sh.sH, sh.sW);
  const at::Tensor x = x_in.contiguous(), kernel_space = kernel_space_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = at::empty_like(x), grad_offsets = at::empty_like(offsets);
  const auto acc_dtype = at::toOpMathType(x.scalar_type());
  at::Tensor grad_ks_acc = at::zeros(kernel_space.sizes(), x.options().dtype(acc_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "guided_reassemble_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const SampledRows<scalar_t> rows{
            {kernel_space.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>()}};
        {
          at::Tensor sampled =
              at::empty({sh.N, sh.G * sh.kk, sh.sH, sh.sW}, x.options().dtype(acc_dtype));
          acc_t* sp = sampled.data_ptr<acc_t>();
          at::parallel_for(0, sh.N * sh.G * sh.sH, 1, [&](int64_t begin, int64_t end) {
            for (int64_t row = begin; row < end; ++row) {
              const int64_t io = row % sh.sH, ng = row / sh.sH;
              rows.sample(sh, ng, io, sp + ng * sh.kk * sh.oHW + io * sh.sW, sh.oHW);
            }
          });
          grad_input_planes(sh, grad_out.data_ptr<scalar_t>(), static_cast<const acc_t*>(sp),
                            grad_x.data_ptr<scalar_t>());
        }  // sampled kernels freed before the kernel gradients are allocated
        const at::Tensor kernel_grads = reassemble_kernel_grads_cpu(sh, x, grad_out);
        const acc_t* kg = kernel_grads.data_ptr<acc_t>();
        cpu_for_each(sh.N * sh.G * sh.oHW, GuidedGradOffsets<scalar_t>{
            sh, x.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), rows.kernels,
            grad_offsets.data_ptr<scalar_t>(), kg});
        cpu_for_each_slice(sh.N * sh.G * sh.kk, sh.oHW,
                           GuidedScatterKernelSpace<scalar_t, PlainAdd>{
                               sh, x.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                               rows.kernels, grad_ks_acc.data_ptr<acc_t>(), kg});
      });
  return {grad_x, grad_ks_acc.to(x.scalar_type()), grad_offsets};
}

}  // namespace dlu_mm
