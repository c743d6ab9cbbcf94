// CPU local_deformable_attention: row-wise, channels-last kernels (the maths of
// ops/include/local_deformable_attention.h, which the CUDA and generic backends instantiate).
//
// The generic functors redo the bilinear set-up (position, floor, four corner weights) of every
// point for every channel that samples it, gather one scalar per channel and corner, and the
// backward re-reads keys and values once per quantity. Here one task is one (n, output row):
// the P bilinear points of every group and pixel are set up once per row and shared by all
// channels and heads; keys and values are read from channels-last copies, so each corner is a
// contiguous run of a segment's channels and every per-channel loop is a vectorisable axpy or
// dot (see RowKeys and backward_rows for the corner sums that make the key / value sides one dot
// per corner). The key and value gradients (scatters into the low-res maps) run as a second
// pass over (n, channel piece) tasks, each owning its channels, so every sum has a fixed order.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "local_deformable_attention.h"

namespace dlu_mm {
namespace {

using Shape = LocalDeformableAttentionShape;
template <typename scalar_t>
using Data = LocalDeformableAttentionData<scalar_t>;

// Output pixels per block: a block's point data (offsets and weights of every point of its
// pixels) stays in L1 while the loops sweep all channels over it.
constexpr int64_t kPix = 16;

// The bilinear set-up of every point of one output row, per group: for entry
// e = (g*P + m)*sW + jo, corner offsets off[4e + k] (0 where outside), weights w[4e + k] (0 where
// outside) and, for the backward, d weight / d y and d weight / d x (0 where outside).
template <typename scalar_t>
struct RowPoints {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape& sh;
  const bool derivatives;
  std::vector<int32_t> off;
  std::vector<acc_t> w, wy, wx;
  RowPoints(const Shape& s, int64_t groups, bool with_derivatives)
      : sh(s), derivatives(with_derivatives), off(4 * groups * s.P * s.sW),
        w(4 * groups * s.P * s.sW), wy(with_derivatives ? w.size() : 0),
        wx(with_derivatives ? w.size() : 0) {}

  // The points of group g into slot `slot`.
  void locate(const Data<scalar_t>& d, int64_t n, int64_t io, int64_t g, int64_t slot = -1) {
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

// y[i] += a * x[i], i < n (vectorisable: contiguous channels).
template <typename acc_t, typename T>
inline void axpy(acc_t* __restrict__ y, const T* __restrict__ x, acc_t a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * static_cast<acc_t>(x[i]);
}

// sum_i a[i] * x[i], i < n, in 8 interleaved partial sums (vectorisable, fixed order).
template <typename acc_t, typename T>
inline acc_t dot(const acc_t* __restrict__ a, const T* __restrict__ x, int64_t n) {
  acc_t l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int q = 0; q < 8; ++q) l[q] += a[i + q] * static_cast<acc_t>(x[i + q]);
  acc_t total = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; ++i) total += a[i] * static_cast<acc_t>(x[i]);
  return total;
}

template <typename acc_t>
inline acc_t dot4(const acc_t* a, const acc_t* b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
}

// dst[j * ld + c] = src[c * src_stride + j] for j < nj, c < nc: a (channels, pixels) block of
// an NCHW row into pixel-major (pixels, channels) form.
template <typename T, typename acc_t>
inline void to_pixel_major(const T* src, int64_t src_stride, int64_t nc, int64_t nj, acc_t* dst,
                           int64_t ld) {
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t j = 0; j < nj; ++j) dst[j * ld + c] = static_cast<acc_t>(src[c * src_stride + j]);
}

// Channel ranges [c0, c1) of constant (head, group) for channels of `per_head` / `per_group`,
// optionally cut into pieces of at most `max_len`.
struct Segment {
  int64_t c0, c1, h, g;
};
inline std::vector<Segment> segments(int64_t channels, int64_t per_head, int64_t per_group,
                                     int64_t max_len = 0) {
  std::vector<Segment> out;
  for (int64_t c0 = 0; c0 < channels;) {
    const int64_t h = c0 / per_head, g = c0 / per_group;
    int64_t c1 = dlu_min((h + 1) * per_head, (g + 1) * per_group);
    if (max_len > 0) c1 = dlu_min(c1, c0 + max_len);
    out.push_back({c0, c1, h, g});
    c0 = c1;
  }
  return out;
}

// Channels-last copies of the sampled maps: a bilinear corner is then one contiguous run of
// channels, so every per-channel loop below is a vectorisable axpy or dot over channels instead
// of a gather per channel.
struct PixelMajor {
  at::Tensor key, value;  // (N, H, W, D), (N, H, W, C)
};

// The sampled keys enter the logits and every key-side gradient only through their bilinear
// corners, and within a (head, group) segment of key channels all of them share the points and
// the head's attention: so a row keeps, per segment, point and pixel, the query-weighted corner
// sums T[k] = sum_d q_d K_d[corner k] (and the bias term B = sum_d q_d rpb[h, m, d]); the logit
// is sum_k w_k T[k] + B and the offsets' key term gl * sum_k dw_k T[k].
template <typename scalar_t>
struct RowKeys {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape& sh;
  std::vector<Segment> segs;
  std::vector<acc_t> T, B, qrow;  // T[((s*P + m)*sW + jo)*4 + k], B[(s*P + m)*sW + jo]
  explicit RowKeys(const Shape& s)
      : sh(s), segs(segments(s.D, s.Dh, s.Dg)), T(segs.size() * s.P * s.sW * 4),
        B(segs.size() * s.P * s.sW), qrow(s.sW * s.D) {}

