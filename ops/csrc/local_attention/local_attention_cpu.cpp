// CPU local_deformable_attention: row-wise kernels (the maths of ops/include/local_attention.h,
// which the CUDA and generic backends instantiate).
//
// The generic functors redo the bilinear set-up (position, floor, four corner weights) of every
// point for every channel that samples it, and the backward re-reads keys and values once per
// quantity (attention, value gradient of the logits, offset gradients). Here one task is one
// (n, output row): the P bilinear sample positions of every group and pixel are computed once
// per row and shared by all the group's channels (and all heads), then each channel plane is
// walked once per pass with its corner reads feeding every quantity that needs them. The key
// and value gradients (scatters into the low-res planes) run as a second pass over
// (n, channel block) tasks, each owning its planes, so every sum has a fixed order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "dlu_cpu.h"
#include "local_attention.h"

namespace dlu_mm {
namespace {

// Output pixels per block: a block's point data (offsets and weights of every point of its
// pixels) stays in L1 while the loops sweep all channels over it.
constexpr int64_t kPix = 16;

// The bilinear set-up of every point of one output row, per group: for entry
// e = (g*P + m)*sW + jo, corner offsets off[4e + k] (0 where outside), weights w[4e + k] (0 where
// outside) and, for the backward, d weight / d y and d weight / d x (0 where outside).
template <typename scalar_t>
struct RowPoints {
  using acc_t = at::opmath_type<scalar_t>;
  const LdaShape& sh;
  const bool derivatives;
  std::vector<int32_t> off;
  std::vector<acc_t> w, wy, wx;
  RowPoints(const LdaShape& s, int64_t groups, bool with_derivatives)
      : sh(s), derivatives(with_derivatives), off(4 * groups * s.P * s.sW),
        w(4 * groups * s.P * s.sW), wy(with_derivatives ? w.size() : 0),
        wx(with_derivatives ? w.size() : 0) {}

  // The points of group g into slot `slot`.
  void locate(const LdaData<scalar_t>& d, int64_t n, int64_t io, int64_t g, int64_t slot = -1) {
    if (slot < 0) slot = g;
    for (int64_t m = 0; m < sh.P; ++m)
      for (int64_t jo = 0; jo < sh.sW; ++jo) {
        const ZeroSample<acc_t> zs = d.where(n, g, m, io * sh.sW + jo);
        const int64_t e = 4 * ((slot * sh.P + m) * sh.sW + jo);
        const acc_t ly = zs.ly, lx = zs.lx;
        const acc_t dy[4] = {-(acc_t(1) - lx), -lx, acc_t(1) - lx, lx};
        const acc_t dx[4] = {-(acc_t(1) - ly), acc_t(1) - ly, -ly, ly};
        for (int k = 0; k < 4; ++k) {
          off[e + k] = static_cast<int32_t>(zs.o[k]);
          w[e + k] = zs.w[k];
          if (derivatives) {
            const bool in = (zs.valid >> k) & 1;
            wy[e + k] = in ? dy[k] : acc_t(0);
            wx[e + k] = in ? dx[k] : acc_t(0);
          }
        }
      }
  }
};

template <typename acc_t, typename T>
inline acc_t gather4(const acc_t* w, const int32_t* o, const T* p) {
  return w[0] * static_cast<acc_t>(p[o[0]]) + w[1] * static_cast<acc_t>(p[o[1]]) +
         w[2] * static_cast<acc_t>(p[o[2]]) + w[3] * static_cast<acc_t>(p[o[3]]);
}

// acc[k] += f * p[o[k]] for the four corners.
template <typename acc_t, typename T>
inline void corners_add(acc_t* acc, const int32_t* o, const T* p, acc_t f) {
  acc[0] += f * static_cast<acc_t>(p[o[0]]);
  acc[1] += f * static_cast<acc_t>(p[o[1]]);
  acc[2] += f * static_cast<acc_t>(p[o[2]]);
  acc[3] += f * static_cast<acc_t>(p[o[3]]);
}

template <typename acc_t>
inline acc_t dot4(const acc_t* a, const acc_t* b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
}

// Channel ranges [c0, c1) of constant (head, group) for channels of `per_head` / `per_group`.
struct Segment {
  int64_t c0, c1, h, g;
};
inline std::vector<Segment> segments(int64_t channels, int64_t per_head, int64_t per_group) {
  std::vector<Segment> out;
  for (int64_t c0 = 0; c0 < channels;) {
    const int64_t h = c0 / per_head, g = c0 / per_group;
    const int64_t c1 = dlu_min((h + 1) * per_head, (g + 1) * per_group);
    out.push_back({c0, c1, h, g});
    c0 = c1;
  }
  return out;
}

// The sampled keys enter the logits and every key-side gradient only through their bilinear
// corners, and within a (head, group) segment of key channels all of them share the points and
// the head's attention: so a row keeps, per segment, point and pixel, the query-weighted corner
// sums T[k] = sum_d q_d K_d[corner k] (and the bias term B = sum_d q_d rpb[h, m, d]); the logit
// is sum_k w_k T[k] + B and the offsets' key term gl * sum_k dw_k T[k]. One gather of the four
// corners per key channel, point and pixel, then nothing per channel.
template <typename scalar_t>
struct RowKeys {
  using acc_t = at::opmath_type<scalar_t>;
  const LdaShape& sh;
  std::vector<Segment> segs;
  std::vector<acc_t> T, B;  // T[((s*P + m)*sW + jo)*4 + k], B[(s*P + m)*sW + jo]
  explicit RowKeys(const LdaShape& s)
      : sh(s), segs(segments(s.D, s.Dh, s.Dg)), T(segs.size() * s.P * s.sW * 4),
        B(segs.size() * s.P * s.sW) {}

