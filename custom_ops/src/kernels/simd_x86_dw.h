// The depthwise kernels on ymm vectors (AVX2), shared by the avx2 and avx512vnni paths
// (simd_x86_avx2.cc, simd_x86_avx512.cc), compiled by each with its own flags. Internal linkage
// only (see simd_impl.h).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"

namespace qexport {
namespace {  // NOLINT: internal linkage on purpose

// relu: y < 0 ? 0 : y. vmaxps returns its second operand when the operands are equal (+0, -0) or
// one is NaN, so max(0, y) keeps -0 and NaN as the reference does: one instruction.
inline __m256 relu_ymm(__m256 y) { return _mm256_max_ps(_mm256_setzero_ps(), y); }

// The depthwise conv on ymm vectors, 8 accumulators (the multiply-add in two operations: this path
// has no FMA), codes converted by vpmovzxbd + vcvtdq2ps.
struct DwAvx2 : simd::DwGeneric<simd::DwV8, 8> {
  static constexpr bool kByChannels = true;
  // r[i][j] <-> r[j][i] (the 8x8 transpose: unpack, shuffle, 128-bit permute).
  static void transpose(V (&r)[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20), r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20), r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31), r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31), r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
  }
  static V codes(const uint8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
};

// The int16 plane kernel: 16 lanes per ymm (vpmullw + vpaddw), codes widened by vpmovzxbw,
// sums to float32 by vpmovsxwd + vcvtdq2ps.
typedef int16_t DwS16 __attribute__((vector_size(32)));
struct DwAvx2I16 : simd::DwInt16<DwS16, simd::DwV8, 8> {
  static V codes(const uint8_t* p) {
    return reinterpret_cast<V>(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static FV load_acc(const int16_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

// The 16x16 byte transpose: r[c] holds 16 bytes of row c; afterwards r[k] holds byte k of every
// row (4 rounds of unpacks: bytes, words, dwords, qwords).
inline void transpose16_epi8(__m128i (&r)[16]) {
  __m128i a[16], b[16];
  for (int g = 0; g < 8; ++g) {  // rows 2g, 2g+1: columns 0-7, then 8-15
    a[g] = _mm_unpacklo_epi8(r[2 * g], r[2 * g + 1]);
    a[8 + g] = _mm_unpackhi_epi8(r[2 * g], r[2 * g + 1]);
  }
  for (int h = 0; h < 2; ++h)  // column half h, rows 4q .. 4q+3 (row pairs 2q, 2q+1)
    for (int q = 0; q < 4; ++q) {
      b[8 * h + 2 * q] = _mm_unpacklo_epi16(a[8 * h + 2 * q], a[8 * h + 2 * q + 1]);      // columns 8h + 0..3
      b[8 * h + 2 * q + 1] = _mm_unpackhi_epi16(a[8 * h + 2 * q], a[8 * h + 2 * q + 1]);  // columns 8h + 4..7
    }
  // b[8h + 2q + m]: rows 4q .. 4q+3 (4 bytes per column), columns 8h + 4m .. 8h + 4m + 3.
  for (int h = 0; h < 2; ++h)
    for (int m = 0; m < 2; ++m)
      for (int o = 0; o < 2; ++o) {  // rows 8o .. 8o+7 = quads 2o, 2o+1
        const __m128i x = b[8 * h + 2 * (2 * o) + m], y = b[8 * h + 2 * (2 * o + 1) + m];
        a[8 * h + 4 * m + 2 * o] = _mm_unpacklo_epi32(x, y);      // columns 8h + 4m + 0, 1
        a[8 * h + 4 * m + 2 * o + 1] = _mm_unpackhi_epi32(x, y);  // columns 8h + 4m + 2, 3
      }
  // a[8h + 4m + 2o + j]: rows 8o .. 8o+7, columns 8h + 4m + 2j, +1 (8 bytes each).
  for (int h = 0; h < 2; ++h)
    for (int m = 0; m < 2; ++m)
      for (int j = 0; j < 2; ++j) {
        const int col = 8 * h + 4 * m + 2 * j;
        r[col] = _mm_unpacklo_epi64(a[8 * h + 4 * m + j], a[8 * h + 4 * m + 2 + j]);
        r[col + 1] = _mm_unpackhi_epi64(a[8 * h + 4 * m + j], a[8 * h + 4 * m + 2 + j]);
      }
}

// The int16 channel-vectorized depthwise kernel (DepthwiseTask::int16 and tile_h > 0; mult == 1):
// as simd::depthwise_channels, 16 channels per vector in int16 lanes. A channel's plane is read 16
// codes at a time (rows run on: the plane is contiguous), 16 channels' reads transposed as bytes,
// widened and placed at their tile positions; 8 output positions at a time in 8 accumulators
// (vpmullw + vpaddw, one weight vector per tap), transposed back in 128-bit lanes (channels c and
// c + 8 share a vector) and converted to float32 for the epilogue. The sums are the integers of
// the definition (every partial sum fits int16). Channels past the last 16 go to the float32 kernels.
template <bool kRes, bool kRelu>
void depthwise_channels_i16(const DepthwiseTask& task) {
  // A local copy: the vector stores below (may_alias types) could otherwise write any field, and
  // the compiler reloaded t.w, t.pt and t.pl for every tile position (perf: 30% of the kernel).
  const DepthwiseTask t = task;
  const int64_t taps = t.kh * t.kw, th = t.tile_h, tw = t.tile_w, plane_in = t.h * t.w, plane_out = t.oh * t.ow;
  static_assert(kDepthwiseLanesMax == 16, "DepthwiseTask::w16 blocks are this kernel's vectors");
  int16_t* tile = reinterpret_cast<int16_t*>(t.buf);  // [th][tw][16]
  int64_t off[kDepthwiseTileTaps];
  for (int64_t i = 0; i < t.kh; ++i)
    for (int64_t j = 0; j < t.kw; ++j) off[i * t.kw + j] = (i * t.dh * tw + j * t.dw) * 16;
  // Zero the padding only (the rows above and below the input, the columns left and right of it):
  // the input positions are written for every block of channels below.
  const auto zero = [&](int64_t from, int64_t count) {
    if (count > 0) std::memset(tile + from * 16, 0, sizeof(int16_t) * 16 * static_cast<size_t>(count));
  };
  zero(0, t.pt * tw + t.pl);  // up to the first input position
  for (int64_t iy = 0; iy < t.h; ++iy) {  // after row iy's last input position, up to the next row's first
    const int64_t from = (t.pt + iy) * tw + t.pl + t.w;
    zero(from, (iy + 1 < t.h ? (t.pt + iy + 1) * tw + t.pl : th * tw) - from);
  }
  const __m256i zp = _mm256_set1_epi16(static_cast<int16_t>(t.zero_point));
  int64_t o = t.o0;
  for (; o + 16 <= t.o1; o += 16) {
    const uint8_t* xg = t.x + o * plane_in;
    int64_t iy = 0, ix = 0;  // of position p0
    for (int64_t p0 = 0; p0 < plane_in; p0 += 16) {
      __m128i r[16];
      for (int c = 0; c < 16; ++c) {
        const uint8_t* s = xg + c * plane_in + p0;
        if (t.x_end - s >= 16) {
          r[c] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
        } else {
          alignas(16) uint8_t tail[16] = {};
          std::memcpy(tail, s, static_cast<size_t>(t.x_end - s));
          r[c] = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
        }
      }
      transpose16_epi8(r);
      const int64_t n = simd::min64(16, plane_in - p0);
      for (int64_t k = 0; k < n; ++k) {
        const __m256i v = _mm256_sub_epi16(_mm256_cvtepu8_epi16(r[k]), zp);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + ((iy + t.pt) * tw + t.pl + ix) * 16), v);
        if (++ix == t.w) ix = 0, ++iy;
      }
    }
    const int16_t* wt = t.w16 + (o / 16) * taps * 16;  // [taps][16] (o is a multiple of 16: see below)
    float m[16], b[16];
    for (int c = 0; c < 16; ++c) m[c] = t.x_scale * t.w_scale[o + c], b[c] = t.bias[o + c];
    int64_t oy = 0, ox = 0;  // of position p0
    for (int64_t p0 = 0; p0 < plane_out; p0 += 8) {
      const int64_t n = simd::min64(8, plane_out - p0);
      const int16_t* base[8];  // tap (0, 0) of positions p0 ... (past the plane: p0's, not stored)
      for (int k = 0; k < 8; ++k) {
        base[k] = k < n ? tile + (oy * t.sh * tw + ox * t.sw) * 16 : base[0];
        if (k < n && ++ox == t.ow) ox = 0, ++oy;
      }
      __m256i r[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_setzero_si256();
      for (int64_t tp = 0; tp < taps; ++tp) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + tp * 16));
        const int64_t q = off[tp];
        for (int k = 0; k < 8; ++k)
          r[k] = _mm256_add_epi16(
              r[k], _mm256_mullo_epi16(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base[k] + q))));
      }
      // r[k]: position k, channels 0-7 (low lane) and 8-15 (high lane). The 8x8 word transpose in
      // each lane: c[j] then holds channel j's 8 positions (low) and channel j + 8's (high).
      __m256i a[8], c[8];
      for (int i = 0; i < 4; ++i) {
        a[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);      // channels 0-3, positions 2i, 2i+1
        a[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);  // channels 4-7
      }
      for (int hq = 0; hq < 2; ++hq)    // positions 4hq .. 4hq+3: a[4hq + ...]
        for (int cq = 0; cq < 2; ++cq) {  // channels 4cq .. 4cq+3
          const __m256i x = a[4 * hq + cq], y = a[4 * hq + 2 + cq];
          c[4 * hq + 2 * cq] = _mm256_unpacklo_epi32(x, y);      // channels 4cq, 4cq+1: positions 4hq..4hq+3
          c[4 * hq + 2 * cq + 1] = _mm256_unpackhi_epi32(x, y);  // channels 4cq+2, 4cq+3
        }
      __m256i ch[8];
      for (int j = 0; j < 4; ++j) {  // c[j] (positions 0-3) and c[4 + j] (4-7): channels 2j, 2j+1
        ch[2 * j] = _mm256_unpacklo_epi64(c[j], c[4 + j]);
        ch[2 * j + 1] = _mm256_unpackhi_epi64(c[j], c[4 + j]);
      }
      for (int j = 0; j < 16; ++j) {
        const __m128i half = j < 8 ? _mm256_castsi256_si128(ch[j]) : _mm256_extracti128_si256(ch[j - 8], 1);
        float* yo = t.y + (o + j) * plane_out + p0;
        const float* ro = kRes ? t.residual + (o + j) * plane_out + p0 : nullptr;
        if (n == 8) {
          __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(half)), _mm256_set1_ps(m[j]));
          v = _mm256_add_ps(v, _mm256_set1_ps(b[j]));
          if (kRes) v = _mm256_add_ps(v, _mm256_loadu_ps(ro));
          if (kRelu) v = relu_ymm(v);
          _mm256_storeu_ps(yo, v);
        } else {
          alignas(16) int16_t sums[8];
          _mm_store_si128(reinterpret_cast<__m128i*>(sums), half);
          simd::depthwise_epilogue<kRes, kRelu>(sums, ro, yo, n, m[j], b[j]);
        }
      }
    }
  }
  if (o < t.o1) {
    DepthwiseTask rest = t;
    rest.o0 = o;
    simd::depthwise_conv<DwAvx2>(rest);
  }
}

