// LDA-AQU local deformable attention (Du et al., ACM MM 2024), fused: per output pixel and head,
// bilinearly sample (zero padding) the keys at the P points of each group, score them against
// the query (+ relative position bias), softmax over the points and accumulate the sampled
// values. Neither the sampled keys (N, D, P, sH, sW) nor values (N, C, P, sH, sW) exist.
//
// Point m of group g at output pixel (i', j') sits at input (y, x) = ((i' + dy) * (H-1)/(sH-1),
// (j' + dx) * (W-1)/(sW-1)) (factor 0 for 1-pixel outputs), (dy, dx) = offsets[n, g*2P + 2m
// (+1), i', j']. Head h covers channels [h*D/nh, (h+1)*D/nh) of q/key and [h*C/nh, ...) of
// value; channel d of key belongs to group d / (D/G), channel c of value to group c / (C/G).
#pragma once

#include "dlu_common.h"

namespace dlu_mm {

// Per-pixel point arrays live in registers / local memory: P is bounded (k_u <= 5 -> P <= 25).
constexpr int64_t kMaxPoints = 32;

struct LocalDeformableAttentionShape {
  int64_t N, D, C, H, W, sH, sW, HW, oHW, P, nh, G, Dh, Ch, Dg, Cg;
  double scale, fy, fx;
};

template <typename scalar_t>
struct LocalDeformableAttentionData {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionShape sh;
  const scalar_t* q;        // (N, D, sH, sW)
  const scalar_t* key;      // (N, D, H, W)
  const scalar_t* value;    // (N, C, H, W)
  const scalar_t* offsets;  // (N, G*2P, sH, sW)
  const scalar_t* rpb;      // (nh, P, D/nh) or nullptr

  DLU_HD ZeroSample<acc_t> where(int64_t n, int64_t g, int64_t m, int64_t p) const {
    const scalar_t* off = offsets + ((n * sh.G + g) * 2 * sh.P + 2 * m) * sh.oHW + p;
    const acc_t y = (static_cast<acc_t>(p / sh.sW) + static_cast<acc_t>(off[0])) *
                    static_cast<acc_t>(sh.fy);
    const acc_t x = (static_cast<acc_t>(p % sh.sW) + static_cast<acc_t>(off[sh.oHW])) *
                    static_cast<acc_t>(sh.fx);
    return ZeroSample<acc_t>(y, x, sh.H, sh.W);
  }
  DLU_HD void locate(int64_t n, int64_t g, int64_t p, ZeroSample<acc_t>* zs) const {
    for (int64_t m = 0; m < sh.P; ++m) zs[m] = where(n, g, m, p);
  }
  DLU_HD acc_t bias(int64_t h, int64_t m, int64_t d) const {
    return rpb ? static_cast<acc_t>(rpb[(h * sh.P + m) * sh.Dh + d - h * sh.Dh]) : acc_t(0);
  }
  DLU_HD acc_t q_at(int64_t n, int64_t d, int64_t p) const {
    return static_cast<acc_t>(q[(n * sh.D + d) * sh.oHW + p]);
  }
  // Attention of head h at pixel p: a[m] = softmax_m(scale * sum_d q[d] (K_s[d, m] + rpb)).
  DLU_HD void attention(int64_t n, int64_t h, int64_t p, acc_t* a, ZeroSample<acc_t>* zs) const {
    for (int64_t m = 0; m < sh.P; ++m) a[m] = 0;
    const int64_t d0 = h * sh.Dh, d1 = d0 + sh.Dh;
    for (int64_t g = d0 / sh.Dg; g * sh.Dg < d1; ++g) {  // the groups this head spans
      locate(n, g, p, zs);
      for (int64_t d = dlu_max(d0, g * sh.Dg); d < dlu_min(d1, (g + 1) * sh.Dg); ++d) {
        const acc_t qd = q_at(n, d, p);
        const scalar_t* plane = key + (n * sh.D + d) * sh.HW;
        for (int64_t m = 0; m < sh.P; ++m) a[m] += qd * (zs[m].sample(plane) + bias(h, m, d));
      }
    }
    acc_t top = a[0];
    for (int64_t m = 1; m < sh.P; ++m) top = dlu_max(top, a[m]);
    const acc_t scale = static_cast<acc_t>(sh.scale);
    acc_t total = 0;
    for (int64_t m = 0; m < sh.P; ++m) {
      a[m] = dlu_exp((a[m] - top) * scale);
      total += a[m];
    }
    for (int64_t m = 0; m < sh.P; ++m) a[m] /= total;
  }
};

// Output element (n, h, p) over N*nh*sH*sW: writes the C/nh channels of head h at pixel p.
template <typename scalar_t>
struct LocalDeformableAttentionForward {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionData<scalar_t> d;
  scalar_t* out;
  DLU_HD void operator()(int64_t idx) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nh_ = idx / sh.oHW, h = nh_ % sh.nh, n = nh_ / sh.nh;
    acc_t a[kMaxPoints];
    ZeroSample<acc_t> zs[kMaxPoints];
    d.attention(n, h, p, a, zs);
    const int64_t c0 = h * sh.Ch, c1 = c0 + sh.Ch;
    for (int64_t g = c0 / sh.Cg; g * sh.Cg < c1; ++g) {
      d.locate(n, g, p, zs);
      for (int64_t c = dlu_max(c0, g * sh.Cg); c < dlu_min(c1, (g + 1) * sh.Cg); ++c) {
        const scalar_t* plane = d.value + (n * sh.C + c) * sh.HW;
        acc_t acc = 0;
        for (int64_t m = 0; m < sh.P; ++m) acc += a[m] * zs[m].sample(plane);
        out[(n * sh.C + c) * sh.oHW + p] = static_cast<scalar_t>(acc);
      }
    }
  }
};