  // T, B of row io, then the softmax attention a[(h*P + m)*sW + jo].
  void attention(const LdaData<scalar_t>& d, const RowPoints<scalar_t>& pts, int64_t n,
                 int64_t io, acc_t* a) {
    std::fill(T.begin(), T.end(), acc_t(0));
    std::fill(B.begin(), B.end(), acc_t(0));
    for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
      const int64_t j1 = dlu_min(j0 + kPix, sh.sW);
      for (size_t si = 0; si < segs.size(); ++si) {
        const Segment& sg = segs[si];
        for (int64_t dd = sg.c0; dd < sg.c1; ++dd) {
          const scalar_t* qr = d.q + (n * sh.D + dd) * sh.oHW + io * sh.sW;
          const scalar_t* plane = d.key + (n * sh.D + dd) * sh.HW;
          for (int64_t m = 0; m < sh.P; ++m) {
            const int32_t* o = &pts.off[4 * (sg.g * sh.P + m) * sh.sW];
            acc_t* t = &T[4 * (si * sh.P + m) * sh.sW];
            for (int64_t jo = j0; jo < j1; ++jo)
              corners_add(t + 4 * jo, o + 4 * jo, plane, static_cast<acc_t>(qr[jo]));
            if (d.rpb) {
              const acc_t b = d.bias(sg.h, m, dd);
              acc_t* bm = &B[(si * sh.P + m) * sh.sW];
              for (int64_t jo = j0; jo < j1; ++jo) bm[jo] += static_cast<acc_t>(qr[jo]) * b;
            }
          }
        }
      }
    }
    std::fill(a, a + sh.nh * sh.P * sh.sW, acc_t(0));
    for (size_t si = 0; si < segs.size(); ++si) {
      const Segment& sg = segs[si];
      for (int64_t m = 0; m < sh.P; ++m) {
        const acc_t* w = &pts.w[4 * (sg.g * sh.P + m) * sh.sW];
        const acc_t* t = &T[4 * (si * sh.P + m) * sh.sW];
        const acc_t* bm = &B[(si * sh.P + m) * sh.sW];
        acc_t* am = a + (sg.h * sh.P + m) * sh.sW;
        for (int64_t jo = 0; jo < sh.sW; ++jo) am[jo] += dot4(w + 4 * jo, t + 4 * jo) + bm[jo];
      }
    }
    const acc_t scale = static_cast<acc_t>(sh.scale);
    for (int64_t h = 0; h < sh.nh; ++h) {
      acc_t* ah = a + h * sh.P * sh.sW;
      for (int64_t jo = 0; jo < sh.sW; ++jo) {
        acc_t top = ah[jo];
        for (int64_t m = 1; m < sh.P; ++m) top = dlu_max(top, ah[m * sh.sW + jo]);
        acc_t total = 0;
        for (int64_t m = 0; m < sh.P; ++m) {
          acc_t& v = ah[m * sh.sW + jo];
          v = dlu_exp((v - top) * scale);
          total += v;
        }
        for (int64_t m = 0; m < sh.P; ++m) ah[m * sh.sW + jo] /= total;
      }
    }
  }
};

// Forward, one (n, output row) per task: out[c] = sum_m sum_k (a_m w_mk) V_c[corner mk].
template <typename scalar_t>
void forward_rows(const LdaData<scalar_t>& d, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const LdaShape& sh = d.sh;
  const std::vector<Segment> vsegs = segments(sh.C, sh.Ch, sh.Cg);
  at::parallel_for(0, sh.N * sh.sH, 1, [&](int64_t begin, int64_t end) {
    RowPoints<scalar_t> pts(sh, sh.G, false);
    RowKeys<scalar_t> keys(sh);
    // attention-weighted corner weights of one (head, group): wa[4*(m*sW + jo) + k]
    std::vector<acc_t> a(sh.nh * sh.P * sh.sW), wa(4 * sh.P * sh.sW), acc(kPix);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, n = row / sh.sH;
      for (int64_t g = 0; g < sh.G; ++g) pts.locate(d, n, io, g);
      keys.attention(d, pts, n, io, a.data());
      for (const Segment& sg : vsegs) {
        for (int64_t m = 0; m < sh.P; ++m) {
          const acc_t* am = a.data() + (sg.h * sh.P + m) * sh.sW;
          const acc_t* w = pts.w.data() + 4 * (sg.g * sh.P + m) * sh.sW;
          acc_t* wm = wa.data() + 4 * m * sh.sW;
          for (int64_t jo = 0; jo < sh.sW; ++jo)
            for (int k = 0; k < 4; ++k) wm[4 * jo + k] = am[jo] * w[4 * jo + k];
        }
        const int32_t* og = pts.off.data() + 4 * sg.g * sh.P * sh.sW;
        for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
          const int64_t j1 = dlu_min(j0 + kPix, sh.sW);
          for (int64_t c = sg.c0; c < sg.c1; ++c) {
            const scalar_t* plane = d.value + (n * sh.C + c) * sh.HW;
            std::fill(acc.begin(), acc.end(), acc_t(0));
            for (int64_t m = 0; m < sh.P; ++m)
              for (int64_t jo = j0; jo < j1; ++jo) {
                const int64_t e = 4 * (m * sh.sW + jo);
                acc[jo - j0] += gather4(&wa[e], og + e, plane);
              }
            scalar_t* orow = out + (n * sh.C + c) * sh.oHW + io * sh.sW;
            for (int64_t jo = j0; jo < j1; ++jo) orow[jo] = static_cast<scalar_t>(acc[jo - j0]);
          }
        }
      }
    }
  });
}

