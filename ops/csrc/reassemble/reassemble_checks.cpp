// The argument checks of reassemble / guided_reassemble, run first by every backend's entry
// points (CPU, CUDA, generic); they return the op's geometry (ReassembleShape).
#include "reassemble.h"

namespace dlu_mm {

ReassembleShape check_reassemble(const at::Tensor& x, const at::Tensor& kernels, int64_t k,
                                 int64_t groups, int64_t scale_factor, const char* kernels_name,
                                 bool low_res_kernels) {
  check_grouped_upsampling(x, groups, scale_factor);
  check_odd_kernel(k, "k");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_float_tensor(kernels, kernels_name, 4, x);
  const int64_t kh = low_res_kernels ? H : H * scale_factor;
  const int64_t kw = low_res_kernels ? W : W * scale_factor;
  TORCH_CHECK(kernels.size(0) == N && kernels.size(1) == groups * k * k &&
                  kernels.size(2) == kh && kernels.size(3) == kw,
              kernels_name, " must have shape (N, groups*k*k, ",
              low_res_kernels ? "H, W" : "sH, sW", ") = (", N, ", ", groups * k * k, ", ", kh,
              ", ", kw, "), got ", kernels.sizes());
  return ReassembleShape(N, C, H, W, k, groups, scale_factor);
}

void check_offsets(const at::Tensor& offsets, const at::Tensor& x, const ReassembleShape& sh) {
  check_float_tensor(offsets, "offsets", 4, x);
  TORCH_CHECK(offsets.size(0) == sh.N && offsets.size(1) == 2 * sh.G &&
                  offsets.size(2) == sh.sH && offsets.size(3) == sh.sW,
              "offsets must have shape (N, 2*groups, sH, sW) = (", sh.N, ", ", 2 * sh.G, ", ",
              sh.sH, ", ", sh.sW, "), got ", offsets.sizes());
}

}  // namespace dlu_mm
