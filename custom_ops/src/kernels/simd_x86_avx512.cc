// The avx512vnni path: AVX-512 F/BW/DQ/VL + VNNI (vpdpbusd: u8 x s8 -> int32, 4 products per
// lane, no intermediate saturation). Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl
// -mavx512vnni; used only when the CPU has them (isa.cc).
//
// Conv: 16 consecutive output positions per vector (pixels in lanes); each step (4 input
// channels x 1 tap) is one 64-byte load of the re-laid-out codes and one vpdpbusd per output
// channel with that channel's 4 weights broadcast; 8 output channels x 2 vectors = 16
// accumulators. Gemm: output channels in lanes (16 per block), the sample's 4 codes broadcast.
#include <immintrin.h>

#include <cmath>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"
#include "simd_x86_common.h"
#include "simd_x86_dw.h"

namespace qexport {
namespace {

using simd::load_i32;

// The dot products of one channel block for 2 (or 1) vectors: sums[p][o][lane] = init[o] + sum
// over steps of the 4 codes at cell base[p] + off[s] times the block's 4 weights of channel o.
// Named accumulators (not arrays) keep GCC's register allocation clean: 16 accumulators, 2 code
// vectors and one broadcast weight stay in registers for the whole loop. A vector whose lanes are
// one whole segment of a full block (out[p] >= 0: its first output index) gets finish_vector's
// epilogue in registers and is stored to the output; the others' sums go to acc + p * 8 * VL for
// finish_vector (conv_block). Measured on an AMD EPYC (Zen 4), interleaved processes, 1 thread:
// single nodes 0.93-0.95x (MobileNetV2's 16 -> 96 expansion at 32x32, where the epilogue is most
// of the work) and 0.97-0.99x (ResNet-18's 3x3 convs at 28x28 and 7x7) of the time with every
// epilogue through memory.
#define QX_ACC2(o) __m512i c0##o = _mm512_set1_epi32(init[o]), c1##o = c0##o;
#define QX_ACC1(o) __m512i c0##o = _mm512_set1_epi32(init[o]);
#define QX_DOT2(o)                                                   \
  {                                                                  \
    const __m512i w = _mm512_set1_epi32(load_i32(wp + 4 * (o)));     \
    c0##o = _mm512_dpbusd_epi32(c0##o, a0, w);                       \
    c1##o = _mm512_dpbusd_epi32(c1##o, a1, w);                       \
  }
#define QX_DOT1(o) c0##o = _mm512_dpbusd_epi32(c0##o, a0, _mm512_set1_epi32(load_i32(wp + 4 * (o))));
#define QX_FINISH(c, o, p)                                      \
  if (out[p] >= 0) {                                            \
    finish_whole<kRes, kRelu>(c, e, o, out[p]);                 \
  } else {                                                      \
    _mm512_store_si512(acc + ((p) * kConvBlock + (o)) * VL, c); \
  }
#define QX_FINISH2(o) QX_FINISH(c0##o, o, 0) QX_FINISH(c1##o, o, 1)
#define QX_FINISH1(o) QX_FINISH(c0##o, o, 0)
#define QX_ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

template <bool kRes, bool kRelu>
__attribute__((noinline)) void dot2(const uint8_t* b0, const uint8_t* b1, const int32_t* off, int64_t steps,
                                    const int8_t* wp, const int32_t* init, const BlockEpilogue& e,
                                    const int64_t* out, int32_t* acc) {
  QX_ALL(QX_ACC2)
  for (int64_t s = 0; s < steps; ++s, wp += kConvBlock * 4) {
    const __m512i a0 = _mm512_loadu_si512(b0 + off[s]);
    const __m512i a1 = _mm512_loadu_si512(b1 + off[s]);
    QX_ALL(QX_DOT2)
  }
  QX_ALL(QX_FINISH2)
}

template <bool kRes, bool kRelu>
__attribute__((noinline)) void dot1(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp,
                                    const int32_t* init, const BlockEpilogue& e, const int64_t* out, int32_t* acc) {
  QX_ALL(QX_ACC1)
  for (int64_t s = 0; s < steps; ++s, wp += kConvBlock * 4) {
    const __m512i a0 = _mm512_loadu_si512(b0 + off[s]);
    QX_ALL(QX_DOT1)
  }
  QX_ALL(QX_FINISH1)
}
#undef QX_ACC2
#undef QX_ACC1
#undef QX_DOT2
#undef QX_DOT1
#undef QX_FINISH
#undef QX_FINISH2
#undef QX_FINISH1
#undef QX_ALL

template <bool kRes, bool kRelu, int PB>
inline void conv_block(const ConvTask& t, const BlockEpilogue& e, int64_t v, int64_t b) {
  const ConvGeometry& g = *t.g;
  const int8_t* wb = t.w + b * g.steps * (kConvBlock * 4);
  const int32_t* init = t.init + b * kConvBlock;
  alignas(64) int32_t acc[PB * kConvBlock * VL];
  int64_t out[PB];
  for (int p = 0; p < PB; ++p) {
    const ConvSegment* s = g.seg + g.vseg[v + p];
    const bool whole = e.nvalid == kConvBlock && g.vseg[v + p + 1] - g.vseg[v + p] == 1 && s->n == VL;
    out[p] = whole ? s->out : -1;
  }
  if (PB == 2) {
    dot2<kRes, kRelu>(t.buf + g.vstart[v] * 4, t.buf + g.vstart[v + PB - 1] * 4, g.off, g.steps, wb, init, e, out, acc);
  } else {
    dot1<kRes, kRelu>(t.buf + g.vstart[v] * 4, g.off, g.steps, wb, init, e, out, acc);
  }
  for (int p = 0; p < PB; ++p)
    if (out[p] < 0)
      finish_vector<kRes, kRelu>(acc + p * kConvBlock * VL, e, g.seg + g.vseg[v + p], g.vseg[v + p + 1] - g.vseg[v + p]);
}

template <bool kRes, bool kRelu>
void conv_t(const ConvTask& t) {
  const int64_t plane = t.g->oh * t.g->ow;
  for (int64_t b = t.b0; b < t.b1; ++b) {
    BlockEpilogue e;
    const int64_t o0 = b * kConvBlock;
    e.nvalid = simd::min64(kConvBlock, t.og - o0);
    for (int64_t o = 0; o < e.nvalid; ++o) {
      e.m[o] = t.x_scale * t.w_scale[o0 + o];
      e.b[o] = t.bias[o0 + o];
      e.y[o] = t.y + (o0 + o) * plane;
      e.r[o] = kRes ? t.residual + (o0 + o) * plane : nullptr;
    }
    int64_t v = t.v0;
    for (; v + 2 <= t.v1; v += 2) conv_block<kRes, kRelu, 2>(t, e, v, b);
    if (v < t.v1) conv_block<kRes, kRelu, 1>(t, e, v, b);
  }
}

void conv(const ConvTask& t) {
  simd::dispatch_epilogue(t, [&](auto res, auto relu) { conv_t<decltype(res)::value, decltype(relu)::value>(t); });
}

void relayout(const ConvTask& t) { simd::conv_relayout<Interleave>(t); }

uint8_t max_code(const uint8_t* x, size_t count) {
  __m512i mx = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= count; i += 64) mx = _mm512_max_epu8(mx, _mm512_loadu_si512(x + i));
  if (i < count) mx = _mm512_max_epu8(mx, _mm512_maskz_loadu_epi8((~__mmask64{0}) >> (64 - (count - i)), x + i));
  __m256i m = _mm256_max_epu8(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
  __m128i v = _mm_max_epu8(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  v = _mm_max_epu8(v, _mm_srli_si128(v, 8));
  v = _mm_max_epu8(v, _mm_srli_si128(v, 4));
  v = _mm_max_epu8(v, _mm_srli_si128(v, 2));
  v = _mm_max_epu8(v, _mm_srli_si128(v, 1));
  return static_cast<uint8_t>(_mm_cvtsi128_si32(v) & 0xFF);
}

// ------------------------------------------------------------------------------ gemm
template <int PB>
inline void gemm_block(const GemmTask& t, int64_t n, int64_t b) {
  const int64_t kg = t.kp / 4;
  const int8_t* wb = t.w + b * kg * (VL * 4);
  __m512i acc[PB];
  const __m512i i0 = _mm512_loadu_si512(t.init + b * VL);
  for (int p = 0; p < PB; ++p) acc[p] = i0;
  const uint8_t* xr[PB];
  for (int p = 0; p < PB; ++p) xr[p] = t.buf + (n + p - t.n0) * t.kp;
  for (int64_t k = 0; k < kg; ++k) {
    const __m512i w = _mm512_loadu_si512(wb + k * (VL * 4));
    for (int p = 0; p < PB; ++p) acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_set1_epi32(load_i32(xr[p] + 4 * k)), w);
  }
  const int64_t o0 = b * VL;
  const int64_t nvalid = simd::min64(VL, t.o - o0);
  const __mmask16 mask = static_cast<__mmask16>((1u << nvalid) - 1u);
  const __m512 ws = _mm512_maskz_loadu_ps(mask, t.w_scale + o0);
  const __m512 bias = _mm512_maskz_loadu_ps(mask, t.bias + o0);
  for (int p = 0; p < PB; ++p) {
    const float xs = t.x_scale[t.x_scale_per_sample ? n + p : 0];
    const __m512 m = _mm512_mul_ps(_mm512_set1_ps(xs), ws);
    _mm512_mask_storeu_ps(t.y + (n + p) * t.o + o0, mask, epilogue(acc[p], m, bias, t.relu));
  }
}

void gemm(const GemmTask& t) {
  simd::gemm_rows(t);
  for (int64_t b = t.b0; b < t.b1; ++b) {
    int64_t n = t.n0;
    for (; n + 4 <= t.n1; n += 4) gemm_block<4>(t, n, b);
    for (; n < t.n1; ++n) gemm_block<1>(t, n, b);
  }
}

// ------------------------------------------------------------------------------ means
// The 8-lane means (docs/ops.md): one 8 x float64 register per plane holds its 8 lanes, so each
// instruction adds 8 consecutive positions; 4 planes at a time keep 4 independent chains in
// flight. The tail is a masked load (+0.0 in the missing positions, as defined).
template <int G>
inline void means_g(const float* x, size_t plane, double* out) {
  __m512d acc[G];
  for (int j = 0; j < G; ++j) acc[j] = _mm512_setzero_pd();
  size_t i = 0;
  for (; i + 8 <= plane; i += 8) {
    for (int j = 0; j < G; ++j) acc[j] = _mm512_add_pd(acc[j], _mm512_cvtps_pd(_mm256_loadu_ps(x + j * plane + i)));
  }
  if (i < plane) {
    const __mmask8 m = static_cast<__mmask8>((1u << (plane - i)) - 1u);
    for (int j = 0; j < G; ++j) {
      acc[j] = _mm512_add_pd(acc[j], _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + j * plane + i)));
    }
  }
  for (int j = 0; j < G; ++j) {
    alignas(64) double l[8];
    _mm512_store_pd(l, acc[j]);
    out[j] = mean_of_lanes(l, plane);
  }
}

