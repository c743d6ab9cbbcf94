// The 'generic' verification backend (dlu_mm.ops.set_backend('generic')): the op templates of
// ops/include/ instantiated with GenericCpuDriver (dlu_generic.h), i.e. exactly the functors and
// index spaces the CUDA kernels run, executed on the CPU, so the CUDA path's arithmetic is
// tested on every stack, GPU or not. The fast CPU kernels of ops/csrc/<op>/*_cpu.cpp are row
// kernels of their own (they share the shapes, checks and bilinear set-up, and only
// guided_reassemble's backward calls two of these functors). Registered as
// torch.ops.dlu_mm.generic_<op> (+ _backward), CPU only.
#include <torch/library.h>

#include "ddf.h"
#include "dlu_generic.h"
#include "local_deformable_attention.h"
#include "reassemble.h"
#include "schemas.h"
#include "subpixel_sample.h"

namespace dlu_mm {
namespace {

using Driver = GenericCpuDriver;

at::Tensor generic_reassemble(const at::Tensor& x, const at::Tensor& kernels, int64_t k,
                              int64_t groups, int64_t scale_factor) {
  return reassemble_impl<Driver>(x, kernels, k, groups, scale_factor);
}

std::tuple<at::Tensor, at::Tensor> generic_reassemble_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels, int64_t k,
    int64_t groups, int64_t scale_factor) {
  return reassemble_backward_impl<Driver>(grad_out, x, kernels, k, groups, scale_factor);
}

at::Tensor generic_guided_reassemble(const at::Tensor& x, const at::Tensor& kernel_space,
                                     const at::Tensor& offsets, int64_t k, int64_t groups,
                                     int64_t scale_factor) {
  return guided_reassemble_impl<Driver>(x, kernel_space, offsets, k, groups, scale_factor);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> generic_guided_reassemble_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernel_space,
    const at::Tensor& offsets, int64_t k, int64_t groups, int64_t scale_factor) {
  return guided_reassemble_backward_impl<Driver>(grad_out, x, kernel_space, offsets, k, groups,
                                                 scale_factor);
}

at::Tensor generic_ddf(const at::Tensor& x, const at::Tensor& channel_filter,
                       const at::Tensor& spatial_filter, int64_t k, int64_t dilation,
                       int64_t stride, c10::string_view combine) {
  return ddf_impl<Driver>(x, channel_filter, spatial_filter, k, dilation, stride,
                          std::string(combine));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> generic_ddf_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& channel_filter,
    const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
    c10::string_view combine) {
  return ddf_backward_impl<Driver>(grad_out, x, channel_filter, spatial_filter, k, dilation,
                                   stride, std::string(combine));
}

at::Tensor generic_local_deformable_attention(const at::Tensor& q, const at::Tensor& key,
                                              const at::Tensor& value, const at::Tensor& offsets,
                                              const c10::optional<at::Tensor>& rpb,
                                              int64_t num_heads, int64_t groups) {
  return local_deformable_attention_impl<Driver>(q, key, value, offsets, rpb, num_heads, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
generic_local_deformable_attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                            const at::Tensor& key, const at::Tensor& value,
                                            const at::Tensor& offsets,
                                            const c10::optional<at::Tensor>& rpb,
                                            int64_t num_heads, int64_t groups) {
  return local_deformable_attention_backward_impl<Driver>(grad_out, q, key, value, offsets, rpb,
                                                          num_heads, groups);
}

at::Tensor generic_subpixel_sample(const at::Tensor& x, const at::Tensor& positions,
                                  int64_t groups, int64_t scale_factor) {
  return subpixel_sample_impl<Driver>(x, positions, groups, scale_factor);
}

std::tuple<at::Tensor, at::Tensor> generic_subpixel_sample_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& positions, int64_t groups,
    int64_t scale_factor) {
  return subpixel_sample_backward_impl<Driver>(grad_out, x, positions, groups, scale_factor);
}

}  // namespace
}  // namespace dlu_mm

// The schemas of register.cpp's ops (schemas.h) under the names generic_<op>.
TORCH_LIBRARY_FRAGMENT(dlu_mm, m) {
  dlu_mm::define_op_schemas(m, "generic_");
}

TORCH_LIBRARY_IMPL(dlu_mm, CPU, m) {
  m.impl("generic_reassemble", &dlu_mm::generic_reassemble);
  m.impl("generic_reassemble_backward", &dlu_mm::generic_reassemble_backward);
  m.impl("generic_guided_reassemble", &dlu_mm::generic_guided_reassemble);
  m.impl("generic_guided_reassemble_backward", &dlu_mm::generic_guided_reassemble_backward);
  m.impl("generic_ddf", &dlu_mm::generic_ddf);
  m.impl("generic_ddf_backward", &dlu_mm::generic_ddf_backward);
  m.impl("generic_local_deformable_attention", &dlu_mm::generic_local_deformable_attention);
  m.impl("generic_local_deformable_attention_backward",
         &dlu_mm::generic_local_deformable_attention_backward);
  m.impl("generic_subpixel_sample", &dlu_mm::generic_subpixel_sample);
  m.impl("generic_subpixel_sample_backward", &dlu_mm::generic_subpixel_sample_backward);
}
