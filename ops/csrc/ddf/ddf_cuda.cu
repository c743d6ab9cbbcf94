// CUDA instantiation of ddf (maths in ops/include/ddf.h).
#include "ddf.h"
#include "dlu_cuda.cuh"

namespace dlu_mm {

at::Tensor ddf_cuda(const at::Tensor& x, const at::Tensor& channel_filter,
                   const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
                   c10::string_view combine) {
  return ddf_impl<CudaDriver>(x, channel_filter, spatial_filter, k, dilation, stride,
                             std::string(combine));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddf_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& channel_filter,
    const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
    c10::string_view combine) {
  return ddf_backward_impl<CudaDriver>(grad_out, x, channel_filter, spatial_filter, k, dilation,
                                      stride, std::string(combine));
}

}  // namespace dlu_mm