// Backward pass 1, one (n, output row) per task: attention, logit gradient (stored for the
// scatters), grad_q, grad_offsets, and the row's share of grad_rpb. As the keys' T, the values
// enter ga and the offsets' value term only through S[k] = sum_c grad_out_c V_c[corner k] per
// (head, group) segment, point and pixel: one gather and four FMAs per value channel and point.
template <typename scalar_t>
void backward_rows(const LdaData<scalar_t>& d, const scalar_t* grad_out,
                   at::opmath_type<scalar_t>* attn, at::opmath_type<scalar_t>* grad_logit,
                   scalar_t* grad_q, scalar_t* grad_offsets, at::opmath_type<scalar_t>* rpb_part) {
  using acc_t = at::opmath_type<scalar_t>;
  const LdaShape& sh = d.sh;
  const int64_t PW = sh.P * sh.sW;
  const std::vector<Segment> vsegs = segments(sh.C, sh.Ch, sh.Cg);
  at::parallel_for(0, sh.N * sh.sH, 1, [&](int64_t begin, int64_t end) {
    RowPoints<scalar_t> pts(sh, sh.G, true);
    RowKeys<scalar_t> keys(sh);
    std::vector<acc_t> a(sh.nh * PW), ga(sh.nh * PW), goy(sh.G * PW), gox(sh.G * PW), gq(kPix),
        S(4 * sh.P * kPix), gw(4 * PW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, n = row / sh.sH;
      for (int64_t g = 0; g < sh.G; ++g) pts.locate(d, n, io, g);
      keys.attention(d, pts, n, io, a.data());
      std::fill(ga.begin(), ga.end(), acc_t(0));
      std::fill(goy.begin(), goy.end(), acc_t(0));
      std::fill(gox.begin(), gox.end(), acc_t(0));
      // values
      for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
        const int64_t j1 = dlu_min(j0 + kPix, sh.sW);
        for (const Segment& sg : vsegs) {
          std::fill(S.begin(), S.end(), acc_t(0));  // S[4*(m*kPix + jo - j0) + k]
          for (int64_t c = sg.c0; c < sg.c1; ++c) {
            const scalar_t* plane = d.value + (n * sh.C + c) * sh.HW;
            const scalar_t* go = grad_out + (n * sh.C + c) * sh.oHW + io * sh.sW;
            for (int64_t m = 0; m < sh.P; ++m) {
              const int32_t* o = &pts.off[4 * (sg.g * sh.P + m) * sh.sW];
              acc_t* sm = S.data() + 4 * m * kPix;
              for (int64_t jo = j0; jo < j1; ++jo)
                corners_add(sm + 4 * (jo - j0), o + 4 * jo, plane, static_cast<acc_t>(go[jo]));
            }
          }
          for (int64_t m = 0; m < sh.P; ++m) {
            const int64_t e = (sg.g * sh.P + m) * sh.sW, ha = (sg.h * sh.P + m) * sh.sW;
            const acc_t* sm = S.data() + 4 * m * kPix;
            for (int64_t jo = j0; jo < j1; ++jo) {
              const acc_t* sk = sm + 4 * (jo - j0);
              ga[ha + jo] += dot4(&pts.w[4 * (e + jo)], sk);
              goy[e + jo] += a[ha + jo] * dot4(&pts.wy[4 * (e + jo)], sk);
              gox[e + jo] += a[ha + jo] * dot4(&pts.wx[4 * (e + jo)], sk);
            }
          }
        }
      }
      // softmax backward (times the logit scale): ga becomes the logit gradient
      const acc_t scale = static_cast<acc_t>(sh.scale);
      for (int64_t h = 0; h < sh.nh; ++h) {
        const acc_t* ah = a.data() + h * PW;
        acc_t* gh = ga.data() + h * PW;
        for (int64_t jo = 0; jo < sh.sW; ++jo) {
          acc_t dot = 0;
          for (int64_t m = 0; m < sh.P; ++m) dot += ah[m * sh.sW + jo] * gh[m * sh.sW + jo];
          for (int64_t m = 0; m < sh.P; ++m) {
            acc_t& v = gh[m * sh.sW + jo];
            v = ah[m * sh.sW + jo] * (v - dot) * scale;
          }
        }
        for (int64_t m = 0; m < sh.P; ++m) {
          const int64_t o = ((n * sh.nh + h) * sh.P + m) * sh.oHW + io * sh.sW;
          std::memcpy(attn + o, ah + m * sh.sW, sh.sW * sizeof(acc_t));
          std::memcpy(grad_logit + o, gh + m * sh.sW, sh.sW * sizeof(acc_t));
        }
      }
      // keys, per segment: the offsets' key term gl * sum_k dw_k T[k]; grad_q[d] =
      // sum_m sum_k (gl w_k) K_d[corner] + sum_m gl rpb[h, m, d]; grad_rpb's row share
      acc_t* rp = rpb_part ? rpb_part + row * sh.nh * sh.P * sh.Dh : nullptr;
      for (size_t si = 0; si < keys.segs.size(); ++si) {
        const Segment& sg = keys.segs[si];
        for (int64_t m = 0; m < sh.P; ++m) {
          const int64_t e = (sg.g * sh.P + m) * sh.sW, ha = (sg.h * sh.P + m) * sh.sW;
          const acc_t* t = &keys.T[4 * (si * sh.P + m) * sh.sW];
          acc_t* gwm = &gw[4 * m * sh.sW];
          for (int64_t jo = 0; jo < sh.sW; ++jo) {
            const acc_t gl = ga[ha + jo];
            goy[e + jo] += gl * dot4(&pts.wy[4 * (e + jo)], t + 4 * jo);
            gox[e + jo] += gl * dot4(&pts.wx[4 * (e + jo)], t + 4 * jo);
            for (int k = 0; k < 4; ++k) gwm[4 * jo + k] = gl * pts.w[4 * (e + jo) + k];
          }
        }
        const int32_t* og = &pts.off[4 * sg.g * sh.P * sh.sW];
        for (int64_t dd = sg.c0; dd < sg.c1; ++dd) {
          const scalar_t* plane = d.key + (n * sh.D + dd) * sh.HW;
          const scalar_t* q = d.q + (n * sh.D + dd) * sh.oHW + io * sh.sW;
          scalar_t* out = grad_q + (n * sh.D + dd) * sh.oHW + io * sh.sW;
          for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
            const int64_t j1 = dlu_min(j0 + kPix, sh.sW);
            std::fill(gq.begin(), gq.end(), acc_t(0));
            for (int64_t m = 0; m < sh.P; ++m) {
              const acc_t* gwm = &gw[4 * m * sh.sW];
              const int32_t* o = og + 4 * m * sh.sW;
              for (int64_t jo = j0; jo < j1; ++jo)
                gq[jo - j0] += gather4(gwm + 4 * jo, o + 4 * jo, plane);
            }
            if (d.rpb)
              for (int64_t m = 0; m < sh.P; ++m) {
                const acc_t b = d.bias(sg.h, m, dd);
                const acc_t* gl = &ga[(sg.h * sh.P + m) * sh.sW];
                for (int64_t jo = j0; jo < j1; ++jo) gq[jo - j0] += gl[jo] * b;
              }
            for (int64_t jo = j0; jo < j1; ++jo) out[jo] = static_cast<scalar_t>(gq[jo - j0]);
          }
          if (rp)
            for (int64_t m = 0; m < sh.P; ++m) {
              const acc_t* gl = &ga[(sg.h * sh.P + m) * sh.sW];
              acc_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
              int64_t jo = 0;
              for (; jo + 8 <= sh.sW; jo += 8)
                for (int l = 0; l < 8; ++l) lanes[l] += gl[jo + l] * static_cast<acc_t>(q[jo + l]);
              acc_t total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                            ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
              for (; jo < sh.sW; ++jo) total += gl[jo] * static_cast<acc_t>(q[jo]);
              rp[(sg.h * sh.P + m) * sh.Dh + dd - sg.h * sh.Dh] = total;
            }
        }
      }
      const acc_t fy = static_cast<acc_t>(sh.fy), fx = static_cast<acc_t>(sh.fx);
      for (int64_t g = 0; g < sh.G; ++g)
        for (int64_t m = 0; m < sh.P; ++m) {
          scalar_t* oy = grad_offsets + ((n * sh.G + g) * 2 * sh.P + 2 * m) * sh.oHW + io * sh.sW;
          scalar_t* ox = oy + sh.oHW;
          const acc_t* gy = goy.data() + (g * sh.P + m) * sh.sW;
          const acc_t* gx = gox.data() + (g * sh.P + m) * sh.sW;
          for (int64_t jo = 0; jo < sh.sW; ++jo) {
            oy[jo] = static_cast<scalar_t>(gy[jo] * fy);
            ox[jo] = static_cast<scalar_t>(gx[jo] * fx);
          }
        }
    }
  });
}