  // qrow (pixel-major queries of row io), T, B, then the softmax attention
  // a[(h*P + m)*sW + jo].
  void attention(const Data<scalar_t>& d, const scalar_t* key_t, const RowPoints<scalar_t>& pts,
                 int64_t n, int64_t io, acc_t* a) {
    to_pixel_major(d.q + n * sh.D * sh.oHW + io * sh.sW, sh.oHW, sh.D, sh.sW, qrow.data(), sh.D);
    const scalar_t* kn = key_t + n * sh.HW * sh.D;
    for (size_t si = 0; si < segs.size(); ++si) {
      const Segment& sg = segs[si];
      const int64_t len = sg.c1 - sg.c0;
      for (int64_t m = 0; m < sh.P; ++m) {
        const int64_t e = (sg.g * sh.P + m) * sh.sW;
        acc_t* t = &T[4 * (si * sh.P + m) * sh.sW];
        acc_t* bm = &B[(si * sh.P + m) * sh.sW];
        for (int64_t jo = 0; jo < sh.sW; ++jo) {
          const acc_t* q = qrow.data() + jo * sh.D + sg.c0;
          for (int k = 0; k < 4; ++k)
            t[4 * jo + k] = dot(q, kn + pts.off[4 * (e + jo) + k] * sh.D + sg.c0, len);
          bm[jo] = d.rpb ? dot(q, d.rpb + (sg.h * sh.P + m) * sh.Dh + sg.c0 - sg.h * sh.Dh, len)
                         : acc_t(0);
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

// Forward, one (n, output row) per task: out[c] = sum_m sum_k (a_m w_mk) V[corner mk, c],
// accumulated pixel-major for a block of pixels (axpys over channels), then stored NCHW.
template <typename scalar_t>
void forward_rows(const Data<scalar_t>& d, const PixelMajor& pm, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape& sh = d.sh;
  const std::vector<Segment> vsegs = segments(sh.C, sh.Ch, sh.Cg);
  const scalar_t* key_t = pm.key.data_ptr<scalar_t>();
  const scalar_t* value_t = pm.value.data_ptr<scalar_t>();
  at::parallel_for(0, sh.N * sh.sH, 1, [&](int64_t begin, int64_t end) {
    RowPoints<scalar_t> pts(sh, sh.G, false);
    RowKeys<scalar_t> keys(sh);
    std::vector<acc_t> a(sh.nh * sh.P * sh.sW), obuf(kPix * sh.C);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, n = row / sh.sH;
      for (int64_t g = 0; g < sh.G; ++g) pts.locate(d, n, io, g);
      keys.attention(d, key_t, pts, n, io, a.data());
      const scalar_t* vn = value_t + n * sh.HW * sh.C;
      for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
        const int64_t nj = dlu_min(kPix, sh.sW - j0);
        std::fill(obuf.begin(), obuf.end(), acc_t(0));
        for (const Segment& sg : vsegs)
          for (int64_t jj = 0; jj < nj; ++jj) {
            acc_t* o = obuf.data() + jj * sh.C + sg.c0;
            for (int64_t m = 0; m < sh.P; ++m) {
              const int64_t e = 4 * ((sg.g * sh.P + m) * sh.sW + j0 + jj);
              const acc_t am = a[(sg.h * sh.P + m) * sh.sW + j0 + jj];
              for (int k = 0; k < 4; ++k) {
                const acc_t wk = pts.w[e + k];
                if (wk != acc_t(0))
                  axpy(o, vn + pts.off[e + k] * sh.C + sg.c0, am * wk, sg.c1 - sg.c0);
              }
            }
          }
        scalar_t* orow = out + n * sh.C * sh.oHW + io * sh.sW + j0;
        for (int64_t c = 0; c < sh.C; ++c)
          for (int64_t jj = 0; jj < nj; ++jj)
            orow[c * sh.oHW + jj] = static_cast<scalar_t>(obuf[jj * sh.C + c]);
      }
    }
  });
}

// Backward pass 1, one (n, output row) per task: attention, logit gradient (stored for the
// scatters), grad_q, grad_offsets, and the row's share of grad_rpb. As the keys' T, the values
// enter ga and the offsets' value term only through S[k] = sum_c grad_out_c V[corner k, c] per
// (head, group) segment, point and pixel: one dot over the segment's channels per corner.
template <typename scalar_t>
void backward_rows(const Data<scalar_t>& d, const PixelMajor& pm, const scalar_t* grad_out,
                   at::opmath_type<scalar_t>* attn, at::opmath_type<scalar_t>* grad_logit,
                   scalar_t* grad_q, scalar_t* grad_offsets, at::opmath_type<scalar_t>* rpb_part) {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape& sh = d.sh;
  const int64_t PW = sh.P * sh.sW;
  const std::vector<Segment> vsegs = segments(sh.C, sh.Ch, sh.Cg);
  const scalar_t* key_t = pm.key.data_ptr<scalar_t>();
  const scalar_t* value_t = pm.value.data_ptr<scalar_t>();
  at::parallel_for(0, sh.N * sh.sH, 1, [&](int64_t begin, int64_t end) {
    RowPoints<scalar_t> pts(sh, sh.G, true);
    RowKeys<scalar_t> keys(sh);
    std::vector<acc_t> a(sh.nh * PW), ga(sh.nh * PW), goy(sh.G * PW), gox(sh.G * PW),
        gobuf(kPix * sh.C), gqbuf(kPix * sh.D), gw(4 * PW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t io = row % sh.sH, n = row / sh.sH;
      for (int64_t g = 0; g < sh.G; ++g) pts.locate(d, n, io, g);
      keys.attention(d, key_t, pts, n, io, a.data());
      std::fill(ga.begin(), ga.end(), acc_t(0));
      std::fill(goy.begin(), goy.end(), acc_t(0));
      std::fill(gox.begin(), gox.end(), acc_t(0));
      const scalar_t* vn = value_t + n * sh.HW * sh.C;
      const scalar_t* kn = key_t + n * sh.HW * sh.D;
      // values
      for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
        const int64_t nj = dlu_min(kPix, sh.sW - j0);
        to_pixel_major(grad_out + n * sh.C * sh.oHW + io * sh.sW + j0, sh.oHW, sh.C, nj,
                       gobuf.data(), sh.C);
        for (const Segment& sg : vsegs)
          for (int64_t jj = 0; jj < nj; ++jj) {
            const acc_t* go = gobuf.data() + jj * sh.C + sg.c0;
            const int64_t jo = j0 + jj;
            for (int64_t m = 0; m < sh.P; ++m) {
              const int64_t e = (sg.g * sh.P + m) * sh.sW + jo, ha = (sg.h * sh.P + m) * sh.sW + jo;
              acc_t S[4];
              for (int k = 0; k < 4; ++k)
                S[k] = pts.w[4 * e + k] != acc_t(0) || pts.wy[4 * e + k] != acc_t(0) ||
                               pts.wx[4 * e + k] != acc_t(0)
                           ? dot(go, vn + pts.off[4 * e + k] * sh.C + sg.c0, sg.c1 - sg.c0)
                           : acc_t(0);
              ga[ha] += dot4(&pts.w[4 * e], S);
              goy[e] += a[ha] * dot4(&pts.wy[4 * e], S);
              gox[e] += a[ha] * dot4(&pts.wx[4 * e], S);
            }
          }
      }
      // softmax backward (times the logit scale): ga becomes the logit gradient
      const acc_t scale = static_cast<acc_t>(sh.scale);
      for (int64_t h = 0; h < sh.nh; ++h) {
        const acc_t* ah = a.data() + h * PW;
        acc_t* gh = ga.data() + h * PW;
        for (int64_t jo = 0; jo < sh.sW; ++jo) {
          acc_t dotp = 0;
          for (int64_t m = 0; m < sh.P; ++m) dotp += ah[m * sh.sW + jo] * gh[m * sh.sW + jo];
          for (int64_t m = 0; m < sh.P; ++m) {
            acc_t& v = gh[m * sh.sW + jo];
            v = ah[m * sh.sW + jo] * (v - dotp) * scale;
          }
        }
        for (int64_t m = 0; m < sh.P; ++m) {
          const int64_t o = ((n * sh.nh + h) * sh.P + m) * sh.oHW + io * sh.sW;
          std::memcpy(attn + o, ah + m * sh.sW, sh.sW * sizeof(acc_t));
          std::memcpy(grad_logit + o, gh + m * sh.sW, sh.sW * sizeof(acc_t));
        }
      }
      // keys, per segment: the offsets' key term gl * sum_k dw_k T[k]; grad_q[:, d] =
      // sum_m sum_k (gl w_k) K[corner, d] + sum_m gl rpb[h, m, d]; grad_rpb's row share
      acc_t* rp = rpb_part ? rpb_part + row * sh.nh * sh.P * sh.Dh : nullptr;
      if (rp) std::fill(rp, rp + sh.nh * sh.P * sh.Dh, acc_t(0));
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
            if (rp)
              axpy(rp + (sg.h * sh.P + m) * sh.Dh + sg.c0 - sg.h * sh.Dh,
                   keys.qrow.data() + jo * sh.D + sg.c0, gl, sg.c1 - sg.c0);
          }
        }
        const int64_t len = sg.c1 - sg.c0;
        for (int64_t j0 = 0; j0 < sh.sW; j0 += kPix) {
          const int64_t nj = dlu_min(kPix, sh.sW - j0);
          for (int64_t jj = 0; jj < nj; ++jj) {
            const int64_t jo = j0 + jj;
            acc_t* gq = gqbuf.data() + jj * len;
            std::fill(gq, gq + len, acc_t(0));
            for (int64_t m = 0; m < sh.P; ++m) {
              const int64_t e = 4 * ((sg.g * sh.P + m) * sh.sW + jo);
              const acc_t* gwm = &gw[4 * (m * sh.sW + jo)];
              for (int k = 0; k < 4; ++k)
                if (gwm[k] != acc_t(0)) axpy(gq, kn + pts.off[e + k] * sh.D + sg.c0, gwm[k], len);
              if (d.rpb)
                axpy(gq, d.rpb + (sg.h * sh.P + m) * sh.Dh + sg.c0 - sg.h * sh.Dh,
                     ga[(sg.h * sh.P + m) * sh.sW + jo], len);
            }
          }
          scalar_t* out = grad_q + (n * sh.D + sg.c0) * sh.oHW + io * sh.sW + j0;
          for (int64_t c = 0; c < len; ++c)
            for (int64_t jj = 0; jj < nj; ++jj)
              out[c * sh.oHW + jj] = static_cast<scalar_t>(gqbuf[jj * len + c]);
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
// attention, factor = grad_out), one (n, piece of <= kChan channels of one head and group) per
// task, which owns those channels of the whole gradient map: it accumulates them pixel-major
// (axpys over its channels at each corner) and stores them NCHW at the end.
template <typename scalar_t>
void scatter_planes(const Data<scalar_t>& d, const at::opmath_type<scalar_t>* weights,
                    const scalar_t* factor, int64_t channels, int64_t per_group,
                    int64_t per_head, scalar_t* grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape& sh = d.sh;
  constexpr int64_t kChan = 64;
  const std::vector<Segment> pieces = segments(channels, per_head, per_group, kChan);
  const int64_t np = static_cast<int64_t>(pieces.size());
  at::parallel_for(0, sh.N * np, 1, [&](int64_t begin, int64_t end) {
    RowPoints<scalar_t> pts(sh, 1, false);
    std::vector<acc_t> acc(sh.HW * kChan), frow(sh.sW * kChan);
    for (int64_t task = begin; task < end; ++task) {
      const Segment& pc = pieces[task % np];
      const int64_t n = task / np, len = pc.c1 - pc.c0;
      std::fill(acc.begin(), acc.begin() + sh.HW * len, acc_t(0));
      for (int64_t io = 0; io < sh.sH; ++io) {
        pts.locate(d, n, io, pc.g, 0);
        to_pixel_major(factor + (n * channels + pc.c0) * sh.oHW + io * sh.sW, sh.oHW, len,
                       sh.sW, frow.data(), len);
        for (int64_t jo = 0; jo < sh.sW; ++jo) {
          const acc_t* f = frow.data() + jo * len;
          for (int64_t m = 0; m < sh.P; ++m) {
            const acc_t wt = weights[((n * sh.nh + pc.h) * sh.P + m) * sh.oHW + io * sh.sW + jo];
            const int64_t e = 4 * (m * sh.sW + jo);
            for (int k = 0; k < 4; ++k) {
              const acc_t wk = pts.w[e + k];
              if (wk != acc_t(0)) axpy(acc.data() + pts.off[e + k] * len, f, wt * wk, len);
            }
          }
        }
      }
      scalar_t* out = grad + (n * channels + pc.c0) * sh.HW;
      for (int64_t c = 0; c < len; ++c)
        for (int64_t i = 0; i < sh.HW; ++i)
          out[c * sh.HW + i] = static_cast<scalar_t>(acc[i * len + c]);
    }
  });
}

template <typename scalar_t>
Data<scalar_t> make_data(const Shape& sh, const at::Tensor& q, const at::Tensor& key,
                         const at::Tensor& value, const at::Tensor& offsets,
                         const at::Tensor& rpb) {
  return Data<scalar_t>{sh, q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
                        value.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>(),
                        rpb.defined() ? rpb.data_ptr<scalar_t>() : nullptr};
}

PixelMajor pixel_major(const at::Tensor& key, const at::Tensor& value) {
  return {key.permute({0, 2, 3, 1}).contiguous(), value.permute({0, 2, 3, 1}).contiguous()};
}

}  // namespace

at::Tensor local_deformable_attention_cpu(const at::Tensor& q_in, const at::Tensor& key_in,
                                          const at::Tensor& value_in,
                                          const at::Tensor& offsets_in,
                                          const c10::optional<at::Tensor>& rpb_in,
                                          int64_t num_heads, int64_t groups) {
  const Shape sh = check_local_deformable_attention(q_in, key_in, value_in, offsets_in, rpb_in,
                                                    num_heads, groups);
  TORCH_CHECK(sh.HW < (int64_t(1) << 31), "local_deformable_attention: planes of H*W >= 2^31");
  const at::Tensor q = q_in.contiguous(), key = key_in.contiguous();
  const at::Tensor value = value_in.contiguous(), offsets = offsets_in.contiguous();
  const at::Tensor rpb = rpb_in.has_value() ? rpb_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({sh.N, sh.C, sh.sH, sh.sW}, q.options());
  if (out.numel() == 0) return out;
  const PixelMajor pm = pixel_major(key, value);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_deformable_attention", [&] {
        forward_rows(make_data<scalar_t>(sh, q, key, value, offsets, rpb), pm,
                     out.data_ptr<scalar_t>());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
local_deformable_attention_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& q_in,
                                        const at::Tensor& key_in, const at::Tensor& value_in,
                                        const at::Tensor& offsets_in,
                                        const c10::optional<at::Tensor>& rpb_in,
                                        int64_t num_heads, int64_t groups) {
  const Shape sh = check_local_deformable_attention(q_in, key_in, value_in, offsets_in, rpb_in,
                                                    num_heads, groups);
  check_grad_out(grad_out_in, q_in, sh.C, sh.sH, sh.sW);
  TORCH_CHECK(sh.HW < (int64_t(1) << 31), "local_deformable_attention: planes of H*W >= 2^31");
  const at::Tensor q = q_in.contiguous(), key = key_in.contiguous();
  const at::Tensor value = value_in.contiguous(), offsets = offsets_in.contiguous();
  const at::Tensor rpb = rpb_in.has_value() ? rpb_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  if (grad_out.numel() == 0 || key.numel() == 0)  // nothing sampled: every gradient is 0
    return {at::zeros_like(q), at::zeros_like(key), at::zeros_like(value),
            at::zeros_like(offsets),
            rpb.defined() ? at::zeros_like(rpb) : at::empty({0}, q.options())};
  const auto acc_options = q.options().dtype(at::toOpMathType(q.scalar_type()));
  // every element of these is written below; grad_key / grad_value are allocated only after
  // the channels-last copies are freed (a lower peak)
  at::Tensor grad_key, grad_value;
  at::Tensor grad_q = at::empty_like(q), grad_offsets = at::empty_like(offsets);
  at::Tensor grad_rpb = rpb.defined() ? at::empty_like(rpb) : at::empty({0}, q.options());
  at::Tensor attn = at::empty({sh.N, sh.nh, sh.P, sh.sH, sh.sW}, acc_options);
  at::Tensor grad_logit = at::empty_like(attn);
  // per output row shares of grad_rpb: (N*sH, nh, P, Dh)
  at::Tensor rpb_part = rpb.defined() ? at::empty({sh.N * sh.sH, sh.nh * sh.P * sh.Dh},
                                                   acc_options)
                                      : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_deformable_attention_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const Data<scalar_t> d = make_data<scalar_t>(sh, q, key, value, offsets, rpb);
        acc_t* a = attn.data_ptr<acc_t>();
        acc_t* gl = grad_logit.data_ptr<acc_t>();
        const scalar_t* go = grad_out.data_ptr<scalar_t>();
        {
          const PixelMajor pm = pixel_major(key, value);
          backward_rows(d, pm, go, a, gl, grad_q.data_ptr<scalar_t>(),
                        grad_offsets.data_ptr<scalar_t>(),
                        rpb.defined() ? rpb_part.data_ptr<acc_t>() : nullptr);
        }  // the channels-last copies are freed before the scatters
        grad_key = at::empty_like(key);
        grad_value = at::empty_like(value);
        scatter_planes(d, gl, q.data_ptr<scalar_t>(), sh.D, sh.Dg, sh.Dh,
                       grad_key.data_ptr<scalar_t>());
        scatter_planes(d, a, go, sh.C, sh.Cg, sh.Ch, grad_value.data_ptr<scalar_t>());
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
  return {grad_q, grad_key, grad_value, grad_offsets, grad_rpb};
}

}  // namespace dlu_mm
