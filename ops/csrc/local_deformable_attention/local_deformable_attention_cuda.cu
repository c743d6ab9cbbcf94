// CUDA instantiation of local_deformable_attention (maths in
// ops/include/local_deformable_attention.h).
#include "dlu_cuda.cuh"
#include "local_deformable_attention.h"

namespace dlu_mm {

at::Tensor local_deformable_attention_cuda(const at::Tensor& q, const at::Tensor& key,
                                           const at::Tensor& value, const at::Tensor& offsets,
                                           const c10::optional<at::Tensor>& rpb,
                                           int64_t num_heads, int64_t groups) {
  return local_deformable_attention_impl<CudaDriver>(q, key, value, offsets, rpb, num_heads,
                                                     groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_deformable_attention_backward_cuda(const at::Tensor& grad_out, const at::Tensor& q,
                                         const at::Tensor& key, const at::Tensor& value,
                                         const at::Tensor& offsets,
                                         const c10::optional<at::Tensor>& rpb, int64_t num_heads,
                                         int64_t groups) {
  return local_deformable_attention_backward_impl<CudaDriver>(grad_out, q, key, value, offsets,
                                                              rpb, num_heads, groups);
}

}  // namespace dlu_mm
