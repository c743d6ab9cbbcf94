// CPU instantiation of local_deformable_attention (maths in ops/include/local_attention.h).
#include "dlu_cpu.h"
#include "local_attention.h"

namespace dlu_mm {

at::Tensor local_attention_cpu(const at::Tensor& q, const at::Tensor& key,
                               const at::Tensor& value, const at::Tensor& offsets,
                               const c10::optional<at::Tensor>& rpb, int64_t num_heads,
                               int64_t groups) {
  return local_attention_impl<CpuDriver>(q, key, value, offsets, rpb, num_heads, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_attention_backward_cpu(const at::Tensor& grad_out, const at::Tensor& q,
                             const at::Tensor& key, const at::Tensor& value,
                             const at::Tensor& offsets, const c10::optional<at::Tensor>& rpb,
                             int64_t num_heads, int64_t groups) {
  return local_attention_backward_impl<CpuDriver>(grad_out, q, key, value, offsets, rpb,
                                                  num_heads, groups);
}

}  // namespace dlu_mm