void plane_means(const float* x, size_t channels, size_t plane, double* out) {
  size_t c = 0;
  for (; c + 4 <= channels; c += 4) means_g<4>(x + c * plane, plane, out + c);
  for (; c < channels; ++c) means_g<1>(x + c * plane, plane, out + c);
}

// ------------------------------------------------------------------------------ quantize
// codes = clamp(rint(x / s), lo, hi) + zp with x * (1/s) in place of the division, recomputed
// with the division for the rare vectors where the two could round differently: a lane whose
// x * (1/s) lies within simd::quantize_margin of a half-integer (vreduceps gives the distance
// to the nearest integer). Lanes beyond the clamp range may be flagged or not: they clamp
// either way.
template <bool kSigned>
struct Quantize16 {
  __m512 vr, vs, lo, hi, near;
  __m512i abs_mask, zp;
  Quantize16(float scale, float r, const QuantParams& q)  // r = 1 / scale
      : vr(_mm512_set1_ps(r)),
        vs(_mm512_set1_ps(scale)),
        lo(_mm512_set1_ps(q.lo)),
        hi(_mm512_set1_ps(q.hi)),
        near(_mm512_set1_ps(0.5f - simd::quantize_margin(q))),
        abs_mask(_mm512_set1_epi32(0x7FFFFFFF)),
        zp(_mm512_set1_epi32(q.zero_point)) {}
  // The lanes of v = x * (1/s) within the margin of a half-integer (vreduceps: v - rint(v)).
  __mmask16 near_half(__m512 v) const {
    const __m512 frac = _mm512_reduce_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 dist = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(frac), abs_mask));
    return _mm512_cmp_ps_mask(dist, near, _CMP_GE_OQ);
  }
  // The 16 codes of v (x / s, or x * (1/s) where that rounds the same).
  __m128i codes(__m512 v) const {
    // NaN -> 0: max(NaN, lo) is lo, which is 0 for unsigned codes; signed codes need the blend.
    if (kSigned) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_setzero_ps());
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i c = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // half to even
    if (kSigned) c = _mm512_add_epi32(c, zp);
    return _mm512_cvtepi32_epi8(c);
  }
};

