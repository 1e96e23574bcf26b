// The avx2 path: AVX2 (x86-64-v3 without FMA), for x86 CPUs without AVX-512 VNNI. Compiled
// with -mavx2; used only when the CPU has it (isa.cc).
//
// Dot products: vpmaddubsw (u8 x s8 -> int16 pair sums, which SATURATE) then vpmaddwd with ones
// (-> int32) and vpaddd (wraps modulo 2^32). The pair sums are exact only when
// 2 * max code * max |w| <= 32767 (ConvTask::safe16: e.g. 4-bit codes with any weight format, 8-bit
// codes with |w| <= 64); otherwise each code is split into its nibbles, c = 16 c_hi + c_lo, and
// both halves (pair sums <= 2 * 15 * 128) are multiplied separately.
//
// Conv: the cell layout of simd.h, 8 positions per vector (a 32-byte load per step) and the 8
// output channels of a weight block in 8 accumulators. Gemm: 8 output channels per block.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"
#include "simd_x86_dw.h"

namespace qexport {
namespace {

using simd::load_i32;

constexpr int VL = 8;


// sum over 4 bytes of (u8 a) * (s8 w) per int32 lane, exactly (see above).
template <bool kSafe16>
inline __m256i dot4(__m256i a, __m256i w, __m256i ones) {
  if (kSafe16) return _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones);
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(a, nib);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), nib);
  const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, w), ones);
  const __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, w), ones);
  return _mm256_add_epi32(plo, _mm256_slli_epi32(phi, 4));
}

// ------------------------------------------------------------------------------ conv
#define QX_ACC(o) __m256i c##o = _mm256_set1_epi32(init[o]);
#define QX_DOT(o) c##o = _mm256_add_epi32(c##o, dot4<kSafe16>(a, _mm256_set1_epi32(load_i32(wp + 4 * (o))), ones));
// Two or four steps: their int16 pair sums added (exact when 4 or 8 * max code * max |w| <= 32767,
// ConvTask::sum16), then one vpmaddwd: 3 multiplies per channel for 2 steps instead of 4, 5 for 4
// instead of 8. QX_PAIRS(a, w, o): the pair sums of activations a and channel o's weights at w.
#define QX_PAIRS(a, w, o) _mm256_maddubs_epi16(a, _mm256_set1_epi32(load_i32((w) + 4 * (o))))
#define QX_DOT2(o) \
  c##o = _mm256_add_epi32(c##o, _mm256_madd_epi16(_mm256_add_epi16(QX_PAIRS(a, wp, o), QX_PAIRS(a1, w1, o)), ones));
#define QX_DOT4(o)                                                                                        \
  c##o = _mm256_add_epi32(c##o, _mm256_madd_epi16(_mm256_add_epi16(_mm256_add_epi16(QX_PAIRS(a, wp, o),   \
                                                                                    QX_PAIRS(a1, w1, o)), \
                                                                   _mm256_add_epi16(QX_PAIRS(a2, w2, o),  \
                                                                                    QX_PAIRS(a3, w3, o))), \
                                                  ones));
// Two steps of nibble-split codes (not safe16): each half's int16 pair sums of both steps added
// (exact: 2 * 2 * 15 * 128 < 2^15), then one vpmaddwd per half: 4 multiplies per channel for two
// steps instead of 8.
#define QX_NIB2(o)                                                                                           \
  {                                                                                                        \
    const __m256i wa = _mm256_set1_epi32(load_i32(wp + 4 * (o))), wb = _mm256_set1_epi32(load_i32(w1 + 4 * (o))); \
    const __m256i plo = _mm256_add_epi16(_mm256_maddubs_epi16(l0, wa), _mm256_maddubs_epi16(l1, wb));       \
    const __m256i phi = _mm256_add_epi16(_mm256_maddubs_epi16(h0, wa), _mm256_maddubs_epi16(h1, wb));       \
    c##o = _mm256_add_epi32(c##o, _mm256_add_epi32(_mm256_madd_epi16(plo, ones),                          \
                                                   _mm256_slli_epi32(_mm256_madd_epi16(phi, ones), 4)));   \
  }