// Backward pass 1, element (n, h, p): recomputes the attention, stores it and the logit
// gradient (N, nh, P, sH, sW) in acc_t buffers (P values per pixel and head, not P*C), and
// writes grad_q of head h at p.
template <typename scalar_t>
struct LocalDeformableAttentionBackwardAttention {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionData<scalar_t> d;
  const scalar_t* grad_out;
  acc_t* attn;       // (N, nh, P, sH, sW)
  acc_t* grad_logit; // (N, nh, P, sH, sW), already including the 1/sqrt(D/nh) scale
  scalar_t* grad_q;
  DLU_HD void operator()(int64_t idx) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nh_ = idx / sh.oHW, h = nh_ % sh.nh, n = nh_ / sh.nh;
    acc_t a[kMaxPoints], ga[kMaxPoints];
    ZeroSample<acc_t> zs[kMaxPoints];
    d.attention(n, h, p, a, zs);
    for (int64_t m = 0; m < sh.P; ++m) ga[m] = 0;
    const int64_t c0 = h * sh.Ch, c1 = c0 + sh.Ch;
    for (int64_t g = c0 / sh.Cg; g * sh.Cg < c1; ++g) {  // ga[m] = sum_c grad_out[c] V_s[c, m]
      d.locate(n, g, p, zs);
      for (int64_t c = dlu_max(c0, g * sh.Cg); c < dlu_min(c1, (g + 1) * sh.Cg); ++c) {
        const acc_t go = static_cast<acc_t>(grad_out[(n * sh.C + c) * sh.oHW + p]);
        const scalar_t* plane = d.value + (n * sh.C + c) * sh.HW;
        for (int64_t m = 0; m < sh.P; ++m) ga[m] += go * zs[m].sample(plane);
      }
    }
    acc_t dot = 0;
    for (int64_t m = 0; m < sh.P; ++m) dot += a[m] * ga[m];
    const acc_t scale = static_cast<acc_t>(sh.scale);
    for (int64_t m = 0; m < sh.P; ++m) {  // softmax backward, times the logit scale
      ga[m] = a[m] * (ga[m] - dot) * scale;
      attn[(nh_ * sh.P + m) * sh.oHW + p] = a[m];
      grad_logit[(nh_ * sh.P + m) * sh.oHW + p] = ga[m];
    }
    const int64_t d0 = h * sh.Dh, d1 = d0 + sh.Dh;
    for (int64_t g = d0 / sh.Dg; g * sh.Dg < d1; ++g) {
      d.locate(n, g, p, zs);
      for (int64_t dd = dlu_max(d0, g * sh.Dg); dd < dlu_min(d1, (g + 1) * sh.Dg); ++dd) {
        const scalar_t* plane = d.key + (n * sh.D + dd) * sh.HW;
        acc_t acc = 0;
        for (int64_t m = 0; m < sh.P; ++m) acc += ga[m] * (zs[m].sample(plane) + d.bias(h, m, dd));
        grad_q[(n * sh.D + dd) * sh.oHW + p] = static_cast<scalar_t>(acc);
      }
    }
  }
};