// Where the sums fit int16 (DepthwiseTask::int16): the int16 channel kernel on the small planes
// it takes (DepthwiseTask::tile_h, 16 channels or more), else the int16 plane kernel. On avx2
// (MobileNetV2 CIFAR, interleaved per-node profile) the int16 plane kernel took 0.84x the float32
// plane kernel's time at 32x32 and 0.81x the float32 channel kernel's at 16x16, but 1.6-2.2x its
// time at 8x8 and 4x4; the int16 channel kernel then took 0.78-0.85x the float32 channel kernel's
// node time at 8x8 and 4x4, 0.87-0.94x the plane kernel's at 16x16 (stride 1 and 2), and 1.25x the
// plane kernel's on 32x32 outputs (its tile no longer fits L1: not taken there). Else the float32
// kernels.
inline void depthwise_ymm(const DepthwiseTask& t) {
  if (t.int16 && t.tile_h > 0 && t.o1 - t.o0 >= 16 && t.o0 % 16 == 0) {
    simd::dispatch_epilogue(
        t, [&](auto res, auto relu) { depthwise_channels_i16<decltype(res)::value, decltype(relu)::value>(t); });
    return;
  }
  if (t.int16 && (t.tile_h == 0 || t.oh * t.ow > 128)) {
    simd::depthwise_conv<DwAvx2I16>(t);
  } else {
    simd::depthwise_conv<DwAvx2>(t);
  }
}

}  // namespace
}  // namespace qexport