#define QX_OUT(o) out(o, c##o);
#define QX_ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

// The 8 sums of a dot product stored as they are ...
struct StoreSums {
  int32_t* acc;
  void operator()(int o, __m256i c) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + o * VL), c); }
};

// ... or through the epilogue into 8 whole positions of each of the block's 8 channels (ConvTask:
// y = float(acc) * m + bias [+ residual] [relu]), without the round trip through memory.
template <bool kRes, bool kRelu>
struct Epilogue {
  const float* m;
  const float* bias;
  float* y;          // channel 0 of the block at the first position
  const float* r;    // the residual, likewise (kRes)
  int64_t plane;     // from one channel to the next
  void operator()(int o, __m256i c) const {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_broadcast_ss(m + o));
    v = _mm256_add_ps(v, _mm256_broadcast_ss(bias + o));
    if (kRes) v = _mm256_add_ps(v, _mm256_loadu_ps(r + o * plane));
    if (kRelu) v = relu_ymm(v);
    _mm256_storeu_ps(y + o * plane, v);
  }
};

// kSafe16: ConvTask::safe16; kSum: ConvTask::sum16 (1, or 2 or 4 with kSafe16); out(o, sums of
// channel o) takes the results.
template <bool kSafe16, int kSum, typename Out>
__attribute__((noinline)) void dot(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp,
                                   const int32_t* init, Out out) {
  const __m256i ones = _mm256_set1_epi16(1);
  QX_ALL(QX_ACC)
  int64_t s = 0;
  if (kSafe16 && kSum >= 4) {
    for (; s + 4 <= steps; s += 4, wp += 4 * kConvBlock * 4) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s]));
      const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s + 1]));
      const __m256i a2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s + 2]));
      const __m256i a3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s + 3]));
      const int8_t* w1 = wp + kConvBlock * 4;
      const int8_t* w2 = wp + 2 * kConvBlock * 4;
      const int8_t* w3 = wp + 3 * kConvBlock * 4;
      QX_ALL(QX_DOT4)
    }
  }
  if (!kSafe16 && kSum >= 2) {
    const __m256i nib = _mm256_set1_epi8(0x0F);
    for (; s + 2 <= steps; s += 2, wp += 2 * kConvBlock * 4) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s]));
      const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s + 1]));
      const __m256i l0 = _mm256_and_si256(a, nib), h0 = _mm256_and_si256(_mm256_srli_epi16(a, 4), nib);
      const __m256i l1 = _mm256_and_si256(a1, nib), h1 = _mm256_and_si256(_mm256_srli_epi16(a1, 4), nib);
      const int8_t* w1 = wp + kConvBlock * 4;
      QX_ALL(QX_NIB2)
    }
  }
  if (kSafe16 && kSum >= 2) {
    for (; s + 2 <= steps; s += 2, wp += 2 * kConvBlock * 4) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s]));
      const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s + 1]));
      const int8_t* w1 = wp + kConvBlock * 4;
      QX_ALL(QX_DOT2)
    }
  }
  for (; s < steps; ++s, wp += kConvBlock * 4) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + off[s]));
    QX_ALL(QX_DOT)
  }
  QX_ALL(QX_OUT)
}
#undef QX_ACC
#undef QX_DOT
#undef QX_PAIRS
#undef QX_DOT2
#undef QX_DOT4
#undef QX_OUT
#undef QX_NIB2
#undef QX_ALL