// grad_offsets element (n, g, p) over N*G*sH*sW: chain rule through both bilinear samples.
template <typename scalar_t>
struct LocalDeformableAttentionGradOffsets {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionData<scalar_t> d;
  const scalar_t* grad_out;
  const acc_t* attn;
  const acc_t* grad_logit;
  scalar_t* grad_offsets;
  DLU_HD void operator()(int64_t idx) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, ng = idx / sh.oHW, g = ng % sh.G, n = ng / sh.G;
    for (int64_t m = 0; m < sh.P; ++m) {
      const ZeroSample<acc_t> zs = d.where(n, g, m, p);
      acc_t gy = 0, gx = 0, vy, vx;
      for (int64_t dd = g * sh.Dg; dd < (g + 1) * sh.Dg; ++dd) {
        const acc_t coef = grad_logit[((n * sh.nh + dd / sh.Dh) * sh.P + m) * sh.oHW + p] *
                           d.q_at(n, dd, p);
        zs.grad(d.key + (n * sh.D + dd) * sh.HW, vy, vx);
        gy += coef * vy;
        gx += coef * vx;
      }
      for (int64_t c = g * sh.Cg; c < (g + 1) * sh.Cg; ++c) {
        const acc_t coef = attn[((n * sh.nh + c / sh.Ch) * sh.P + m) * sh.oHW + p] *
                           static_cast<acc_t>(grad_out[(n * sh.C + c) * sh.oHW + p]);
        zs.grad(d.value + (n * sh.C + c) * sh.HW, vy, vx);
        gy += coef * vy;
        gx += coef * vx;
      }
      scalar_t* out = grad_offsets + (ng * 2 * sh.P + 2 * m) * sh.oHW + p;
      out[0] = static_cast<scalar_t>(gy * static_cast<acc_t>(sh.fy));
      out[sh.oHW] = static_cast<scalar_t>(gx * static_cast<acc_t>(sh.fx));
    }
  }
};

// Scatter into grad_key (weights = grad_logit, factor = q) or grad_value (weights = attn,
// factor = grad_out); element (n, channel, p) writes only into plane (n, channel).
template <typename scalar_t, typename Add>
struct LocalDeformableAttentionScatter {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionData<scalar_t> d;
  const acc_t* weights;     // (N, nh, P, sH, sW)
  const scalar_t* factor;   // (N, channels, sH, sW)
  int64_t channels, per_group, per_head;
  acc_t* grad;              // (N, channels, H, W)
  DLU_HD void operator()(int64_t idx) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t p = idx % sh.oHW, nc = idx / sh.oHW, c = nc % channels, n = nc / channels;
    const int64_t g = c / per_group, h = c / per_head;
    const acc_t f = static_cast<acc_t>(factor[idx]);
    if (f == acc_t(0)) return;
    for (int64_t m = 0; m < sh.P; ++m) {
      const acc_t v = weights[((n * sh.nh + h) * sh.P + m) * sh.oHW + p] * f;
      d.where(n, g, m, p).template scatter<Add>(grad + nc * sh.HW, v);
    }
  }
};

// The deterministic key / value gradients. Entry e = 4 * (m * sH*sW + p) + corner of row (n, g)
// targets that corner's cell of the low-res planes (H*W = "none" for a corner outside); all
// channels of group g share the locations.
template <typename scalar_t>
struct LocalDeformableAttentionCorners {
  LocalDeformableAttentionData<scalar_t> d;
  DLU_HD int64_t operator()(int64_t ng, int64_t e) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t mp = e / 4, corner = e % 4;
    const auto zs = d.where(ng / sh.G, ng % sh.G, mp / sh.oHW, mp % sh.oHW);
    return ((zs.valid >> corner) & 1) ? zs.o[corner] : sh.HW;
  }
};

