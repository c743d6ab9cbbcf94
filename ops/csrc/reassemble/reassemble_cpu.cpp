// CPU reassemble / guided_reassemble: row kernels of their own (the maths of
// ops/include/reassemble.h, whose templates the CUDA and generic backends instantiate).
//
// Per task one parent row of one (n, g), i.e. its s output rows (forward, kernel gradient), or
// one block of 8 channel planes (input gradient), with the k*k taps as shifted row-times-row
// products. That keeps the inner loops contiguous and a row of kernels hot in cache across the
// channels of its group. The forward and the kernel gradient add the functors' terms in their
// order (taps, resp. channels, ascending); the input gradient adds them in another order.
// guided_reassemble runs the same row kernels on kernels sampled per row (SampledRows); its
// backward materialises the sampled kernels (see guided_reassemble_backward_cpu) and runs two
// of the header's functors, GuidedGradOffsets and GuidedScatterKernelSpace, through dlu_cpu.h.
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
  acc_t* __restrict__ mid = xu + sh.r * sh.s;
  if (sh.s == 2) {  // the common case, with a compile-time stride the compiler vectorises
    for (int64_t j = 0; j < sh.W; ++j) {
      const acc_t v = static_cast<acc_t>(xr[j]);
      mid[2 * j] = v;
      mid[2 * j + 1] = v;
    }
    return;
  }
  for (int64_t j = 0; j < sh.W; ++j) {
    const acc_t v = static_cast<acc_t>(xr[j]);
    for (int64_t dx = 0; dx < sh.s; ++dx) mid[j * sh.s + dx] = v;
  }
}

// Kernel rows of the row-wise paths: row(ng, io, buf, stride) returns the k*k taps of output
// row io of (n, g) as rows of sW elements `stride` apart. Dense kernels are read in place; DLU's
// sampled kernels are bilinearly sampled ONCE per (n, g, output row) into buf, so the channel
// loop reuses them (the functors re-sample them per output pixel and tile of 16 channels).
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

// Forward, one (n, g, parent row i) per task: its s output rows share the k upsampled input
// rows of each channel, so each is upsampled once per channel and reused s times.
template <typename scalar_t, typename Rows>
void forward_rows(const ReassembleShape& sh, const scalar_t* x, const Rows& rows,
                  scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  using kernel_t = typename Rows::kernel_t;
  const int64_t Wu = sh.sW + 2 * sh.r * sh.s;
  at::parallel_for(0, sh.N * sh.G * sh.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.sW), xu(sh.k * Wu, acc_t(0)), kbuf(sh.s * sh.kk * sh.sW);
    std::vector<const kernel_t*> krows(sh.s);
    for (int64_t prow = begin; prow < end; ++prow) {
      const int64_t i = prow % sh.H, ng = prow / sh.H, g = ng % sh.G, n = ng / sh.G;
      // taps ky in [ky0, ky1) read rows inside the image
      const int64_t ky0 = dlu_max<int64_t>(sh.r - i, 0);
      const int64_t ky1 = dlu_min<int64_t>(sh.k, sh.H - i + sh.r);
      int64_t kstride = 0;
      for (int64_t dy = 0; dy < sh.s; ++dy)
        krows[dy] = rows.row(sh, ng, i * sh.s + dy, kbuf.data() + dy * sh.kk * sh.sW, kstride);
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        const scalar_t* xp = x + (n * sh.C + c) * sh.HW;
        for (int64_t ky = ky0; ky < ky1; ++ky)
          upsample_row(sh, xp + (i + ky - sh.r) * sh.W, xu.data() + ky * Wu);
        for (int64_t dy = 0; dy < sh.s; ++dy) {
          acc_t* __restrict__ a = acc.data();
          std::fill(acc.begin(), acc.end(), acc_t(0));
          for (int64_t ky = ky0; ky < ky1; ++ky) {
            for (int64_t kx = 0; kx < sh.k; ++kx) {
              const kernel_t* __restrict__ kr = krows[dy] + (ky * sh.k + kx) * kstride;
              const acc_t* __restrict__ xs = xu.data() + ky * Wu + kx * sh.s;
              for (int64_t jo = 0; jo < sh.sW; ++jo)
                a[jo] += static_cast<acc_t>(kr[jo]) * xs[jo];
            }
          }
          scalar_t* orow = out + ((n * sh.C + c) * sh.sH + i * sh.s + dy) * sh.sW;
          for (int64_t jo = 0; jo < sh.sW; ++jo) orow[jo] = static_cast<scalar_t>(a[jo]);
        }
      }
    }
  });
}