// dst[0 .. n) = the first n lanes of v (n <= 8): 4, 2 and 1 at a time, nothing past dst + n.
inline void store_front(float* dst, __m256 v, int n) {
  __m128 part = _mm256_castps256_ps128(v);
  if (n >= 4) {
    _mm_storeu_ps(dst, part);
    dst += 4, n -= 4;
    part = _mm256_extractf128_ps(v, 1);
    if (n == 4) {
      _mm_storeu_ps(dst, part);
      return;
    }
  }
  if (n >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), part);
    dst += 2, n -= 2;
    part = _mm_movehl_ps(part, part);
  }
  if (n >= 1) _mm_store_ss(dst, part);
}

template <bool kRes, bool kRelu>
void conv_t(const ConvTask& t) {
  const ConvGeometry& g = *t.g;
  const int64_t plane = g.oh * g.ow;
  alignas(32) int32_t acc[kConvBlock * VL];
  alignas(32) float tmp[VL];
  for (int64_t b = t.b0; b < t.b1; ++b) {
    const int64_t o0 = b * kConvBlock;
    const int64_t nvalid = simd::min64(kConvBlock, t.og - o0);
    float m[kConvBlock], bias[kConvBlock];
    for (int64_t o = 0; o < nvalid; ++o) {
      m[o] = t.x_scale * t.w_scale[o0 + o];
      bias[o] = t.bias[o0 + o];
    }
    const int8_t* wb = t.w + b * g.steps * (kConvBlock * 4);
    for (int64_t v = t.v0; v < t.v1; ++v) {
      const ConvSegment* seg = g.seg + g.vseg[v];
      const int ns = g.vseg[v + 1] - g.vseg[v];
      const bool full = ns == 1 && seg[0].lane == 0 && seg[0].n == VL;
      auto run = [&](auto out) {
        const uint8_t* b0 = t.buf + g.vstart[v] * 4;
        if (t.safe16 && t.sum16 == 4) {
          dot<true, 4>(b0, g.off, g.steps, wb, t.init + o0, out);
        } else if (t.safe16 && t.sum16 == 2) {
          dot<true, 2>(b0, g.off, g.steps, wb, t.init + o0, out);
        } else if (t.safe16) {
          dot<true, 1>(b0, g.off, g.steps, wb, t.init + o0, out);
        } else {
          dot<false, 2>(b0, g.off, g.steps, wb, t.init + o0, out);
        }
      };
      if (full) {  // 8 whole positions: the epilogue from the registers (a partial block: from acc)
        const int64_t at = o0 * plane + seg[0].out;
        const Epilogue<kRes, kRelu> epi{m, bias, t.y + at, kRes ? t.residual + at : nullptr, plane};
        if (nvalid == kConvBlock) {
          run(epi);
          continue;
        }
        run(StoreSums{acc});
        for (int o = 0; o < nvalid; ++o) epi(o, _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + o * VL)));
        continue;
      }
      run(StoreSums{acc});
      if (!kRes) {  // each segment's lanes moved to the front, stored 4, 2 and 1 at a time
        for (int64_t o = 0; o < nvalid; ++o) {
          __m256 y = _mm256_mul_ps(
              _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + o * VL))),
              _mm256_set1_ps(m[o]));
          y = _mm256_add_ps(y, _mm256_set1_ps(bias[o]));
          if (kRelu) y = relu_ymm(y);
          float* yo = t.y + (o0 + o) * plane;
          for (int si = 0; si < ns; ++si) {
            const __m256 v = seg[si].lane == 0 ? y
                                               : _mm256_permutevar8x32_ps(
                                                     y, _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                                         _mm256_set1_epi32(seg[si].lane)));
            store_front(yo + seg[si].out, v, seg[si].n);
          }
        }
        continue;
      }
      for (int64_t o = 0; o < nvalid; ++o) {
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + o * VL))),
                                 _mm256_set1_ps(m[o]));
        y = _mm256_add_ps(y, _mm256_set1_ps(bias[o]));
        float* yo = t.y + (o0 + o) * plane;
        const float* ro = kRes ? t.residual + (o0 + o) * plane : nullptr;
        if (!kRes && kRelu) y = relu_ymm(y);
        _mm256_store_ps(tmp, y);
        simd::store_segments<kRes, kRelu>(tmp, seg, ns, yo, ro);
      }
    }
  }
}