// Backward pass 2: grad_key (weights = logit gradient, factor = q) and grad_value (weights =
// attention, factor = grad_out), one (n, block of one group's channels) per task, owning its
// planes. A row's points are set up once per task and shared by the block's channels.
template <typename scalar_t>
void scatter_planes(const LdaData<scalar_t>& d, const at::opmath_type<scalar_t>* weights,
                    const scalar_t* factor, int64_t channels, int64_t per_group,
                    int64_t per_head, at::opmath_type<scalar_t>* grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const LdaShape& sh = d.sh;
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (per_group + kBlock - 1) / kBlock;  // per group
  at::parallel_for(0, sh.N * sh.G * blocks, 1, [&](int64_t begin, int64_t end) {
    RowPoints<scalar_t> pts(sh, 1, false);
    std::vector<acc_t> coef(kBlock * sh.P * sh.sW);  // [cc][m][jo]
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % blocks, ng = task / blocks, g = ng % sh.G, n = ng / sh.G;
      const int64_t c0 = g * per_group + b * kBlock;
      const int64_t nb = dlu_min<int64_t>(kBlock, (g + 1) * per_group - c0);
      for (int64_t io = 0; io < sh.sH; ++io) {
        pts.locate(d, n, io, g, 0);
        for (int64_t cc = 0; cc < nb; ++cc) {
          const int64_t c = c0 + cc, h = c / per_head;
          const scalar_t* fr = factor + (n * channels + c) * sh.oHW + io * sh.sW;
          for (int64_t m = 0; m < sh.P; ++m) {
            const acc_t* wr = weights + ((n * sh.nh + h) * sh.P + m) * sh.oHW + io * sh.sW;
            acc_t* cr = coef.data() + (cc * sh.P + m) * sh.sW;
            for (int64_t jo = 0; jo < sh.sW; ++jo) cr[jo] = wr[jo] * static_cast<acc_t>(fr[jo]);
          }
        }
        for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
          const int64_t j1 = dlu_min(j0 + kPix, sh.sW);
          for (int64_t cc = 0; cc < nb; ++cc) {
            acc_t* plane = grad + (n * channels + c0 + cc) * sh.HW;
            for (int64_t m = 0; m < sh.P; ++m) {
              const acc_t* cr = coef.data() + (cc * sh.P + m) * sh.sW;
              for (int64_t jo = j0; jo < j1; ++jo) {
                const int64_t e = 4 * (m * sh.sW + jo);
                const int32_t* o = &pts.off[e];
                const acc_t* w = &pts.w[e];
                const acc_t v = cr[jo];
                // outside corners have weight 0 and offset 0: adding 0 there is harmless
                plane[o[0]] += v * w[0];
                plane[o[1]] += v * w[1];
                plane[o[2]] += v * w[2];
                plane[o[3]] += v * w[3];
              }
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
LdaData<scalar_t> make_data(const LdaShape& sh, const at::Tensor& q, const at::Tensor& key,
                            const at::Tensor& value, const at::Tensor& offsets,
                            const at::Tensor& rpb) {
  return LdaData<scalar_t>{sh, q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
                           value.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>(),
                           rpb.defined() ? rpb.data_ptr<scalar_t>() : nullptr};
}

}  // namespace

at::Tensor local_attention_cpu(const at::Tensor& q_in, const at::Tensor& key_in,
                               const at::Tensor& value_in, const at::Tensor& offsets_in,
                               const c10::optional<at::Tensor>& rpb_in, int64_t num_heads,
                               int64_t groups) {
  const LdaShape sh =
      check_local_attention(q_in, key_in, value_in, offsets_in, rpb_in, num_heads, groups);
  TORCH_CHECK(sh.HW < (int64_t(1) << 31), "local_deformable_attention: planes of H*W >= 2^31");
  const at::Tensor q = q_in.contiguous(), key = key_in.contiguous();
  const at::Tensor value = value_in.contiguous(), offsets = offsets_in.contiguous();
  const at::Tensor rpb = rpb_in.has_value() ? rpb_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, q.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_deformable_attention", [&] {
        forward_rows(make_data<scalar_t>(sh, q, key, value, offsets, rpb),
                     out.data_ptr<scalar_t>());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_attention_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& q_in,
                             const at::Tensor& key_in, const at::Tensor& value_in,
                             const at::Tensor& offsets_in, const c10::optional<at::Tensor>& rpb_in,
                             int64_t num_heads, int64_t groups) {
  const LdaShape sh =
      check_local_attention(q_in, key_in, value_in, offsets_in, rpb_in, num_heads, groups);
  check_grad_out(grad_out_in, q_in, sh.C, sh.sH, sh.sW);
  TORCH_CHECK(sh.HW < (int64_t(1) << 31), "local_deformable_attention: planes of H*W >= 2^31");
  const at::Tensor q = q_in.contiguous(), key = key_in.contiguous();
  const at::Tensor value = value_in.contiguous(), offsets = offsets_in.contiguous();
  const at::Tensor rpb = rpb_in.has_value() ? rpb_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const auto acc_dtype = at::toOpMathType(q.scalar_type());
  const auto acc_options = q.options().dtype(acc_dtype);
  const bool acc_is_out = acc_dtype == q.scalar_type();
  at::Tensor grad_key = at::zeros(key.sizes(), acc_options);
  at::Tensor grad_value = at::zeros(value.sizes(), acc_options);
  at::Tensor grad_q = at::zeros_like(q), grad_offsets = at::zeros_like(offsets);
  at::Tensor grad_rpb = rpb.defined() ? at::zeros_like(rpb) : at::empty({0}, q.options());
  if (grad_out.numel() == 0)
    return {grad_q, grad_key.to(q.scalar_type()), grad_value.to(q.scalar_type()), grad_offsets,
            grad_rpb};
  at::Tensor attn = at::empty({sh.N, sh.nh, sh.P, sh.sH, sh.sW}, acc_options);
  at::Tensor grad_logit = at::empty_like(attn);
  // per output row shares of grad_rpb: (N*sH, nh, P, Dh)
  at::Tensor rpb_part = rpb.defined() ? at::empty({sh.N * sh.sH, sh.nh * sh.P * sh.Dh},
                                                   acc_options)
                                      : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_deformable_attention_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const LdaData<scalar_t> d = make_data<scalar_t>(sh, q, key, value, offsets, rpb);
        acc_t* a = attn.data_ptr<acc_t>();
        acc_t* gl = grad_logit.data_ptr<acc_t>();
        const scalar_t* go = grad_out.data_ptr<scalar_t>();
        backward_rows(d, go, a, gl, grad_q.data_ptr<scalar_t>(),
                      grad_offsets.data_ptr<scalar_t>(),
                      rpb.defined() ? rpb_part.data_ptr<acc_t>() : nullptr);
        scatter_planes(d, gl, q.data_ptr<scalar_t>(), sh.D, sh.Dg, sh.Dh,
                       grad_key.data_ptr<acc_t>());
        scatter_planes(d, a, go, sh.C, sh.Cg, sh.Ch, grad_value.data_ptr<acc_t>());
        if (rpb.defined()) {  // sum of the row shares, in row order
          const acc_t* part = rpb_part.data_ptr<acc_t>();
          scalar_t* gr = grad_rpb.data_ptr<scalar_t>();
          const int64_t rows = sh.N * sh.sH, elems = sh.nh * sh.P * sh.Dh;
          for (int64_t e = 0; e < elems; ++e) {
            acc_t total = 0;
            for (int64_t r = 0; r < rows; ++r) total += part[r * elems + e];
            gr[e] = static_cast<scalar_t>(total);
          }
        }
      });
  if (acc_is_out) return {grad_q, grad_key, grad_value, grad_offsets, grad_rpb};
  return {grad_q, grad_key.to(q.scalar_type()), grad_value.to(q.scalar_type()), grad_offsets,
          grad_rpb};
}

}  // namespace dlu_mm