// grad_key / grad_value element (n, channel, y, x) over N*channels*H*W: the gather form of
// LocalDeformableAttentionScatter, summing the same products over the cell's sorted entries.
template <typename scalar_t>
struct LocalDeformableAttentionGather {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionData<scalar_t> d;
  const acc_t* weights;     // (N, nh, P, sH, sW)
  const scalar_t* factor;   // (N, channels, sH, sW)
  int64_t channels, per_group, per_head;
  const int64_t* order;     // ScatterIndex of LocalDeformableAttentionCorners
  const int64_t* bounds;
  acc_t* grad;              // (N, channels, H, W)
  DLU_HD void operator()(int64_t idx) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t cell = idx % sh.HW, nc = idx / sh.HW, c = nc % channels, n = nc / channels;
    const int64_t g = c / per_group, h = c / per_head, ng = n * sh.G + g;
    const int64_t entries = 4 * sh.P * sh.oHW;
    const int64_t* keys = order + ng * entries;
    const int64_t* range = bounds + ng * (sh.HW + 1) + cell;
    acc_t acc = 0;
    for (int64_t i = range[0]; i < range[1]; ++i) {
      const int64_t e = keys[i] % entries, mp = e / 4, m = mp / sh.oHW, p = mp % sh.oHW;
      const acc_t f = static_cast<acc_t>(factor[nc * sh.oHW + p]);
      if (f == acc_t(0)) continue;
      const acc_t v = weights[((n * sh.nh + h) * sh.P + m) * sh.oHW + p] * f;
      acc += v * d.where(n, g, m, p).w[e % 4];
    }
    grad[idx] = acc;
  }
};

// grad_rpb element (h, m, dd) over nh*P*Dh: a reduction over all N*sH*sW pixels.
template <typename scalar_t>
struct LocalDeformableAttentionGradRpb {
  using acc_t = at::opmath_type<scalar_t>;
  LocalDeformableAttentionData<scalar_t> d;
  const acc_t* grad_logit;
  scalar_t* grad_rpb;
  int64_t count;  // N*sH*sW
  DLU_HD acc_t term(int64_t e, int64_t i) const {
    const LocalDeformableAttentionShape& sh = d.sh;
    const int64_t dd = e % sh.Dh, hm = e / sh.Dh, m = hm % sh.P, h = hm / sh.P;
    const int64_t p = i % sh.oHW, n = i / sh.oHW;
    return grad_logit[((n * sh.nh + h) * sh.P + m) * sh.oHW + p] * d.q_at(n, h * sh.Dh + dd, p);
  }
  DLU_HD void store(int64_t e, acc_t v) const { grad_rpb[e] = static_cast<scalar_t>(v); }
};

// Argument checks run by every backend's entry points (local_deformable_attention_checks.cpp);
// returns the geometry.
LocalDeformableAttentionShape check_local_deformable_attention(
    const at::Tensor& q, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& offsets, const c10::optional<at::Tensor>& rpb, int64_t num_heads,
    int64_t groups);

template <typename Driver>
at::Tensor local_deformable_attention_impl(const at::Tensor& q_in, const at::Tensor& key_in,
                                           const at::Tensor& value_in,
                                           const at::Tensor& offsets_in,
                                           const c10::optional<at::Tensor>& rpb_in,
                                           int64_t num_heads, int64_t groups) {
  const LocalDeformableAttentionShape sh = check_local_deformable_attention(
      q_in, key_in, value_in, offsets_in, rpb_in, num_heads, groups);
  typename Driver::Guard guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), key = key_in.contiguous();
  const at::Tensor value = value_in.contiguous(), offsets = offsets_in.contiguous();
  const at::Tensor rpb = rpb_in.has_value() ? rpb_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, q.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_deformable_attention", [&] {
        const LocalDeformableAttentionData<scalar_t> d{
            sh, q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(),
            offsets.data_ptr<scalar_t>(), rpb.defined() ? rpb.data_ptr<scalar_t>() : nullptr};
        Driver::for_each(sh.N * sh.nh * sh.oHW,
                         LocalDeformableAttentionForward<scalar_t>{d, out.data_ptr<scalar_t>()});
      });
  return out;
}

