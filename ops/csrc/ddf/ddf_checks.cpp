// The argument checks of ddf, run first by every backend's entry points (CPU, CUDA,
// generic); they return the op's geometry (DdfShape).
#include "ddf.h"

namespace dlu_mm {

DdfShape check_ddf(const at::Tensor& x, const at::Tensor& channel_filter,
                   const at::Tensor& spatial_filter, int64_t k, int64_t dilation, int64_t stride,
                   const std::string& combine) {
  check_input(x, "x");
  check_odd_kernel(k, "k");
  TORCH_CHECK(dilation >= 1, "dilation must be >= 1, got ", dilation);
  TORCH_CHECK(stride >= 1, "stride must be >= 1, got ", stride);
  TORCH_CHECK(combine == "mul" || combine == "add", "combine must be 'mul' or 'add', got '",
              combine, "'");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = H / stride, Wo = W / stride;
  check_float_tensor(channel_filter, "channel_filter", 4, x);
  TORCH_CHECK(channel_filter.size(0) == N && channel_filter.size(1) == C &&
                  channel_filter.size(2) == k && channel_filter.size(3) == k,
              "channel_filter must have shape (N, C, k, k) = (", N, ", ", C, ", ", k, ", ", k,
              "), got ", channel_filter.sizes());
  check_float_tensor(spatial_filter, "spatial_filter", 4, x);
  TORCH_CHECK(spatial_filter.size(0) == N && spatial_filter.size(1) == k * k &&
                  spatial_filter.size(2) == Ho && spatial_filter.size(3) == Wo,
              "spatial_filter must have shape (N, k*k, H//stride, W//stride) = (", N, ", ",
              k * k, ", ", Ho, ", ", Wo, "), got ", spatial_filter.sizes());
  return DdfShape{N, C, H, W, k, dilation, stride, Ho, Wo, H * W, Ho * Wo, k * k, (k - 1) / 2,
                  combine == "mul"};
}

}  // namespace dlu_mm