// grad_x, one (n, block of channels of one group) per task (deterministic: each task owns its
// planes, and every element sums in the same order whatever the blocking). Accumulates at full
// column resolution: output pixel (i', j') of tap (ky, kx) adds K * grad_out to row
// i'/s + ky - r, column j' + kx*s of a zero-padded (H, sW + 2rs) buffer per channel (a
// contiguous, vectorisable row update, the transpose of the forward's), and the s columns of
// each input pixel are summed once at the end. Output rows run outermost so one row of
// kernels stays in cache for the whole channel block instead of being streamed per channel.
// kernels: dense (N, G*k*k, sH, sW) of type kernel_t.
template <typename scalar_t, typename kernel_t>
void grad_input_planes(const ReassembleShape& sh, const scalar_t* grad_out,
                       const kernel_t* kernels, scalar_t* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kBlock = 8;                  // channels per task
  const int64_t Wu = sh.sW + 2 * sh.r * sh.s;    // upsampled-padded row, as upsample_row's
  const int64_t blocks = (sh.Cg + kBlock - 1) / kBlock;  // per group
  at::parallel_for(0, sh.N * sh.G * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(kBlock * sh.H * Wu), gor(sh.sW);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % blocks, ng = task / blocks, g = ng % sh.G, n = ng / sh.G;
      const int64_t c0 = g * sh.Cg + b * kBlock;
      const int64_t nb = dlu_min<int64_t>(kBlock, (g + 1) * sh.Cg - c0);
      std::fill(acc.begin(), acc.begin() + nb * sh.H * Wu, acc_t(0));
      const kernel_t* kplane = kernels + ng * sh.kk * sh.oHW;
      for (int64_t io = 0; io < sh.sH; ++io) {
        const int64_t i = io / sh.s;
        for (int64_t cc = 0; cc < nb; ++cc) {
          const scalar_t* go = grad_out + (n * sh.C + c0 + cc) * sh.oHW + io * sh.sW;
          acc_t* __restrict__ gr = gor.data();
          for (int64_t jo = 0; jo < sh.sW; ++jo) gr[jo] = static_cast<acc_t>(go[jo]);
          acc_t* plane = acc.data() + cc * sh.H * Wu;
          for (int64_t ky = 0; ky < sh.k; ++ky) {
            const int64_t iy = i + ky - sh.r;
            if (iy < 0 || iy >= sh.H) continue;
            for (int64_t kx = 0; kx < sh.k; ++kx) {
              const kernel_t* __restrict__ kr = kplane + (ky * sh.k + kx) * sh.oHW + io * sh.sW;
              acc_t* __restrict__ ar = plane + iy * Wu + kx * sh.s;
              for (int64_t jo = 0; jo < sh.sW; ++jo)
                ar[jo] += static_cast<acc_t>(kr[jo]) * gr[jo];
            }
          }
        }
      }
      for (int64_t cc = 0; cc < nb; ++cc) {
        scalar_t* gx = grad_x + (n * sh.C + c0 + cc) * sh.HW;
        for (int64_t iy = 0; iy < sh.H; ++iy) {
          const acc_t* ar = acc.data() + (cc * sh.H + iy) * Wu + sh.r * sh.s;
          for (int64_t ix = 0; ix < sh.W; ++ix) {
            acc_t v = 0;
            for (int64_t dx = 0; dx < sh.s; ++dx) v += ar[ix * sh.s + dx];
            gx[iy * sh.W + ix] = static_cast<scalar_t>(v);
          }
        }
      }
    }
  });
}

