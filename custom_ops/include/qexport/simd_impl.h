// Helpers shared by the ISA files (src/kernels/simd_*.cc): plain C++ that each of them compiles
// with its own instruction-set flags. Only included by those files.
//
// Everything here has internal linkage (an anonymous namespace): an inline function with
// external linkage compiled with, say, -mavx512f in one file could be picked by the linker for
// every caller and run AVX-512 instructions on a CPU without them. For the same reason the ISA
// files use no std:: templates that would be instantiated there.
#pragma once

#include <cstdint>
#include <type_traits>
#include <cstring>

#include "qexport/simd.h"

namespace qexport {
namespace simd {
namespace {  // NOLINT: internal linkage on purpose (see above)

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Portable version of Interleave::row and Interleave::copy (see conv_relayout).
struct InterleavePortable {
  static int64_t row(const uint8_t*, const uint8_t*, const uint8_t*, const uint8_t*, uint32_t*, int64_t, int64_t,
                     uint32_t) {
    return 0;
  }
  static void copy(uint32_t* dst, const uint32_t* src, int64_t n) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(uint32_t));
  }
};

// Fills one plane (see ConvGeometry) of channel group g4: cell (row t, column xs) holds the
// codes of channels 4*g4 .. 4*g4+3 at input row t*sh + py - pt, column (xs + cshift)*sw + px - pl,
// each minus act_offset; positions outside the input hold pad_code. Channels beyond cg (the last
// group of a channel count that is not a multiple of 4) repeat channel 4*g4: their weights are
// zero, any value does.
//
// Interleave::row(s0, s1, s2, s3, dst, len, stride, flip) may do a prefix of a row:
// dst[q] = (s0[q*stride] | s1[q*stride] << 8 | s2[q*stride] << 16 | s3[q*stride] << 24) ^ flip;
// it returns how many cells it did, the rest is done here.
template <typename Interleave>
inline void fill_plane(const ConvTask& t, int64_t g4, int64_t py, int64_t px, int64_t cshift, uint32_t* plane) {
  const ConvGeometry& g = *t.g;
  const int64_t hw = g.h * g.w;
  const uint32_t pad = 0x01010101u * t.pad_code;
  const uint32_t flip = 0x01010101u * t.act_offset;  // c - offset (mod 256) is c ^ 0x80 or c
  const int64_t nc = min64(4, g.cg - 4 * g4);
  const uint8_t* xc[4];
  for (int64_t ci = 0; ci < 4; ++ci) xc[ci] = t.x + (4 * g4 + (ci < nc ? ci : 0)) * hw;
  // Columns xs whose input column xs*sw - first lies in [0, W).
  const int64_t first = g.pl - px - cshift * g.sw;
  int64_t xs_lo = first > 0 ? (first + g.sw - 1) / g.sw : 0;
  int64_t xs_hi = (g.w - 1 + first) >= 0 ? (g.w - 1 + first) / g.sw + 1 : 0;
  if (xs_hi > g.ws) xs_hi = g.ws;
  if (xs_lo > xs_hi) xs_lo = xs_hi;
  for (int64_t tr = 0; tr < g.hs; ++tr) {
    uint32_t* row = plane + tr * g.ws;
    const int64_t iy = tr * g.sh + py - g.pt;
    if (iy < 0 || iy >= g.h || xs_lo >= xs_hi) {
      for (int64_t xs = 0; xs < g.ws; ++xs) row[xs] = pad;
      continue;
    }
    for (int64_t xs = 0; xs < xs_lo; ++xs) row[xs] = pad;
    for (int64_t xs = xs_hi; xs < g.ws; ++xs) row[xs] = pad;
    const int64_t ix0 = xs_lo * g.sw - first;
    const int64_t len = xs_hi - xs_lo, st = g.sw;
    uint32_t* dst = row + xs_lo;
    const uint8_t* s0 = xc[0] + iy * g.w + ix0;
    const uint8_t* s1 = xc[1] + iy * g.w + ix0;
    const uint8_t* s2 = xc[2] + iy * g.w + ix0;
    const uint8_t* s3 = xc[3] + iy * g.w + ix0;
    for (int64_t q = Interleave::row(s0, s1, s2, s3, dst, len, st, flip); q < len; ++q)
      dst[q] = (static_cast<uint32_t>(s0[q * st]) | (static_cast<uint32_t>(s1[q * st]) << 8) |
                (static_cast<uint32_t>(s2[q * st]) << 16) | (static_cast<uint32_t>(s3[q * st]) << 24)) ^
               flip;
  }
  for (int64_t q = g.hs * g.ws; q < g.plane_pos; ++q) plane[q] = pad;
}

// The expanded layout when kernel columns are adjacent input columns (sw = dw = 1): plane
// (py, j, g4) row t is the same extended row of input columns -pl .. ws + kw - 2 - pl, starting at
// cell j. Each extended row is built once (interleave) and copied into the kw planes.
constexpr int64_t kMaxExtendedRow = 2048;  // cells

template <typename Interleave>
inline void fill_expanded_rows(const ConvTask& t, uint32_t* buf) {
  const ConvGeometry& g = *t.g;
  const int64_t hw = g.h * g.w, elen = g.ws + g.kw - 1;
  const uint32_t pad = 0x01010101u * t.pad_code;
  const uint32_t flip = 0x01010101u * t.act_offset;
  uint32_t ext[kMaxExtendedRow];
  const int64_t xs_lo = min64(g.pl, elen), xs_hi = min64(g.w + g.pl, elen);  // ext[xs] is input column xs - pl
  for (int64_t py = 0; py < g.sh; ++py) {
    for (int64_t g4 = 0; g4 < g.cg4; ++g4) {
      const int64_t nc = min64(4, g.cg - 4 * g4);
      const uint8_t* xc[4];
      for (int64_t ci = 0; ci < 4; ++ci) xc[ci] = t.x + (4 * g4 + (ci < nc ? ci : 0)) * hw;
      uint32_t* planes[64];
      for (int64_t j = 0; j < g.kw; ++j) planes[j] = buf + (py * g.chunks * 16 + j * g.cg4 + g4) * g.plane_pos;
      for (int64_t tr = 0; tr < g.hs; ++tr) {
        const int64_t iy = tr * g.sh + py - g.pt;
        if (iy < 0 || iy >= g.h || xs_lo >= xs_hi) {
          for (int64_t j = 0; j < g.kw; ++j) {
            uint32_t* row = planes[j] + tr * g.ws;
            for (int64_t xs = 0; xs < g.ws; ++xs) row[xs] = pad;
          }
          continue;
        }
        for (int64_t xs = 0; xs < xs_lo; ++xs) ext[xs] = pad;
        for (int64_t xs = xs_hi; xs < elen; ++xs) ext[xs] = pad;
        const uint8_t* s0 = xc[0] + iy * g.w + (xs_lo - g.pl);
        const uint8_t* s1 = xc[1] + iy * g.w + (xs_lo - g.pl);
        const uint8_t* s2 = xc[2] + iy * g.w + (xs_lo - g.pl);
        const uint8_t* s3 = xc[3] + iy * g.w + (xs_lo - g.pl);
        uint32_t* dst = ext + xs_lo;
        const int64_t len = xs_hi - xs_lo;
        for (int64_t q = Interleave::row(s0, s1, s2, s3, dst, len, 1, flip); q < len; ++q)
          dst[q] = (static_cast<uint32_t>(s0[q]) | (static_cast<uint32_t>(s1[q]) << 8) |
                    (static_cast<uint32_t>(s2[q]) << 16) | (static_cast<uint32_t>(s3[q]) << 24)) ^
                   flip;
        for (int64_t j = 0; j < g.kw; ++j) Interleave::copy(planes[j] + tr * g.ws, ext + j, g.ws);
      }
      for (int64_t j = 0; j < g.kw; ++j)
        for (int64_t q = g.hs * g.ws; q < g.plane_pos; ++q) planes[j][q] = pad;
    }
  }
}

// Fills every plane of a conv task's buffer (see ConvGeometry).
template <typename Interleave>
inline void conv_relayout(const ConvTask& t) {
  const ConvGeometry& g = *t.g;
  uint32_t* buf = reinterpret_cast<uint32_t*>(t.buf);
  if (g.expand && g.sw == 1 && g.dw == 1 && g.kw <= 64 && g.ws + g.kw - 1 <= kMaxExtendedRow) {
    fill_expanded_rows<Interleave>(t, buf);
    return;
  }
  if (!g.expand) {
    for (int64_t g4 = 0; g4 < g.cg4; ++g4)
      for (int64_t py = 0; py < g.sh; ++py)
        for (int64_t px = 0; px < g.sw; ++px)
          fill_plane<Interleave>(t, g4, py, px, 0, buf + (g4 * g.phases + py * g.sw + px) * g.plane_pos);
    return;
  }
  for (int64_t py = 0; py < g.sh; ++py)
    for (int64_t j = 0; j < g.kw; ++j)
      for (int64_t g4 = 0; g4 < g.cg4; ++g4) {
        const int64_t plane = py * g.chunks * 16 + j * g.cg4 + g4;
        fill_plane<Interleave>(t, g4, py, (j * g.dw) % g.sw, (j * g.dw) / g.sw, buf + plane * g.plane_pos);
      }
}

// Gemm rows, padded to kp with zeros (the padded weights are zero), minus act_offset.
inline void gemm_rows(const GemmTask& t) {
  for (int64_t n = t.n0; n < t.n1; ++n) {
    const uint8_t* src = t.x + n * t.k;
    uint8_t* dst = t.buf + (n - t.n0) * t.kp;
    if (t.act_offset == 0) {
      std::memcpy(dst, src, static_cast<size_t>(t.k));
    } else {
      for (int64_t k = 0; k < t.k; ++k) dst[k] = static_cast<uint8_t>(src[k] ^ t.act_offset);
    }
    std::memset(dst + t.k, 0, static_cast<size_t>(t.kp - t.k));
  }
}

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The fallback margin of the reciprocal quantizer (see quantize in simd_x86_avx512.cc): with
// r = float32(1/s) and q = float32(x * r), |q - float32(x / s)| < |q| * 2^-22, so rint gives the
// same integer unless q lies within that distance of a half-integer (a possible tie or a
// boundary between q and the exact quotient). Lanes with |q| <= hi + 1 closer than this margin
// to a half-integer are recomputed with the division; farther lanes, and lanes beyond the clamp
// range, give the same code either way.
// Calls f(std::bool_constant<residual>, std::bool_constant<relu>) for the task's epilogue, so
// each path writes `void conv(t) { dispatch_epilogue(t, [&](auto r, auto u) { conv_t<r, u>(t); }); }`.
template <typename F>
inline void dispatch_epilogue(const ConvTask& t, F&& f) {
  if (t.residual != nullptr) {
    if (t.relu) {
      f(std::true_type{}, std::true_type{});
    } else {
      f(std::true_type{}, std::false_type{});
    }
  } else if (t.relu) {
    f(std::false_type{}, std::true_type{});
  } else {
    f(std::false_type{}, std::false_type{});
  }
}

// Stores the lanes of one epilogue vector `tmp` (y of one output channel, bias and, without a
// residual, the ReLU applied) to their output positions (the vector's segments); with a
// residual, adds it and then applies the ReLU (y < 0 ? 0 : y), one float32 operation each.
template <bool kRes, bool kRelu>
inline void store_segments(const float* tmp, const ConvSegment* seg, int ns, float* yo, const float* ro) {
  for (int s = 0; s < ns; ++s) {
    for (int l = 0; l < seg[s].n; ++l) {
      float u = tmp[seg[s].lane + l];
      if (kRes) {
        u = u + ro[seg[s].out + l];
        if (kRelu) u = (u < 0.0f) ? 0.0f : u;
      }
      yo[seg[s].out + l] = u;
    }
  }
}

inline float quantize_margin(const QuantParams& q) {
  const float m = (q.hi > -q.lo ? q.hi : -q.lo) + 1.0f;
  return m * 0x1p-20f + 0x1p-20f;
}

}  // namespace
}  // namespace simd
}  // namespace qexport
