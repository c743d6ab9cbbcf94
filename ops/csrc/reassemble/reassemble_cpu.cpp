// CPU instantiation of reassemble / guided_reassemble (maths in ops/include/reassemble.h).
#include "dlu_cpu.h"
#include "reassemble.h"

namespace dlu_mm {

at::Tensor reassemble_cpu(const at::Tensor& x, const at::Tensor& kernels, int64_t k,
                          int64_t groups, int64_t scale_factor) {
  return reassemble_impl<CpuDriver>(x, kernels, k, groups, scale_factor);
}

std::tuple<at::Tensor, at::Tensor> reassemble_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels, int64_t k,
    int64_t groups, int64_t scale_factor) {
  return reassemble_backward_impl<CpuDriver>(grad_out, x, kernels, k, groups, scale_factor);
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