// grad_kernels, one (n, g, parent row i) per task: sums grad_out * X over the group's channels
// for its s output rows, which share each channel's k upsampled input rows.
template <typename scalar_t, typename out_t>
void grad_kernel_rows(const ReassembleShape& sh, const scalar_t* x, const scalar_t* grad_out,
                      out_t* grad_kernels) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Wu = sh.sW + 2 * sh.r * sh.s;
  at::parallel_for(0, sh.N * sh.G * sh.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(sh.s * sh.kk * sh.sW), xu(sh.k * Wu, acc_t(0)), gor(sh.sW);
    for (int64_t prow = begin; prow < end; ++prow) {
      const int64_t i = prow % sh.H, ng = prow / sh.H, g = ng % sh.G, n = ng / sh.G;
      const int64_t ky0 = dlu_max<int64_t>(sh.r - i, 0);
      const int64_t ky1 = dlu_min<int64_t>(sh.k, sh.H - i + sh.r);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        const scalar_t* xp = x + (n * sh.C + c) * sh.HW;
        for (int64_t ky = ky0; ky < ky1; ++ky)
          upsample_row(sh, xp + (i + ky - sh.r) * sh.W, xu.data() + ky * Wu);
        for (int64_t dy = 0; dy < sh.s; ++dy) {
          const scalar_t* go = grad_out + (n * sh.C + c) * sh.oHW + (i * sh.s + dy) * sh.sW;
          acc_t* __restrict__ gr = gor.data();
          for (int64_t jo = 0; jo < sh.sW; ++jo) gr[jo] = static_cast<acc_t>(go[jo]);
          for (int64_t ky = ky0; ky < ky1; ++ky) {
            for (int64_t kx = 0; kx < sh.k; ++kx) {
              acc_t* __restrict__ a = acc.data() + (dy * sh.kk + ky * sh.k + kx) * sh.sW;
              const acc_t* __restrict__ xs = xu.data() + ky * Wu + kx * sh.s;
              for (int64_t jo = 0; jo < sh.sW; ++jo) a[jo] += gr[jo] * xs[jo];
            }
          }
        }
      }
      for (int64_t dy = 0; dy < sh.s; ++dy) {
        out_t* gk = grad_kernels + ng * sh.kk * sh.oHW + (i * sh.s + dy) * sh.sW;
        for (int64_t t = 0; t < sh.kk; ++t)
          for (int64_t jo = 0; jo < sh.sW; ++jo)
            gk[t * sh.oHW + jo] = static_cast<out_t>(acc[(dy * sh.kk + t) * sh.sW + jo]);
      }
    }
  });
}

// d loss / d K (N, G*k*k, sH, sW) in opmath dtype, by rows.
at::Tensor kernel_grads_opmath(const ReassembleShape& sh, const at::Tensor& x,
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

}  // namespace

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

// The CPU backward materialises the sampled kernels (N, G*k*k, sH, sW) in opmath precision
// (G*k*k/C of grad_out's size), sampled once, so grad_x is the dense reassemble's input
// gradient; they are freed before the kernel gradients (same size) are computed, which then go
// through the bilinear sampling to offsets (GuidedGradOffsets, under cpu_for_each) and
// kernel_space (GuidedScatterKernelSpace, one task per kernel-space plane, under
// cpu_for_each_slice).
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
        const at::Tensor kernel_grads = kernel_grads_opmath(sh, x, grad_out);
        const acc_t* kg = kernel_grads.data_ptr<acc_t>();
        cpu_for_each(sh.N * sh.G * sh.oHW, GuidedGradOffsets<scalar_t>{
            sh, rows.kernels, grad_offsets.data_ptr<scalar_t>(), kg});
        cpu_for_each_slice(sh.N * sh.G * sh.kk, sh.oHW,
                           GuidedScatterKernelSpace<scalar_t, PlainAdd>{
                               sh, rows.kernels, grad_ks_acc.data_ptr<acc_t>(), kg});
      });
  return {grad_x, grad_ks_acc.to(x.scalar_type()), grad_offsets};
}

}  // namespace dlu_mm
