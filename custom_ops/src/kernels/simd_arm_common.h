// NEON code shared by the neon and dotprod paths (simd_arm_neon.cc, simd_arm_dotprod.cc),
// compiled by each with its own flags: the conv loop and its float epilogue, around each path's
// own dot product. Internal linkage only (see simd_impl.h).
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"

namespace qexport {
namespace {  // NOLINT: internal linkage on purpose

constexpr int VL = 8;  // output positions per conv vector

// The depthwise conv on q registers (4 float32), 16 accumulators, the multiply-add as one fmla
// (exact there: every product and sum is an integer below 2^24).
struct DwNeon : simd::DwGeneric<float32x4_t, 16> {
  static constexpr bool kByChannels = true;
  static V fma(V a, float w, V p) { return vfmaq_n_f32(a, p, w); }
  static V vfma(V a, V w, V p) { return vfmaq_f32(a, w, p); }
  // r[i][j] <-> r[j][i] (trn1/trn2 on 32-bit, then on 64-bit lanes).
  static void transpose(V (&r)[4]) {
    const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    r[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    r[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
  }
  static V codes(const uint8_t* p) {
    uint32_t four;
    std::memcpy(&four, p, sizeof four);
    const uint16x8_t h = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(four)));
    return vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
  }
};

// The int16 depthwise kernels: 8 lanes per q register, mla by a scalar (plane kernel) or by a
// vector (channel kernel: 8 channels per vector, twice DwNeon's 4), 8 multiply-adds per
// instruction, codes widened by uxtl, sums to float32 by sxtl + scvtf.
struct DwNeonI16 : simd::DwInt16<int16x8_t, float32x4_t, 16> {
  static constexpr bool kByChannels = true;
  static V fma(V a, float w, V p) { return vmlaq_n_s16(a, p, static_cast<int16_t>(w)); }
  static V vfma(V a, V w, V p) { return vmlaq_s16(a, w, p); }
  static V codes(const uint8_t* p) { return vreinterpretq_s16_u16(vmovl_u8(vld1_u8(p))); }
  static FV load_acc(const int16_t* p) { return vcvtq_f32_s32(vmovl_s16(vld1_s16(p))); }
  // r[i][j] <-> r[j][i]: trn1/trn2 on 16-, 32- and 64-bit lanes.
  static void transpose(V (&r)[8]) {
    int16x8_t a[8];
    for (int i = 0; i < 8; i += 2) a[i] = vtrn1q_s16(r[i], r[i + 1]), a[i + 1] = vtrn2q_s16(r[i], r[i + 1]);
    int32x4_t b[8];
    for (int i = 0; i < 8; i += 4)
      for (int k = 0; k < 2; ++k) {
        const int32x4_t x = vreinterpretq_s32_s16(a[i + k]), y = vreinterpretq_s32_s16(a[i + k + 2]);
        b[i + k] = vtrn1q_s32(x, y), b[i + k + 2] = vtrn2q_s32(x, y);
      }
    for (int k = 0; k < 4; ++k) {
      const int64x2_t x = vreinterpretq_s64_s32(b[k]), y = vreinterpretq_s64_s32(b[k + 4]);
      r[k] = vreinterpretq_s16_s64(vtrn1q_s64(x, y)), r[k + 4] = vreinterpretq_s16_s64(vtrn2q_s64(x, y));
    }
  }
};

// Where the sums fit int16 (DepthwiseTask::int16) the int16 kernels: the channel kernel on the
// planes it takes (DepthwiseTask::tile_h), else the plane kernel; else the float32 ones.
inline void depthwise_arm(const DepthwiseTask& t) {
  if (t.int16) {
    simd::depthwise_conv<DwNeonI16>(t);
  } else {
    simd::depthwise_conv<DwNeon>(t);
  }
}

// Interleave::row of the re-layout (simd_impl.h fill_plane) on q registers: 16 cells per
// iteration, the four channels' bytes interleaved by one st4 store; stride 2 takes the even bytes
// of an ld2 load, whose last byte (one past the last one used) must still lie in the row: hence
// q + 17 <= len there. The rest is done by the caller. (The portable loop left this to the
// compiler, whose vectorization came and went with unrelated edits: ResNet-20's re-layout took
// 0.71M and then 1.09M instructions per inference on cortex-a76.)
struct InterleaveNeon : simd::InterleavePortable {  // its copy
  static int64_t row(const uint8_t* s0, const uint8_t* s1, const uint8_t* s2, const uint8_t* s3, uint32_t* dst,
                     int64_t len, int64_t st, uint32_t flip) {
    const uint8x16_t f = vdupq_n_u8(static_cast<uint8_t>(flip));
    int64_t q = 0;
    uint8x16x4_t v;
    if (st == 1) {
      for (; q + 16 <= len; q += 16) {
        v.val[0] = veorq_u8(vld1q_u8(s0 + q), f);
        v.val[1] = veorq_u8(vld1q_u8(s1 + q), f);
        v.val[2] = veorq_u8(vld1q_u8(s2 + q), f);
        v.val[3] = veorq_u8(vld1q_u8(s3 + q), f);
        vst4q_u8(reinterpret_cast<uint8_t*>(dst + q), v);
      }
    } else if (st == 2) {
      for (; q + 17 <= len; q += 16) {
        v.val[0] = veorq_u8(vld2q_u8(s0 + 2 * q).val[0], f);
        v.val[1] = veorq_u8(vld2q_u8(s1 + 2 * q).val[0], f);
        v.val[2] = veorq_u8(vld2q_u8(s2 + 2 * q).val[0], f);
        v.val[3] = veorq_u8(vld2q_u8(s3 + 2 * q).val[0], f);
        vst4q_u8(reinterpret_cast<uint8_t*>(dst + q), v);
      }
    }
    // Rows of 8-15 cells (the 8x8 planes of small networks): 8 more at once.
    if ((st == 1 || st == 2) && q + 8 + (st - 1) <= len) {
      const uint8x8_t f8 = vget_low_u8(f);
      uint8x8x4_t w;
      if (st == 1) {
        w.val[0] = veor_u8(vld1_u8(s0 + q), f8);
        w.val[1] = veor_u8(vld1_u8(s1 + q), f8);
        w.val[2] = veor_u8(vld1_u8(s2 + q), f8);
        w.val[3] = veor_u8(vld1_u8(s3 + q), f8);
      } else {
        w.val[0] = veor_u8(vld2_u8(s0 + 2 * q).val[0], f8);
        w.val[1] = veor_u8(vld2_u8(s1 + 2 * q).val[0], f8);
        w.val[2] = veor_u8(vld2_u8(s2 + 2 * q).val[0], f8);
        w.val[3] = veor_u8(vld2_u8(s3 + 2 * q).val[0], f8);
      }
      vst4_u8(reinterpret_cast<uint8_t*>(dst + q), w);
      q += 8;
    }
    return q;
  }
};

// The ASQ means: the portable loop (simd_impl.h) compiled here, so that an ARM path's means and
// quantizer come from the same place (its trace says so).
inline void plane_means_arm(const float* x, size_t channels, size_t plane, double* out) {
  simd::plane_means_lanes(x, channels, plane, out);
}

// The quantizer (docs/ops.md): v = x / s (IEEE division, as the definition; no reciprocal), then
// FCVTNS rounds v half to even to int32 (NaN -> 0, beyond the int32 range it saturates), clamped
// to [lo, hi] as integers (the same as rounding the clamped value: the bounds are integers), plus
// the zero point; 16 values per iteration, the rest by the portable loop.
inline void quantize_arm(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) {
  const float32x4_t s = vdupq_n_f32(scale);
  const int32x4_t lo = vdupq_n_s32(static_cast<int32_t>(q.lo)), hi = vdupq_n_s32(static_cast<int32_t>(q.hi));
  const int32x4_t zp = vdupq_n_s32(q.zero_point);
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    int32x4_t c[4];
    for (int k = 0; k < 4; ++k) {
      const float32x4_t v = vdivq_f32(vld1q_f32(x + i + 4 * k), s);
      c[k] = vaddq_s32(vminq_s32(vmaxq_s32(vcvtnq_s32_f32(v), lo), hi), zp);
    }
    const uint16x8_t h0 = vcombine_u16(vqmovun_s32(c[0]), vqmovun_s32(c[1]));
    const uint16x8_t h1 = vcombine_u16(vqmovun_s32(c[2]), vqmovun_s32(c[3]));
    vst1q_u8(y + i, vcombine_u8(vqmovn_u16(h0), vqmovn_u16(h1)));
  }
  if (i < count) quantize_portable(x + i, y + i, count - i, scale, q);
}

// relu: y < 0 ? 0 : y (keeps -0 and NaN, as the reference does).
inline float32x4_t relu_f32(float32x4_t y) { return vbslq_f32(vcltq_f32(y, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), y); }

// A path's dot product: the int32 accumulators of one vector (8 cells at b0 + off[s]) for the 8
// channels of a weight block, written to out[o * VL + lane]; steps16 is ConvTask::steps16.
using DotFn = void (*)(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp, const int32_t* init,
                       int32_t* out, int64_t steps16);

template <DotFn kDot, bool kRes, bool kRelu>
void conv_t(const ConvTask& t) {
  const ConvGeometry& g = *t.g;
  const int64_t plane = g.oh * g.ow;
  alignas(16) int32_t acc[kConvBlock * VL];
  alignas(16) float tmp[VL];
  for (int64_t b = t.b0; b < t.b1; ++b) {
    const int64_t o0 = b * kConvBlock;
    const int64_t nvalid = simd::min64(kConvBlock, t.og - o0);
    const int8_t* wb = t.w + b * g.steps * (kConvBlock * 4);
    float mb[kConvBlock], bb[kConvBlock];  // the block's multipliers and biases, once per block
    for (int64_t o = 0; o < nvalid; ++o) mb[o] = t.x_scale * t.w_scale[o0 + o], bb[o] = t.bias[o0 + o];
    for (int64_t v = t.v0; v < t.v1; ++v) {
      kDot(t.buf + g.vstart[v] * 4, g.off, g.steps, wb, t.init + o0, acc, t.steps16);
      const ConvSegment* seg = g.seg + g.vseg[v];
      const int ns = g.vseg[v + 1] - g.vseg[v];
      if (ns == 1 && seg[0].lane == 0 && seg[0].n == VL) {  // 8 whole positions: vector stores
        for (int64_t o = 0; o < nvalid; ++o) {
          const float32x4_t m = vdupq_n_f32(mb[o]);
          const float32x4_t bias = vdupq_n_f32(bb[o]);
          float* yo = t.y + (o0 + o) * plane + seg[0].out;
          const float* ro = kRes ? t.residual + (o0 + o) * plane + seg[0].out : nullptr;
          for (int h = 0; h < 2; ++h) {
            float32x4_t y = vaddq_f32(vmulq_f32(vcvtq_f32_s32(vld1q_s32(acc + o * VL + 4 * h)), m), bias);
            if (kRes) y = vaddq_f32(y, vld1q_f32(ro + 4 * h));
            if (kRelu) y = relu_f32(y);
            vst1q_f32(yo + 4 * h, y);
          }
        }
        continue;
      }
      for (int64_t o = 0; o < nvalid; ++o) {
        const float32x4_t m = vdupq_n_f32(mb[o]);
        const float32x4_t bias = vdupq_n_f32(bb[o]);
        for (int h = 0; h < 2; ++h) {
          float32x4_t y = vmulq_f32(vcvtq_f32_s32(vld1q_s32(acc + o * VL + 4 * h)), m);
          y = vaddq_f32(y, bias);
          if (!kRes && kRelu) y = relu_f32(y);
          vst1q_f32(tmp + 4 * h, y);
        }
        float* yo = t.y + (o0 + o) * plane;
        if (!kRes) {  // each segment 4, 2 and 1 values at a time
          for (int si = 0; si < ns; ++si) {
            const float* src = tmp + seg[si].lane;
            float* dst = yo + seg[si].out;
            int n = seg[si].n;
            for (; n >= 4; n -= 4, src += 4, dst += 4) vst1q_f32(dst, vld1q_f32(src));
            if (n >= 2) vst1_f32(dst, vld1_f32(src)), n -= 2, src += 2, dst += 2;
            if (n >= 1) *dst = *src;
          }
          continue;
        }
        const float* ro = t.residual + (o0 + o) * plane;
        simd::store_segments<kRes, kRelu>(tmp, seg, ns, yo, ro);
      }
    }
  }
}

template <DotFn kDot>
void conv_with(const ConvTask& t) {
  simd::dispatch_epilogue(t, [&](auto res, auto relu) { conv_t<kDot, decltype(res)::value, decltype(relu)::value>(t); });
}

}  // namespace
}  // namespace qexport