void conv(const ConvTask& t) {
  simd::dispatch_epilogue(t, [&](auto res, auto relu) { conv_t<decltype(res)::value, decltype(relu)::value>(t); });
}

// The 16 bytes p[0], p[2], ..., p[30] (p[31] is read too).
inline __m128i even_bytes(const uint8_t* p) {
  const __m128i m = _mm_set1_epi16(0x00FF);
  return _mm_packus_epi16(_mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), m),
                          _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)), m));
}

// The 8 bytes p[0], p[2], ..., p[14] in the low half (p[15] is read too).
inline __m128i even_bytes8(const uint8_t* p) {
  const __m128i m = _mm_set1_epi16(0x00FF);
  return _mm_packus_epi16(_mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), m), _mm_setzero_si128());
}

// Re-layout rows with stride 1 or 2, 16 cells per iteration (at stride 2 the last load's byte
// after the last one used must lie in the row: q + 17 <= len); the rest is done by the caller.
struct Interleave {
  static int64_t row(const uint8_t* s0, const uint8_t* s1, const uint8_t* s2, const uint8_t* s3, uint32_t* dst,
                     int64_t len, int64_t st, uint32_t flip) {
    if (st != 1 && st != 2) return 0;
    const __m128i f = _mm_set1_epi32(static_cast<int>(flip));
    int64_t q = 0;
    // 16 (8) cells' bytes of one row: p[q ...] or at stride 2 p[2q], p[2q + 2], ...
    auto bytes16 = [&](const uint8_t* p) {
      return st == 1 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + q)) : even_bytes(p + 2 * q);
    };
    auto bytes8 = [&](const uint8_t* p) {
      return st == 1 ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + q)) : even_bytes8(p + 2 * q);
    };
    for (; q + 16 + (st - 1) <= len; q += 16) {
      const __m128i r0 = bytes16(s0), r1 = bytes16(s1), r2 = bytes16(s2), r3 = bytes16(s3);
      const __m128i a = _mm_unpacklo_epi8(r0, r1), b = _mm_unpackhi_epi8(r0, r1);
      const __m128i c = _mm_unpacklo_epi8(r2, r3), d = _mm_unpackhi_epi8(r2, r3);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q), _mm_xor_si128(_mm_unpacklo_epi16(a, c), f));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q + 4), _mm_xor_si128(_mm_unpackhi_epi16(a, c), f));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q + 8), _mm_xor_si128(_mm_unpacklo_epi16(b, d), f));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q + 12), _mm_xor_si128(_mm_unpackhi_epi16(b, d), f));
    }
    // Rows of 4-15 cells (the 4x4 to 8x8 planes of small networks): 8 then 4 cells at a time.
    if (q + 8 + (st - 1) <= len) {
      const __m128i a = _mm_unpacklo_epi8(bytes8(s0), bytes8(s1)), c = _mm_unpacklo_epi8(bytes8(s2), bytes8(s3));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q), _mm_xor_si128(_mm_unpacklo_epi16(a, c), f));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q + 4), _mm_xor_si128(_mm_unpackhi_epi16(a, c), f));
      q += 8;
    }
    if (st == 1 && q + 4 <= len) {
      auto bytes4 = [&](const uint8_t* p) { return _mm_cvtsi32_si128(static_cast<int>(load_i32(p + q))); };
      const __m128i a = _mm_unpacklo_epi8(bytes4(s0), bytes4(s1)), c = _mm_unpacklo_epi8(bytes4(s2), bytes4(s3));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + q), _mm_xor_si128(_mm_unpacklo_epi16(a, c), f));
      q += 4;
    }
    return q;
  }

  static void copy(uint32_t* dst, const uint32_t* src, int64_t n) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(uint32_t));
  }
};

