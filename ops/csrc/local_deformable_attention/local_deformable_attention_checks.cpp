// The argument checks of local_deformable_attention, run first by every backend's entry points
// (CPU, CUDA, generic); they return the op's geometry (LocalDeformableAttentionShape).
#include <cmath>

#include "local_deformable_attention.h"

namespace dlu_mm {

LocalDeformableAttentionShape check_local_deformable_attention(
    const at::Tensor& q, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& offsets, const c10::optional<at::Tensor>& rpb, int64_t num_heads,
    int64_t groups) {
  check_input(q, "q");
  check_float_tensor(key, "key", 4, q);
  check_float_tensor(value, "value", 4, q);
  check_float_tensor(offsets, "offsets", 4, q);
  TORCH_CHECK(num_heads >= 1, "num_heads must be >= 1, got ", num_heads);
  TORCH_CHECK(groups >= 1, "groups must be >= 1, got ", groups);
  const int64_t N = q.size(0), D = q.size(1), sH = q.size(2), sW = q.size(3);
  const int64_t C = value.size(1), H = key.size(2), W = key.size(3);
  TORCH_CHECK(key.size(0) == N && key.size(1) == D, "key must have shape (N, D, H, W) with N=",
              N, ", D=", D, ", got ", key.sizes());
  TORCH_CHECK(value.size(0) == N && value.size(2) == H && value.size(3) == W,
              "value must have shape (N, C, H, W) = (", N, ", C, ", H, ", ", W, "), got ",
              value.sizes());
  TORCH_CHECK(D % groups == 0 && C % groups == 0 && D % num_heads == 0 && C % num_heads == 0,
              "q/key channels D=", D, " and value channels C=", C,
              " must be divisible by groups=", groups, " and num_heads=", num_heads);
  TORCH_CHECK(offsets.size(0) == N && offsets.size(1) > 0 && offsets.size(1) % (2 * groups) == 0 &&
                  offsets.size(2) == sH && offsets.size(3) == sW,
              "offsets must have shape (N, groups*2*P, sH, sW) with N=", N, ", groups=", groups,
              ", P>=1, (sH, sW)=(", sH, ", ", sW, "), got ", offsets.sizes());
  const int64_t P = offsets.size(1) / (2 * groups);
  TORCH_CHECK(P <= kMaxPoints, "offsets hold P=", P, " points per group; the native kernel "
              "supports at most ", kMaxPoints);
  if (rpb.has_value()) {
    check_float_tensor(*rpb, "rpb", 3, q);
    TORCH_CHECK(rpb->size(0) == num_heads && rpb->size(1) == P && rpb->size(2) == D / num_heads,
                "rpb must have shape (num_heads, P, D/num_heads) = (", num_heads, ", ", P, ", ",
                D / num_heads, "), got ", rpb->sizes());
  }
  const double fy = sH > 1 ? static_cast<double>(H - 1) / static_cast<double>(sH - 1) : 0.0;
  const double fx = sW > 1 ? static_cast<double>(W - 1) / static_cast<double>(sW - 1) : 0.0;
  return LocalDeformableAttentionShape{N, D, C, H, W, sH, sW, H * W, sH * sW, P, num_heads,
                                       groups, D / num_heads, C / num_heads, D / groups,
                                       C / groups,
                                       1.0 / std::sqrt(static_cast<double>(D / num_heads)), fy,
                                       fx};
}

}  // namespace dlu_mm