// Two vectors share one test for the division (the test and its branch were about 40% of the
// quantizer's time on an AMD EPYC (Zen 4); two at a time: 0.8x the time per value, measured alone).
template <bool kSigned>
void quantize_t(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) {
  const float r = 1.0f / scale;
  if (!std::isnormal(scale) || !std::isnormal(r)) {
    quantize_portable(x, y, count, scale, q);
    return;
  }
  const Quantize16<kSigned> k(scale, r, q);
  size_t i = 0;
  for (; i + 2 * VL <= count; i += 2 * VL) {
    const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + VL);
    __m512 v0 = _mm512_mul_ps(x0, k.vr), v1 = _mm512_mul_ps(x1, k.vr);
    const __mmask16 n0 = k.near_half(v0), n1 = k.near_half(v1);
    if (_kortestz_mask16_u8(n0, n1) == 0) {
      if (n0) v0 = _mm512_div_ps(x0, k.vs);
      if (n1) v1 = _mm512_div_ps(x1, k.vs);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), k.codes(v0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i + VL), k.codes(v1));
  }
  for (; i < count; i += VL) {
    const size_t n = count - i < static_cast<size_t>(VL) ? count - i : VL;
    const __mmask16 mask = static_cast<__mmask16>((n == VL) ? 0xFFFFu : ((1u << n) - 1u));
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + i);
    __m512 v = _mm512_mul_ps(xv, k.vr);
    if (k.near_half(v)) v = _mm512_div_ps(xv, k.vs);
    _mm_mask_storeu_epi8(y + i, mask, k.codes(v));
  }
}