void relayout(const ConvTask& t) { simd::conv_relayout<Interleave>(t); }

// ------------------------------------------------------------------------------ gemm
template <bool kSafe16>
void gemm_t(const GemmTask& t) {
  simd::gemm_rows(t);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t kg = t.kp / 4;
  alignas(32) float tmp[VL];
  for (int64_t b = t.b0; b < t.b1; ++b) {
    const int8_t* wb = t.w + b * kg * (VL * 4);
    const int64_t o0 = b * VL;
    const int64_t nvalid = simd::min64(VL, t.o - o0);
    float ws[VL] = {}, bs[VL] = {};
    for (int64_t o = 0; o < nvalid; ++o) ws[o] = t.w_scale[o0 + o], bs[o] = t.bias[o0 + o];
    const __m256 wsv = _mm256_loadu_ps(ws), bias = _mm256_loadu_ps(bs);
    const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.init + o0));
    for (int64_t n = t.n0; n < t.n1; ++n) {
      const uint8_t* xr = t.buf + (n - t.n0) * t.kp;
      __m256i acc = i0;
      for (int64_t k = 0; k < kg; ++k) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + k * (VL * 4)));
        acc = _mm256_add_epi32(acc, dot4<kSafe16>(_mm256_set1_epi32(load_i32(xr + 4 * k)), w, ones));
      }
      const __m256 m = _mm256_mul_ps(_mm256_set1_ps(t.x_scale[t.x_scale_per_sample ? n : 0]), wsv);
      __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), m), bias);
      if (t.relu) y = relu_ymm(y);
      float* out = t.y + n * t.o + o0;
      if (nvalid == VL) {
        _mm256_storeu_ps(out, y);
      } else {
        _mm256_store_ps(tmp, y);
        for (int64_t o = 0; o < nvalid; ++o) out[o] = tmp[o];
      }
    }
  }
}

void gemm(const GemmTask& t) {
  if (t.safe16) {
    gemm_t<true>(t);
  } else {
    gemm_t<false>(t);
  }
}

// ------------------------------------------------------------------------------ means
// The 8-lane means (docs/ops.md): two 4 x float64 registers per plane hold lanes 0-3 and 4-7,
// so each pair of instructions adds 8 consecutive positions; 4 planes at a time keep 8
// independent chains in flight. The tail is a masked load (+0.0 in the missing positions).
template <int G>
inline void means_g(const float* x, size_t plane, double* out) {
  __m256d lo[G], hi[G];
  for (int j = 0; j < G; ++j) lo[j] = hi[j] = _mm256_setzero_pd();
  size_t i = 0;
  for (; i + 8 <= plane; i += 8) {
    for (int j = 0; j < G; ++j) {
      lo[j] = _mm256_add_pd(lo[j], _mm256_cvtps_pd(_mm_loadu_ps(x + j * plane + i)));
      hi[j] = _mm256_add_pd(hi[j], _mm256_cvtps_pd(_mm_loadu_ps(x + j * plane + i + 4)));
    }
  }
  if (i < plane) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(plane - i)), idx);
    for (int j = 0; j < G; ++j) {
      const __m256 v = _mm256_maskload_ps(x + j * plane + i, mask);
      lo[j] = _mm256_add_pd(lo[j], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
      hi[j] = _mm256_add_pd(hi[j], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
  }
  for (int j = 0; j < G; ++j) {
    alignas(32) double l[8];
    _mm256_store_pd(l, lo[j]);
    _mm256_store_pd(l + 4, hi[j]);
    out[j] = mean_of_lanes(l, plane);
  }
}

void plane_means(const float* x, size_t channels, size_t plane, double* out) {
  size_t c = 0;
  for (; c + 4 <= channels; c += 4) means_g<4>(x + c * plane, plane, out + c);
  for (; c < channels; ++c) means_g<1>(x + c * plane, plane, out + c);
}

// ------------------------------------------------------------------------------ quantize
// As the avx512vnni quantizer (x * (1/s), and the division for vectors that come within
// simd::quantize_margin of a rounding boundary), 32 codes per iteration; the tail is portable.
template <bool kSigned>
inline __m256i codes8(const float* x, __m256 vr, __m256 vs, __m256 lo, __m256 hi, __m256 near) {
  const __m256 xv = _mm256_loadu_ps(x);
  const __m256 v = _mm256_mul_ps(xv, vr);
  __m256 rq = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 dist = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, rq));
  if (_mm256_movemask_ps(_mm256_cmp_ps(dist, near, _CMP_GE_OQ)))
    rq = _mm256_round_ps(_mm256_div_ps(xv, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (kSigned) rq = _mm256_blendv_ps(rq, _mm256_setzero_ps(), _mm256_cmp_ps(rq, rq, _CMP_UNORD_Q));
  // Rounding then clamping to the integer bounds is clamping then rounding; max(NaN, lo) is lo
  // (0 for unsigned codes). The clamped values are integers: the conversion is exact.
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(rq, lo), hi));
}

