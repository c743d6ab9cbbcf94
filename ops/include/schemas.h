// The schema of every dlu_mm op and its backward, written once. register.cpp defines them as
// dlu_mm::<op> / dlu_mm::<op>_backward (the CPU and CUDA kernels), generic.cpp as
// dlu_mm::generic_<op> / dlu_mm::generic_<op>_backward (the 'generic' backend): the same
// arguments and returns under the prefixed name. The Python side keeps the same table in
// dlu_mm/ops/schemas.py, and a test compares it with the registered schemas: change both.
#pragma once

#include <torch/library.h>

#include <string>

namespace dlu_mm {

struct OpSchema {
  const char* name;      // the op's name, without namespace or prefix
  const char* forward;   // arguments and returns of <name>
  const char* backward;  // arguments and returns of <name>_backward
};

inline constexpr OpSchema kOpSchemas[] = {
    {"reassemble",
     "(Tensor x, Tensor kernels, int k, int groups, int scale_factor) -> Tensor",
     "(Tensor grad_out, Tensor x, Tensor kernels, int k, int groups, int scale_factor) "
     "-> (Tensor, Tensor)"},
    {"guided_reassemble",
     "(Tensor x, Tensor kernel_space, Tensor offsets, int k, int groups, int scale_factor) "
     "-> Tensor",
     "(Tensor grad_out, Tensor x, Tensor kernel_space, Tensor offsets, int k, int groups, "
     "int scale_factor) -> (Tensor, Tensor, Tensor)"},
    {"ddf",
     "(Tensor x, Tensor channel_filter, Tensor spatial_filter, int k, int dilation, int stride, "
     "str combine) -> Tensor",
     "(Tensor grad_out, Tensor x, Tensor channel_filter, Tensor spatial_filter, int k, "
     "int dilation, int stride, str combine) -> (Tensor, Tensor, Tensor)"},
    // the backward returns grad_rpb as an empty tensor when rpb is None
    {"local_deformable_attention",
     "(Tensor q, Tensor key, Tensor value, Tensor offsets, Tensor? rpb, int num_heads, "
     "int groups) -> Tensor",
     "(Tensor grad_out, Tensor q, Tensor key, Tensor value, Tensor offsets, Tensor? rpb, "
     "int num_heads, int groups) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"},
    {"subpixel_sample",
     "(Tensor x, Tensor positions, int groups, int scale_factor) -> Tensor",
     "(Tensor grad_out, Tensor x, Tensor positions, int groups, int scale_factor) "
     "-> (Tensor, Tensor)"},
};

// Defines <prefix><op> and <prefix><op>_backward of every op above in library m.
inline void define_op_schemas(torch::Library& m, const std::string& prefix) {
  for (const OpSchema& op : kOpSchemas) {
    m.def((prefix + op.name + op.forward).c_str());
    m.def((prefix + op.name + "_backward" + op.backward).c_str());
  }
}

}  // namespace dlu_mm