template <typename Driver>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_deformable_attention_backward_impl(const at::Tensor& grad_out_in, const at::Tensor& q_in,
                                         const at::Tensor& key_in, const at::Tensor& value_in,
                                         const at::Tensor& offsets_in,
                                         const c10::optional<at::Tensor>& rpb_in,
                                         int64_t num_heads, int64_t groups) {
  const LocalDeformableAttentionShape sh = check_local_deformable_attention(
      q_in, key_in, value_in, offsets_in, rpb_in, num_heads, groups);
  check_grad_out(grad_out_in, q_in, sh.C, sh.sH, sh.sW);
  typename Driver::Guard guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), key = key_in.contiguous();
  const at::Tensor value = value_in.contiguous(), offsets = offsets_in.contiguous();
  const at::Tensor rpb = rpb_in.has_value() ? rpb_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const auto acc_options = q.options().dtype(at::toOpMathType(q.scalar_type()));
  at::Tensor attn = at::empty({sh.N, sh.nh, sh.P, sh.sH, sh.sW}, acc_options);
  at::Tensor grad_logit = at::empty_like(attn);
  at::Tensor grad_key = at::zeros(key.sizes(), acc_options);
  at::Tensor grad_value = at::zeros(value.sizes(), acc_options);
  at::Tensor grad_q = at::empty_like(q), grad_offsets = at::empty_like(offsets);
  at::Tensor grad_rpb = rpb.defined() ? at::empty_like(rpb) : at::empty({0}, q.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_deformable_attention_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        using Gather = LocalDeformableAttentionGather<scalar_t>;
        const LocalDeformableAttentionData<scalar_t> d{
            sh, q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(),
            offsets.data_ptr<scalar_t>(), rpb.defined() ? rpb.data_ptr<scalar_t>() : nullptr};
        const scalar_t* go = grad_out.data_ptr<scalar_t>();
        acc_t* a = attn.data_ptr<acc_t>();
        acc_t* gl = grad_logit.data_ptr<acc_t>();
        Driver::for_each(sh.N * sh.nh * sh.oHW,
                         LocalDeformableAttentionBackwardAttention<scalar_t>{
                             d, go, a, gl, grad_q.data_ptr<scalar_t>()});
        Driver::for_each(sh.N * sh.G * sh.oHW,
                         LocalDeformableAttentionGradOffsets<scalar_t>{
                             d, go, a, gl, grad_offsets.data_ptr<scalar_t>()});
        if (!at::globalContext().deterministicAlgorithms()) {
          using Scatter = LocalDeformableAttentionScatter<scalar_t, typename Driver::Add>;
          Driver::scatter("local_deformable_attention_backward (key gradient)", sh.N * sh.D,
                          sh.oHW, Scatter{d, gl, q.data_ptr<scalar_t>(), sh.D, sh.Dg, sh.Dh,
                                          grad_key.data_ptr<acc_t>()});
          Driver::scatter("local_deformable_attention_backward (value gradient)", sh.N * sh.C,
                          sh.oHW, Scatter{d, a, go, sh.C, sh.Cg, sh.Ch,
                                          grad_value.data_ptr<acc_t>()});
        } else {  // deterministic: one sorted index of the sample corners, two gathers
          const ScatterIndex index = invert_scatter<Driver>(
              sh.N * sh.G, 4 * sh.P * sh.oHW, sh.HW,
              LocalDeformableAttentionCorners<scalar_t>{d}, q.options());
          const int64_t* order = index.order.data_ptr<int64_t>();
          const int64_t* bounds = index.bounds.data_ptr<int64_t>();
          Driver::for_each(grad_key.numel(),
                           Gather{d, gl, q.data_ptr<scalar_t>(), sh.D, sh.Dg, sh.Dh, order,
                                  bounds, grad_key.data_ptr<acc_t>()});
          Driver::for_each(grad_value.numel(),
                           Gather{d, a, go, sh.C, sh.Cg, sh.Ch, order, bounds,
                                  grad_value.data_ptr<acc_t>()});
        }
        if (rpb.defined())
          Driver::template reduce<acc_t>(
              grad_rpb.numel(), LocalDeformableAttentionGradRpb<scalar_t>{
                                    d, gl, grad_rpb.data_ptr<scalar_t>(), sh.N * sh.oHW});
      });
  return {grad_q, grad_key.to(q.scalar_type()), grad_value.to(q.scalar_type()), grad_offsets,
          grad_rpb};
}

at::Tensor local_deformable_attention_cpu(const at::Tensor& q, const at::Tensor& key,
                                          const at::Tensor& value, const at::Tensor& offsets,
                                          const c10::optional<at::Tensor>& rpb,
                                          int64_t num_heads, int64_t groups);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_deformable_attention_backward_cpu(const at::Tensor& grad_out, const at::Tensor& q,
                                        const at::Tensor& key, const at::Tensor& value,
                                        const at::Tensor& offsets,
                                        const c10::optional<at::Tensor>& rpb, int64_t num_heads,
                                        int64_t groups);
at::Tensor local_deformable_attention_cuda(const at::Tensor& q, const at::Tensor& key,
                                           const at::Tensor& value, const at::Tensor& offsets,
                                           const c10::optional<at::Tensor>& rpb,
                                           int64_t num_heads, int64_t groups);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_deformable_attention_backward_cuda(const at::Tensor& grad_out, const at::Tensor& q,
                                         const at::Tensor& key, const at::Tensor& value,
                                         const at::Tensor& offsets,
                                         const c10::optional<at::Tensor>& rpb, int64_t num_heads,
                                         int64_t groups);

}  // namespace dlu_mm
