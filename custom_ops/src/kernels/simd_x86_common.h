// AVX-512 code shared by the avx512vnni and amx paths (simd_x86_avx512.cc, simd_x86_amx.cc),
// compiled by each with its own flags. Internal linkage only (see simd_impl.h).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"

namespace qexport {
namespace {  // NOLINT: internal linkage on purpose

constexpr int VL = 16;  // float / int32 lanes of a zmm

// relu: y < 0 ? 0 : y (keeps -0 and NaN, as the reference does).
inline __m512 relu_ps(__m512 y) {
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps());
}

// y = float(acc) * m; y = y + b; relu -- separate IEEE operations (no FMA).
inline __m512 epilogue(__m512i acc, __m512 m, __m512 b, bool relu) {
  __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), m), b);
  return relu ? relu_ps(y) : y;
}

// Per channel block: the epilogue constants of its (up to) 16 channels.
struct BlockEpilogue {
  int64_t nvalid;
  float m[16];        // x_scale * w_scale[o]
  float b[16];
  float* y[16];
  const float* r[16];  // residual planes, or nullptr
};

// The epilogue of channel o's sums c for one whole vector of VL outputs from output index out.
template <bool kRes, bool kRelu>
inline void finish_whole(__m512i c, const BlockEpilogue& e, int64_t o, int64_t out) {
  __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(c), _mm512_set1_ps(e.m[o]));
  y = _mm512_add_ps(y, _mm512_set1_ps(e.b[o]));
  if (kRes) y = _mm512_add_ps(y, _mm512_loadu_ps(e.r[o] + out));
  if (kRelu) y = relu_ps(y);
  _mm512_storeu_ps(e.y[o] + out, y);
}

// The epilogue of one vector for the block's channels; kRes: add the residual, then ReLU.
template <bool kRes, bool kRelu>
inline void finish_vector(const int32_t* acc, const BlockEpilogue& e, const ConvSegment* seg, int ns) {
  if (ns == 1 && seg[0].lane == 0 && seg[0].n == VL) {  // the common case: one whole vector
    for (int64_t o = 0; o < e.nvalid; ++o) finish_whole<kRes, kRelu>(_mm512_load_si512(acc + o * VL), e, o, seg[0].out);
    return;
  }
  for (int64_t o = 0; o < e.nvalid; ++o) {
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(acc + o * VL)), _mm512_set1_ps(e.m[o]));
    y = _mm512_add_ps(y, _mm512_set1_ps(e.b[o]));
    if (!kRes && kRelu) y = relu_ps(y);
    for (int s = 0; s < ns; ++s) {
      const __mmask16 m = static_cast<__mmask16>((1u << seg[s].n) - 1u);
      __m512 u = y;
      if (seg[s].lane != 0) u = _mm512_maskz_compress_ps(static_cast<__mmask16>(m << seg[s].lane), y);
      if (kRes) {
        u = _mm512_add_ps(u, _mm512_maskz_loadu_ps(m, e.r[o] + seg[s].out));
        if (kRelu) u = relu_ps(u);
      }
      _mm512_mask_storeu_ps(e.y[o] + seg[s].out, m, u);
    }
  }
}

// Bytes s[0], s[st], ..., s[(n-1) st] for n <= 16, st = 1 or 2 (reads nothing beyond).
inline __m128i load16(const uint8_t* s, int64_t st, int64_t n) {
  if (st == 1) {
    if (n == 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    return _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1u), s);
  }
  const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << (2 * n - 1)) - 1u);
  return _mm256_cvtepi16_epi8(_mm256_maskz_loadu_epi8(m, s));  // the low (even) byte of each word
}

// 16 cells from 16 bytes of each of 4 rows: cell k = r0[k] | r1[k] << 8 | r2[k] << 16 | r3[k] << 24.
inline __m512i cells16(__m128i r0, __m128i r1, __m128i r2, __m128i r3) {
  __m512i v = _mm512_castsi128_si512(r0);
  v = _mm512_inserti32x4(v, r1, 1);
  v = _mm512_inserti32x4(v, r2, 2);
  v = _mm512_inserti32x4(v, r3, 3);
  // 128-bit lane j holds row j; dword L of it is r_j[4L .. 4L+3]. A 4x4 dword transpose puts
  // r_0..r_3 [4L .. 4L+3] in lane L, then a 4x4 byte transpose inside each lane gives the cells.
  const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i bytes = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  return _mm512_shuffle_epi8(_mm512_permutexvar_epi32(idx, v), bytes);
}

// Re-layout rows with stride 1 or 2, 16 cells at a time (see simd::conv_relayout).
struct Interleave {
  static int64_t row(const uint8_t* s0, const uint8_t* s1, const uint8_t* s2, const uint8_t* s3, uint32_t* dst,
                     int64_t len, int64_t st, uint32_t flip) {
    if (st > 2) return 0;
    const __m512i f = _mm512_set1_epi32(static_cast<int>(flip));
    int64_t q = 0;
    for (; q + 16 <= len; q += 16) {
      const __m512i v = cells16(load16(s0 + q * st, st, 16), load16(s1 + q * st, st, 16),
                                load16(s2 + q * st, st, 16), load16(s3 + q * st, st, 16));
      _mm512_storeu_si512(dst + q, _mm512_xor_si512(v, f));
    }
    if (q < len) {
      const int64_t n = len - q;
      const __m512i v = cells16(load16(s0 + q * st, st, n), load16(s1 + q * st, st, n),
                                load16(s2 + q * st, st, n), load16(s3 + q * st, st, n));
      _mm512_mask_storeu_epi32(dst + q, static_cast<__mmask16>((1u << n) - 1u), _mm512_xor_si512(v, f));
    }
    return len;
  }

  // dst[0 .. n) = src[0 .. n) (short rows: inline, no libc call).
  static void copy(uint32_t* dst, const uint32_t* src, int64_t n) {
    int64_t q = 0;
    for (; q + 16 <= n; q += 16) _mm512_storeu_si512(dst + q, _mm512_loadu_si512(src + q));
    if (q < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - q)) - 1u);
      _mm512_mask_storeu_epi32(dst + q, m, _mm512_maskz_loadu_epi32(m, src + q));
    }
  }
};

}  // namespace
}  // namespace qexport
