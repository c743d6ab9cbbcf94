// The argument checks of subpixel_sample, run first by every backend's entry points (CPU, CUDA,
// generic); they return the op's geometry (SubpixelShape).
#include "subpixel_sample.h"

namespace dlu_mm {

SubpixelShape check_subpixel_sample(const at::Tensor& x, const at::Tensor& positions,
                                    int64_t groups, int64_t scale_factor) {
  check_grouped_upsampling(x, groups, scale_factor);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t s = scale_factor, ss = s * s;
  check_float_tensor(positions, "positions", 4, x);
  TORCH_CHECK(positions.size(0) == N && positions.size(1) == 2 * groups * ss &&
                  positions.size(2) == H && positions.size(3) == W,
              "positions must have shape (N, 2*groups*scale_factor**2, H, W) = (", N, ", ",
              2 * groups * ss, ", ", H, ", ", W, "), got ", positions.sizes());
  return SubpixelShape{N, C, H, W, groups, C / groups, s, ss, s * H, s * W, H * W,
                       ss * H * W};
}

}  // namespace dlu_mm
