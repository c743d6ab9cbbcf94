// CUDA instantiation of subpixel_sample (maths in ops/include/subpixel_sample.h).
#include "dlu_cuda.cuh"
#include "subpixel_sample.h"

namespace dlu_mm {

at::Tensor subpixel_sample_cuda(const at::Tensor& x, const at::Tensor& positions, int64_t groups,
                                int64_t scale_factor) {
  return subpixel_sample_impl<CudaDriver>(x, positions, groups, scale_factor);
}

std::tuple<at::Tensor, at::Tensor> subpixel_sample_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& positions, int64_t groups,
    int64_t scale_factor) {
  return subpixel_sample_backward_impl<CudaDriver>(grad_out, x, positions, groups, scale_factor);
}

}  // namespace dlu_mm