template <bool kSigned>
void quantize_t(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) {
  const float r = 1.0f / scale;
  if (!std::isnormal(scale) || !std::isnormal(r)) {
    quantize_portable(x, y, count, scale, q);
    return;
  }
  const __m256 vr = _mm256_set1_ps(r), vs = _mm256_set1_ps(scale);
  const __m256 lo = _mm256_set1_ps(q.lo), hi = _mm256_set1_ps(q.hi);
  const __m256 near = _mm256_set1_ps(0.5f - simd::quantize_margin(q));
  const __m256i zp = _mm256_set1_epi32(q.zero_point);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  size_t i = 0;
  for (; i + 32 <= count; i += 32) {
    __m256i c0 = codes8<kSigned>(x + i, vr, vs, lo, hi, near);
    __m256i c1 = codes8<kSigned>(x + i + 8, vr, vs, lo, hi, near);
    __m256i c2 = codes8<kSigned>(x + i + 16, vr, vs, lo, hi, near);
    __m256i c3 = codes8<kSigned>(x + i + 24, vr, vs, lo, hi, near);
    if (kSigned) {
      c0 = _mm256_add_epi32(c0, zp), c1 = _mm256_add_epi32(c1, zp);
      c2 = _mm256_add_epi32(c2, zp), c3 = _mm256_add_epi32(c3, zp);
    }
    // Codes are 0..255: the saturating packs are exact; they interleave 128-bit lanes.
    const __m256i w01 = _mm256_packs_epi32(c0, c1), w23 = _mm256_packs_epi32(c2, c3);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), bytes);
  }
  if (i < count) quantize_portable(x + i, y + i, count - i, scale, q);
}

void quantize(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) {
  if (q.is_signed) {
    quantize_t<true>(x, y, count, scale, q);
  } else {
    quantize_t<false>(x, y, count, scale, q);
  }
}

uint8_t max_code(const uint8_t* x, size_t count) {
  __m256i mx = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 32 <= count; i += 32) mx = _mm256_max_epu8(mx, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
  alignas(32) uint8_t lanes[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), mx);
  uint8_t m = 0;
  for (uint8_t v : lanes) m = v > m ? v : m;
  for (; i < count; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

void depthwise(const DepthwiseTask& t) { depthwise_ymm(t); }

// Constant-initialized (no code runs when the library loads: this file may hold instructions
// the CPU lacks).
constexpr SimdKernels kKernels{Isa::kAvx2, VL, VL, false, &relayout, &conv, &gemm, &plane_means, &quantize, &max_code,
                               kConvBlock, false, 1, 1, &depthwise, 3};

}  // namespace

const SimdKernels* simd_kernels_avx2() noexcept { return &kKernels; }

}  // namespace qexport