void quantize(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) {
  if (q.is_signed) {
    quantize_t<true>(x, y, count, scale, q);
  } else {
    quantize_t<false>(x, y, count, scale, q);
  }
}

// The float32 depthwise plane kernel on zmm vectors, 8 accumulators, the multiply-add as one
// vfmadd (exact there: integers below 2^24).
struct DwAvx512 : simd::DwGeneric<simd::DwV16, 8> {
  static V fma(V a, float w, V p) { return _mm512_fmadd_ps(_mm512_set1_ps(w), p, a); }
  static V codes(const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

// The ymm kernels of simd_x86_dw.h (int16 lanes where the sums fit int16, the channel kernels on
// small planes) and the zmm float32 plane kernel for the rest. Measured on an AMD EPYC (Zen 4,
// 2026-12-03; interleaved processes, batch 1, 1 thread): with the ymm kernels MobileNetV2 CIFAR
// took 0.81x and MobileNetV2@224 0.87-0.90x the time of the zmm float32 plane kernel everywhere
// (its depthwise nodes 33% of the time by perf, against 16% after); an int16 plane kernel on zmm
// (32 lanes) was no faster than on ymm (1.00x at 224, 1.03-1.08x on CIFAR: Zen 4 splits a zmm
// operation in two).
void depthwise(const DepthwiseTask& t) {
  if (t.int16 || t.tile_h > 0) {
    depthwise_ymm(t);
  } else {
    simd::depthwise_conv<DwAvx512>(t);
  }
}

// Constant-initialized (no code runs when the library loads: this file may hold instructions
// the CPU lacks).
constexpr SimdKernels kKernels{Isa::kAvx512Vnni, VL, VL, false, &relayout, &conv, &gemm, &plane_means, &quantize, &max_code,
                               kConvBlock, false, 2, 1, &depthwise, 3};

}  // namespace

const SimdKernels* simd_kernels_avx512vnni() noexcept { return &kKernels; }

}  // namespace qexport
