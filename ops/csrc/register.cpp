// Registers the dlu_mm ops (torch.ops.dlu_mm.*, schemas in ops/include/schemas.h) and their
// CPU / CUDA kernels.
// Autograd and fake (meta) kernels are registered from Python in dlu_mm/ops/_native.py.
#include <Python.h>
#include <torch/library.h>

#include "ddf.h"
#include "local_deformable_attention.h"
#include "reassemble.h"
#include "schemas.h"
#include "subpixel_sample.h"

// `import dlu_mm._C_torch<X>_<Y>` loads this library (and so runs the registrations below); the
// module itself is empty. Its name comes from setup.py through torch's TORCH_EXTENSION_NAME.
#define DLU_MM_CONCAT_(a, b) a##b
#define DLU_MM_CONCAT(a, b) DLU_MM_CONCAT_(a, b)
#define DLU_MM_STRING_(a) #a
#define DLU_MM_STRING(a) DLU_MM_STRING_(a)

extern "C" PyMODINIT_FUNC DLU_MM_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                                          DLU_MM_STRING(TORCH_EXTENSION_NAME), nullptr, -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(dlu_mm, m) {
  dlu_mm::define_op_schemas(m, "");
}

TORCH_LIBRARY_IMPL(dlu_mm, CPU, m) {
  m.impl("reassemble", &dlu_mm::reassemble_cpu);
  m.impl("reassemble_backward", &dlu_mm::reassemble_backward_cpu);
  m.impl("guided_reassemble", &dlu_mm::guided_reassemble_cpu);
  m.impl("guided_reassemble_backward", &dlu_mm::guided_reassemble_backward_cpu);
  m.impl("ddf", &dlu_mm::ddf_cpu);
  m.impl("ddf_backward", &dlu_mm::ddf_backward_cpu);
  m.impl("local_deformable_attention", &dlu_mm::local_deformable_attention_cpu);
  m.impl("local_deformable_attention_backward", &dlu_mm::local_deformable_attention_backward_cpu);
  m.impl("subpixel_sample", &dlu_mm::subpixel_sample_cpu);
  m.impl("subpixel_sample_backward", &dlu_mm::subpixel_sample_backward_cpu);
}

#ifdef DLU_MM_WITH_CUDA
TORCH_LIBRARY_IMPL(dlu_mm, CUDA, m) {
  m.impl("reassemble", &dlu_mm::reassemble_cuda);
  m.impl("reassemble_backward", &dlu_mm::reassemble_backward_cuda);
  m.impl("guided_reassemble", &dlu_mm::guided_reassemble_cuda);
  m.impl("guided_reassemble_backward", &dlu_mm::guided_reassemble_backward_cuda);
  m.impl("ddf", &dlu_mm::ddf_cuda);
  m.impl("ddf_backward", &dlu_mm::ddf_backward_cuda);
  m.impl("local_deformable_attention", &dlu_mm::local_deformable_attention_cuda);
  m.impl("local_deformable_attention_backward", &dlu_mm::local_deformable_attention_backward_cuda);
  m.impl("subpixel_sample", &dlu_mm::subpixel_sample_cuda);
  m.impl("subpixel_sample_backward", &dlu_mm::subpixel_sample_backward_cuda);
}
#endif
