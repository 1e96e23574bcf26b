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

// The 8-lane float64 mean of each plane (docs/ops.md, AsqQuantize step 1): position i goes to
// lane i % 8, each lane a sequential sum from +0.0 (positions past the plane add +0.0), combined
// as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), divided by the count. The lanes are
// independent, so the loop already overlaps 8 additions (and vectorizes).
inline void plane_means_lanes(const float* x, size_t channels, size_t plane, double* out) {
  for (size_t c = 0; c < channels; ++c) {
    const float* p = x + c * plane;
    double l[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + 8 <= plane; i += 8) {
      for (int j = 0; j < 8; ++j) l[j] += static_cast<double>(p[i + j]);
    }
    if (i < plane) {
      for (size_t j = 0; j < 8; ++j) l[j] += (i + j < plane) ? static_cast<double>(p[i + j]) : 0.0;
    }
    out[c] = mean_of_lanes(l, plane);
  }
}

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

// dst[q] = (s0[q*st] | s1[q*st] << 8 | s2[q*st] << 16 | s3[q*st] << 24) ^ flip for q < len: the
// path's Interleave::row does a prefix, the rest is done here.
template <typename Interleave>
inline void interleave_cells(const uint8_t* s0, const uint8_t* s1, const uint8_t* s2, const uint8_t* s3,
                             uint32_t* dst, int64_t len, int64_t st, uint32_t flip) {
  for (int64_t q = Interleave::row(s0, s1, s2, s3, dst, len, st, flip); q < len; ++q)
    dst[q] = (static_cast<uint32_t>(s0[q * st]) | (static_cast<uint32_t>(s1[q * st]) << 8) |
              (static_cast<uint32_t>(s2[q * st]) << 16) | (static_cast<uint32_t>(s3[q * st]) << 24)) ^
             flip;
}

// The columns [lo, hi) of a phase plane of ws columns whose input column u*sw - first lies in
// [0, w), and the input column ix of column lo.
struct PhaseColumns {
  int64_t lo = 0, hi = 0, ix = 0;
};

inline PhaseColumns phase_columns(int64_t first, int64_t sw, int64_t w, int64_t ws) {
  PhaseColumns c;
  c.lo = first > 0 ? (first + sw - 1) / sw : 0;
  c.hi = (w - 1 + first) >= 0 ? (w - 1 + first) / sw + 1 : 0;
  if (c.hi > ws) c.hi = ws;
  if (c.lo > c.hi) c.lo = c.hi;
  c.ix = c.lo * sw - first;
  return c;
}

// Fills rows [t.row0, t.row1) of one plane (see ConvGeometry; t.row1 = hs: and the slack after
// the last row) of channel group g4: cell (row t, column xs) holds the
// codes of channels 4*g4 .. 4*g4+3 at input row t*sh + py - pt, column (xs + cshift)*sw + px - pl,
// each minus act_offset; positions outside the input hold pad_code. Channels beyond cg (the last
// group of a channel count that is not a multiple of 4) repeat channel 4*g4: their weights are
// zero, any value does.
//
// A row goes through interleave_cells: Interleave::row(s0, s1, s2, s3, dst, len, stride, flip) may do a
// prefix of it and returns how many cells it did.
template <typename Interleave>
inline void fill_plane(const ConvTask& t, int64_t g4, int64_t py, int64_t px, int64_t cshift, uint32_t* plane) {
  const ConvGeometry& g = *t.g;
  const int64_t hw = g.h * g.w;
  const uint32_t pad = 0x01010101u * t.pad_code;
  const uint32_t flip = 0x01010101u * t.act_offset;  // c - offset (mod 256) is c ^ 0x80 or c
  const int64_t nc = min64(4, g.cg - 4 * g4);
  const uint8_t* xc[4];
  for (int64_t ci = 0; ci < 4; ++ci) xc[ci] = t.x + (4 * g4 + (ci < nc ? ci : 0)) * hw;
  const PhaseColumns cols = phase_columns(g.pl - px - cshift * g.sw, g.sw, g.w, g.ws);
  const int64_t xs_lo = cols.lo, xs_hi = cols.hi;
  for (int64_t tr = t.row0; tr < t.row1; ++tr) {
    uint32_t* row = plane + tr * g.ws;
    const int64_t iy = tr * g.sh + py - g.pt;
    if (iy < 0 || iy >= g.h || xs_lo >= xs_hi) {
      for (int64_t xs = 0; xs < g.ws; ++xs) row[xs] = pad;
      continue;
    }
    for (int64_t xs = 0; xs < xs_lo; ++xs) row[xs] = pad;
    for (int64_t xs = xs_hi; xs < g.ws; ++xs) row[xs] = pad;
    const int64_t ix0 = cols.ix;
    const int64_t len = xs_hi - xs_lo, st = g.sw;
    uint32_t* dst = row + xs_lo;
    const uint8_t* s0 = xc[0] + iy * g.w + ix0;
    const uint8_t* s1 = xc[1] + iy * g.w + ix0;
    const uint8_t* s2 = xc[2] + iy * g.w + ix0;
    const uint8_t* s3 = xc[3] + iy * g.w + ix0;
    interleave_cells<Interleave>(s0, s1, s2, s3, dst, len, st, flip);
  }
  if (t.row1 == g.hs)
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
      for (int64_t tr = t.row0; tr < t.row1; ++tr) {
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
        interleave_cells<Interleave>(s0, s1, s2, s3, dst, len, 1, flip);
        for (int64_t j = 0; j < g.kw; ++j) Interleave::copy(planes[j] + tr * g.ws, ext + j, g.ws);
      }
      if (t.row1 == g.hs)
        for (int64_t j = 0; j < g.kw; ++j)
          for (int64_t q = g.hs * g.ws; q < g.plane_pos; ++q) planes[j][q] = pad;
    }
  }
}

// The folded layout (ConvGeometry::fold): rows [t.row0, t.row1) of the sh phase planes, cell (t, u)
// of plane py holding input columns u*fold_sw + j*fold_dw - fold_pl, j < fold, of input row
// t*sh + py - pt (minus act_offset; outside the input pad_code). The bytes past fold repeat byte 0:
// their weights are zero. The columns whose fold inputs all lie in the row go by the path's
// interleave (stride fold_sw), the others cell by cell.
template <typename Interleave>
inline void fill_folded(const ConvTask& t, uint32_t* buf) {
  const ConvGeometry& g = *t.g;
  const uint32_t pad = 0x01010101u * t.pad_code;
  const uint32_t flip = 0x01010101u * t.act_offset;
  const int64_t sw = g.fold_sw, dw = g.fold_dw, pl = g.fold_pl, last = (g.fold - 1) * dw;
  // u in [u_lo, u_hi): 0 <= u*sw - pl and u*sw - pl + last <= w - 1.
  const int64_t u_lo = min64((pl + sw - 1) / sw, g.ws);
  const int64_t u_hi = g.w - 1 - last + pl >= 0 ? min64((g.w - 1 - last + pl) / sw + 1, g.ws) : 0;
  auto cell = [&](const uint8_t* src, int64_t u) {
    uint32_t v = 0;
    for (int64_t j = 0; j < 4; ++j) {
      const int64_t col = u * sw + (j < g.fold ? j : 0) * dw - pl;
      const uint32_t b = col >= 0 && col < g.w ? static_cast<uint32_t>(src[col] ^ t.act_offset) : t.pad_code;
      v |= b << (8 * j);
    }
    return v;
  };
  for (int64_t py = 0; py < g.sh; ++py) {
    uint32_t* plane = buf + py * g.plane_pos;
    for (int64_t tr = t.row0; tr < t.row1; ++tr) {
      uint32_t* row = plane + tr * g.ws;
      const int64_t iy = tr * g.sh + py - g.pt;
      if (iy < 0 || iy >= g.h) {
        for (int64_t u = 0; u < g.ws; ++u) row[u] = pad;
        continue;
      }
      const uint8_t* src = t.x + iy * g.w;
      int64_t u = 0;
      for (; u < g.ws && u < u_lo; ++u) row[u] = cell(src, u);
      if (u < u_hi) {
        const uint8_t* s0 = src + u * sw - pl;
        const uint8_t* s1 = s0 + (g.fold > 1 ? dw : 0);
        const uint8_t* s2 = s0 + (g.fold > 2 ? 2 * dw : 0);
        const uint8_t* s3 = s0 + (g.fold > 3 ? 3 * dw : 0);
        interleave_cells<Interleave>(s0, s1, s2, s3, row + u, u_hi - u, sw, flip);
        u = u_hi;
      }
      for (; u < g.ws; ++u) row[u] = cell(src, u);
    }
    if (t.row1 == g.hs)
      for (int64_t q = g.hs * g.ws; q < g.plane_pos; ++q) plane[q] = pad;
  }
}

// Fills rows [t.row0, t.row1) of every plane of a conv task's buffer (see ConvGeometry).
template <typename Interleave>
inline void conv_relayout(const ConvTask& t) {
  const ConvGeometry& g = *t.g;
  uint32_t* buf = reinterpret_cast<uint32_t*>(t.buf);
  if (g.fold > 0) {
    fill_folded<Interleave>(t, buf);
    return;
  }
  if (g.expand && g.sw == 1 && g.dw == 1 && g.kw <= 64 && g.ws + g.kw - 1 <= kMaxExtendedRow) {
    fill_expanded_rows<Interleave>(t, buf);
    return;
  }
  if (!g.expand && g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.hs == g.h &&
      g.ws == g.w) {
    // A 1x1 conv at stride 1 without padding (the pointwise convs): a plane is its 4 channels'
    // codes interleaved, rows [row0, row1) one contiguous run, no per-row work.
    const uint32_t pad = 0x01010101u * t.pad_code;
    const uint32_t flip = 0x01010101u * t.act_offset;
    const int64_t hw = g.h * g.w, q0 = t.row0 * g.w, len = (t.row1 - t.row0) * g.w;
    for (int64_t g4 = 0; g4 < g.cg4; ++g4) {
      const int64_t nc = min64(4, g.cg - 4 * g4);
      const uint8_t* xc[4];
      for (int64_t ci = 0; ci < 4; ++ci) xc[ci] = t.x + (4 * g4 + (ci < nc ? ci : 0)) * hw + q0;
      uint32_t* plane = buf + g4 * g.plane_pos;
      interleave_cells<Interleave>(xc[0], xc[1], xc[2], xc[3], plane + q0, len, 1, flip);
      if (t.row1 == g.hs)
        for (int64_t q = hw; q < g.plane_pos; ++q) plane[q] = pad;
    }
    return;
  }
  if (!g.expand) {
    // Only the phases some tap reads (a 1x1 conv at stride 2 reads one of its four).
    auto read = [](int64_t k, int64_t d, int64_t s, int64_t phase) {
      for (int64_t i = 0; i < k; ++i)
        if ((i * d) % s == phase) return true;
      return false;
    };
    for (int64_t g4 = 0; g4 < g.cg4; ++g4)
      for (int64_t py = 0; py < g.sh; ++py)
        for (int64_t px = 0; px < g.sw; ++px)
          if (read(g.kh, g.dh, g.sh, py) && read(g.kw, g.dw, g.sw, px))
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

// The depthwise conv (simd.h, DepthwiseTask): plain loops and GCC/Clang vector extensions that the
// compiler turns into each file's instruction set. A path gives its vector (P::V, P::L float32
// lanes: the width of its registers, so that the compiler keeps the accumulators in them), how
// many accumulator vectors a block has (P::kVecs) and P::fma(a, w, p) = a + w * p (one fused
// multiply-add where the path has one: the same values, as every product and sum is an integer
// below 2^24).
typedef float DwV4 __attribute__((vector_size(16)));
typedef float DwV8 __attribute__((vector_size(32)));
typedef float DwV16 __attribute__((vector_size(64)));

template <typename V, typename T>
inline V dw_load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V, typename T>
inline void dw_store(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// A store to sizeof(V)-aligned p (a vector type aliases its element type).
template <typename V, typename T>
inline void dw_store_aligned(T* p, V v) {
  *reinterpret_cast<V*>(p) = v;
}

// The generic multiply-add (two operations) and code conversion (a path with a conversion
// instruction gives its own: GCC 12 scalarizes a uint8 -> float __builtin_convertvector).
// T: the element of the planes and the sums (float, or int16_t in DwInt16); FV, FL: the float
// vector of the epilogue and its lanes; load_acc(p): FL sums from p as floats.
template <typename Vec, int kAccumulators>
struct DwGeneric {
  using V = Vec;
  using T = float;
  using FV = Vec;
  static constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  static constexpr int FL = L;
  static constexpr int kVecs = kAccumulators;
  static constexpr bool kByChannels = false;  // P::transpose(V (&r)[L]) exists: depthwise_channels
  static FV load_acc(const float* p) { return dw_load<FV>(p); }
  static V fma(V a, float w, V p) { return a + w * p; }
  static V vfma(V a, V w, V p) { return a + w * p; }  // a + w * p lane by lane
  // float(p[0]), ..., float(p[L - 1])
  static V codes(const uint8_t* p) {
    float f[L];
    for (int j = 0; j < L; ++j) f[j] = static_cast<float>(p[j]);
    return dw_load<V>(f);
  }
};

// The int16 variant of the plane kernel (DepthwiseTask::int16: every partial sum of every output
// fits int16, so the sums, kept modulo 2^16 in int16 lanes, are the integers of the definition):
// planes of int16 codes minus the zero point (half the bytes of float32, no conversion), the
// multiply-adds on twice the lanes of a float32 vector, the sums converted to float32 for the
// epilogue. A path gives V (its int16 vector), codes(p) (L codes widened to int16),
// load_acc(p) (FL int16 sums as a float32 vector FV) and may give a faster fma.
template <typename Vec, typename FVec, int kAccumulators>
struct DwInt16 {
  using V = Vec;
  using T = int16_t;
  using FV = FVec;
  static constexpr int L = static_cast<int>(sizeof(V) / sizeof(int16_t));
  static constexpr int FL = static_cast<int>(sizeof(FV) / sizeof(float));
  static constexpr int kVecs = kAccumulators;
  static constexpr bool kByChannels = false;
  // The weights are integers of at most 128 in magnitude: exact in int16.
  static V fma(V a, float w, V p) { return a + static_cast<int16_t>(w) * p; }
  static V vfma(V a, V w, V p) { return a + w * p; }  // lane by lane
};

// 1 in lanes [0, n), 0 in the others.
template <typename P>
inline typename P::V dw_lane_mask(int64_t n) {
  using T = typename P::T;
  T f[P::L];
  for (int j = 0; j < P::L; ++j) f[j] = static_cast<T>(j < n ? 1 : 0);
  return dw_load<typename P::V>(f);
}

// dst[u] = T(src[u * stride]) - zp for u in [0, n), one value at a time.
template <typename T>
inline void depthwise_row_values(T* dst, const uint8_t* src, int64_t n, int64_t stride, T zp) {
  for (int64_t u = 0; u < n; ++u) dst[u] = static_cast<T>(static_cast<T>(src[u * stride]) - zp);
}

// dst[u] = float(src[u * kStride]) - zp for u in [0, n): whole vectors of P::L values; the last
// vector's lanes past n are multiplied by 0 (`last` = dw_lane_mask(n % L)), so the vector's
// spill past dst + n writes zeros (see depthwise_planes). Stride 2 takes the even lanes of two
// vectors. A vector whose codes would be read at or past `end` is done value by value (no spill).
template <typename P, int kStride>
inline void depthwise_row(typename P::T* dst, const uint8_t* src, int64_t n, typename P::T zp, typename P::V last,
                          const uint8_t* end) {
  using V = typename P::V;
  constexpr int L = P::L;
  for (int64_t u = 0; u < n; u += L) {
    const uint8_t* s = src + u * kStride;
    if (end - s < L * kStride) {
      depthwise_row_values(dst + u, s, n - u, kStride, zp);
      return;
    }
    V x;
    if constexpr (kStride == 1) {
      x = P::codes(s);
    } else if constexpr (L == 16) {
      x = __builtin_shufflevector(P::codes(s), P::codes(s + L), 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                  30);
    } else if constexpr (L == 8) {
      x = __builtin_shufflevector(P::codes(s), P::codes(s + L), 0, 2, 4, 6, 8, 10, 12, 14);
    } else {
      x = __builtin_shufflevector(P::codes(s), P::codes(s + L), 0, 2, 4, 6);
    }
    x = x - zp;
    if (u + L > n) x = x * last;
    dw_store<V>(dst + u, x);
  }
}

// The sh*sw phase planes of input channel ci (psize floats apart; cols[px]: phase_columns(t.pl -
// px, t.sw, t.w, t.ws)) in planes whose every value is zero or a value of an earlier channel's
// planes: only the values at input positions are written (`depthwise_zero_planes` zeroes a
// slot once per task; every other value of a plane is only ever written with zeros). Rows go top
// to bottom, so a row's spill of zeros (depthwise_row) past its last column lands on padding or on
// the next row, which is written after it; the last row's lands in the slack.
template <typename P>
inline void depthwise_planes(const DepthwiseTask& t, const PhaseColumns* cols, const typename P::V* lasts, int64_t ci,
                             typename P::T* planes) {
  using T = typename P::T;
  const uint8_t* xc = t.x + ci * t.h * t.w;
  const T zp = static_cast<T>(t.zero_point);
  for (int64_t px = 0; px < t.sw; ++px) {
    const PhaseColumns c = cols[px];
    const int64_t n = c.hi - c.lo;
    if (n <= 0) continue;
    const typename P::V last = lasts[px];
    for (int64_t py = 0; py < t.sh; ++py) {
      T* pl = planes + (py * t.sw + px) * t.psize + c.lo;
      // rows r with 0 <= iy = r*sh + py - pt < h
      const int64_t r0 = t.pt > py ? (t.pt - py + t.sh - 1) / t.sh : 0;
      const int64_t top = t.h - 1 + t.pt - py;  // r*sh <= top
      const int64_t r1 = top < 0 ? 0 : min64(t.hs, top / t.sh + 1);
      for (int64_t r = r0; r < r1; ++r) {
        T* row = pl + r * t.ws;
        const uint8_t* src = xc + (r * t.sh + py - t.pt) * t.w + c.ix;
        if (t.sw == 1) {
          depthwise_row<P, 1>(row, src, n, zp, last, t.x_end);
        } else if (t.sw == 2) {
          depthwise_row<P, 2>(row, src, n, zp, last, t.x_end);
        } else {
          depthwise_row_values(row, src, n, t.sw, zp);
        }
      }
    }
  }
}

// Zeroes the sh*sw planes of one slot, slack included (once per task: see depthwise_planes).
template <typename T>
inline void depthwise_zero_planes(const DepthwiseTask& t, T* planes) {
  std::memset(planes, 0, static_cast<size_t>(t.sh * t.sw * t.psize) * sizeof(T));
}

// y[x] = float(acc[x]) * m + b [+ r[x]] [ReLU], one float32 operation each.
template <bool kRes, bool kRelu, typename T>
inline void depthwise_epilogue(const T* __restrict acc, const float* __restrict r, float* __restrict y, int64_t n,
                               float m, float b) {
  for (int64_t x = 0; x < n; ++x) {
    float v = static_cast<float>(acc[x]) * m;
    v = v + b;
    if (kRes) v = v + r[x];
    if (kRelu) v = v < 0.0f ? 0.0f : v;
    y[x] = v;
  }
}

// depthwise_epilogue on the P::FL values of v (r: their residual).
template <typename P, bool kRes, bool kRelu>
inline typename P::FV depthwise_epilogue_vec(typename P::FV v, float m, float b, const float* r) {
  using V = typename P::FV;
  v = v * m;
  v = v + b;
  if (kRes) v = v + dw_load<V>(r);
  if (kRelu) v = v < 0.0f ? V{} : v;
  return v;
}

// Output channel o from its flat accumulators (rows ws apart): vectors of P::L values, each
// operation on all lanes as depthwise_epilogue does on one value. A vector that would run past
// the end of the row writes the start of the next rows (and reads their residual), which are
// computed after it; one that would run past the channel's plane, and what follows it, is done
// by depthwise_epilogue (so no value outside the channel is read or written).
template <typename P, bool kRes, bool kRelu>
inline void depthwise_finish(const DepthwiseTask& t, int64_t o, const typename P::T* acc) {
  using V = typename P::FV;
  const float m = t.x_scale * t.w_scale[o], b = t.bias[o];
  const int64_t plane = t.oh * t.ow;
  float* yo = t.y + o * plane;
  const float* ro = kRes ? t.residual + o * plane : nullptr;
  for (int64_t oy = 0; oy < t.oh; ++oy) {
    const typename P::T* a = acc + oy * t.ws;
    const int64_t i0 = oy * t.ow;
    int64_t x = 0;
    for (; x < t.ow && i0 + x + P::FL <= plane; x += P::FL)
      dw_store<V>(yo + i0 + x, depthwise_epilogue_vec<P, kRes, kRelu>(P::load_acc(a + x), m, b, ro + i0 + x));
    if (x < t.ow) depthwise_epilogue<kRes, kRelu>(a + x, kRes ? ro + i0 + x : nullptr, yo + i0 + x, t.ow - x, m, b);
  }
}

// For kChans channels c (planes pstride floats apart, weights w[c]): acc[(c*kVecs + v)*L + lane]
// = the sum over the taps of w[c][tap] * plane_c[tap_off[tap] + v*L + lane] (from `planes`,
// already offset to the block's first flat position): kChans x kVecs accumulator vectors, enough
// independent sums to hide the latency, few enough to stay in registers. acc is aligned to a
// vector (the accumulators start 64-byte aligned and blocks are whole vectors).
template <typename P, int kChans, int kVecs>
inline void depthwise_block(const typename P::T* planes, int64_t pstride, const int64_t* tap_off,
                            const float* const* w, int64_t taps, typename P::T* acc) {
  using V = typename P::V;
  V a[kChans][kVecs];
  for (int c = 0; c < kChans; ++c)
    for (int v = 0; v < kVecs; ++v) a[c][v] = V{};
  for (int64_t tp = 0; tp < taps; ++tp) {
    const int64_t off = tap_off[tp];
    for (int c = 0; c < kChans; ++c) {
      const float wv = w[c][tp];
      const typename P::T* p = planes + c * pstride + off;
      for (int v = 0; v < kVecs; ++v) a[c][v] = P::fma(a[c][v], wv, dw_load<V>(p + v * P::L));
    }
  }
  for (int c = 0; c < kChans; ++c)
    for (int v = 0; v < kVecs; ++v) dw_store_aligned<V>(acc + (c * kVecs + v) * P::L, a[c][v]);
}

// One output channel at a time (planes of one input channel in slot 0): blocks of kVecs vectors,
// the rest in blocks of 2.
template <typename P, bool kRes, bool kRelu>
inline void depthwise_channel(const DepthwiseTask& t, const PhaseColumns* cols, const typename P::V* lasts, int64_t o,
                              int64_t& built, typename P::T* planes, typename P::T* acc) {
  const int64_t ci = o / t.mult, taps = t.kh * t.kw;
  if (ci != built) {
    depthwise_planes<P>(t, cols, lasts, ci, planes);
    built = ci;
  }
  const float* w[1] = {t.wf + o * taps};
  constexpr int64_t B = P::kVecs * P::L;
  int64_t q0 = 0;
  for (; q0 + B <= t.nq; q0 += B) depthwise_block<P, 1, P::kVecs>(planes + q0, 0, t.tap_off, w, taps, acc + q0);
  for (; q0 < t.nq; q0 += 2 * P::L) depthwise_block<P, 1, 2>(planes + q0, 0, t.tap_off, w, taps, acc + q0);
  depthwise_finish<P, kRes, kRelu>(t, o, acc);
}

// Small planes (nq <= kSmallVecs vectors): kChans output channels at a time, their planes in
// kChans slots.
template <typename P, int kChans, int kSmallVecs, bool kRes, bool kRelu>
inline void depthwise_small(const DepthwiseTask& t, const PhaseColumns* cols, const typename P::V* lasts,
                            typename P::T* planes, typename P::T* acc) {
  const int64_t taps = t.kh * t.kw, pstride = t.sh * t.sw * t.psize;
  for (int c = 0; c < kChans; ++c) depthwise_zero_planes(t, planes + c * pstride);
  int64_t o = t.o0;
  for (; o + kChans <= t.o1; o += kChans) {
    const float* w[kChans];
    for (int c = 0; c < kChans; ++c) {
      depthwise_planes<P>(t, cols, lasts, (o + c) / t.mult, planes + c * pstride);
      w[c] = t.wf + (o + c) * taps;
    }
    depthwise_block<P, kChans, kSmallVecs>(planes, pstride, t.tap_off, w, taps, acc);
    for (int c = 0; c < kChans; ++c) depthwise_finish<P, kRes, kRelu>(t, o + c, acc + c * kSmallVecs * P::L);
  }
  int64_t built = -1;
  for (; o < t.o1; ++o) depthwise_channel<P, kRes, kRelu>(t, cols, lasts, o, built, planes, acc);
}

template <typename P, bool kRes, bool kRelu>
inline void depthwise_channels(const DepthwiseTask& t);

template <typename P, bool kRes, bool kRelu>
inline void depthwise_t(const DepthwiseTask& t) {
  if constexpr (P::kByChannels) {
    if (t.tile_h > 0 && t.o1 - t.o0 >= P::L) return depthwise_channels<P, kRes, kRelu>(t);
  }
  static_assert(P::kVecs % 4 == 0 && P::kVecs * P::L <= kDepthwiseBlock && 4 <= kDepthwiseSlots, "see simd.h");
  typename P::T* planes = reinterpret_cast<typename P::T*>(t.buf);  // int16: half of what is there
  const int64_t slots = t.nq <= kDepthwiseSmall ? kDepthwiseSlots : 1;
  typename P::T* acc = planes + slots * t.sh * t.sw * t.psize;
  PhaseColumns cols[16];  // the op takes this path for sw <= 16 only
  typename P::V lasts[16];  // depthwise_row's mask of each column phase's last vector
  for (int64_t px = 0; px < t.sw; ++px) {
    cols[px] = phase_columns(t.pl - px, t.sw, t.w, t.ws);
    lasts[px] = dw_lane_mask<P>((cols[px].hi - cols[px].lo) % P::L);
  }
  const int64_t nv = (t.nq + P::L - 1) / P::L;
  // kVecs accumulator vectors in all: 4 channels of kVecs/4 vectors, or 2 of kVecs/2.
  if (nv <= P::kVecs / 4) return depthwise_small<P, 4, P::kVecs / 4, kRes, kRelu>(t, cols, lasts, planes, acc);
  if (nv <= P::kVecs / 2) return depthwise_small<P, 2, P::kVecs / 2, kRes, kRelu>(t, cols, lasts, planes, acc);
  depthwise_zero_planes(t, planes);
  int64_t built = -1;
  for (int64_t o = t.o0; o < t.o1; ++o) depthwise_channel<P, kRes, kRelu>(t, cols, lasts, o, built, planes, acc);
}

// float(p[0]) ... float(p[n - 1]), 0 ... (n < L codes left before the end of the sample).
template <typename P>
inline typename P::V dw_codes_tail(const uint8_t* p, int64_t n) {
  typename P::T f[P::L] = {};
  for (int64_t j = 0; j < n && j < P::L; ++j) f[j] = static_cast<typename P::T>(p[j]);
  return dw_load<typename P::V>(f);
}

// The channel-vectorized kernel (simd.h depthwise_tile; mult == 1): output channels o, ..., o+L-1
// at a time. Their input codes minus the zero point go into one tile of tile_h x tile_w positions
// of L floats (a position's L channels side by side: L rows of L codes, read as vectors, are
// transposed by P::transpose; the tile's padding is zeroed once per task and never written), the
// weights into taps vectors of L channels, and each output position sums weight x tile over the
// taps, L consecutive positions at a time (L independent sums, in registers), which are then
// transposed to one vector per channel for the epilogue. The channels past the last whole
// vector go to the plane kernel above. Same integers as the plane kernel, in a different order:
// exact, as every product and partial sum is an integer below 2^24 (simd.h).
template <typename P, bool kRes, bool kRelu>
inline void depthwise_channels(const DepthwiseTask& t) {
  using V = typename P::V;
  using T = typename P::T;
  constexpr int L = P::L;
  const int64_t taps = t.kh * t.kw, th = t.tile_h, tw = t.tile_w, plane_in = t.h * t.w, plane_out = t.oh * t.ow;
  T* tile = reinterpret_cast<T*>(t.buf);  // [th][tw][L]
  T* wt = tile + th * tw * L;             // [taps][L]
  int64_t off[kDepthwiseTileTaps];  // tap (i, j): its position's offset from the tap (0, 0)
  for (int64_t i = 0; i < t.kh; ++i)
    for (int64_t j = 0; j < t.kw; ++j) off[i * t.kw + j] = (i * t.dh * tw + j * t.dw) * L;
  std::memset(tile, 0, sizeof(T) * static_cast<size_t>(th * tw * L));
  const T zp = static_cast<T>(t.zero_point);
  int64_t o = t.o0;
  for (; o + L <= t.o1; o += L) {
    const uint8_t* xg = t.x + o * plane_in;
    for (int64_t iy = 0; iy < t.h; ++iy) {
      T* trow = tile + ((iy + t.pt) * tw + t.pl) * L;
      for (int64_t ix = 0; ix < t.w; ix += L) {
        V r[L];
        for (int c = 0; c < L; ++c) {
          const uint8_t* s = xg + c * plane_in + iy * t.w + ix;
          r[c] = (t.x_end - s >= L ? P::codes(s) : dw_codes_tail<P>(s, t.x_end - s)) - zp;
        }
        P::transpose(r);
        const int64_t n = min64(L, t.w - ix);
        for (int64_t j = 0; j < n; ++j) dw_store<V>(trow + (ix + j) * L, r[j]);
      }
    }
    for (int64_t tp = 0; tp < taps; ++tp)
      for (int c = 0; c < L; ++c) wt[tp * L + c] = static_cast<T>(t.wf[(o + c) * taps + tp]);
    int64_t oy = 0, ox = 0;  // of position p0
    for (int64_t p0 = 0; p0 < plane_out; p0 += L) {
      const int64_t n = min64(L, plane_out - p0);
      const T* base[L];  // tap (0, 0) of positions p0 ... (past the plane: p0's, not stored)
      for (int k = 0; k < L; ++k) {
        base[k] = k < n ? tile + (oy * t.sh * tw + ox * t.sw) * L : base[0];
        if (k < n && ++ox == t.ow) ox = 0, ++oy;
      }
      V r[L] = {};
      for (int64_t tp = 0; tp < taps; ++tp) {
        const V w = dw_load<V>(wt + tp * L);
        const int64_t q = off[tp];
        for (int k = 0; k < L; ++k) r[k] = P::vfma(r[k], w, dw_load<V>(base[k] + q));
      }
      P::transpose(r);  // r[c]: channel o + c at positions p0 ...
      for (int c = 0; c < L; ++c) {
        const float m = t.x_scale * t.w_scale[o + c], b = t.bias[o + c];
        float* yo = t.y + (o + c) * plane_out + p0;
        const float* ro = kRes ? t.residual + (o + c) * plane_out + p0 : nullptr;
        if constexpr (P::FL == L) {
          if (n == L) {
            dw_store<V>(yo, depthwise_epilogue_vec<P, kRes, kRelu>(r[c], m, b, ro));
            continue;
          }
        }
        T a[L];
        dw_store<V>(a, r[c]);
        if (n == L) {  // L sums of T as float vectors of FL (int16: two halves)
          for (int k = 0; k < L; k += P::FL)
            dw_store<typename P::FV>(yo + k, depthwise_epilogue_vec<P, kRes, kRelu>(P::load_acc(a + k), m, b,
                                                                                     kRes ? ro + k : nullptr));
        } else {
          depthwise_epilogue<kRes, kRelu>(a, ro, yo, n, m, b);
        }
      }
    }
  }
  if (o < t.o1) {
    DepthwiseTask rest = t;
    rest.o0 = o;
    rest.tile_h = 0;
    depthwise_t<P, kRes, kRelu>(rest);
  }
}

// Calls f(std::bool_constant<residual>, std::bool_constant<relu>) for the task's epilogue, so
// each path writes `void conv(t) { dispatch_epilogue(t, [&](auto r, auto u) { conv_t<r, u>(t); }); }`.
template <typename Task, typename F>
inline void dispatch_epilogue(const Task& t, F&& f) {  // a ConvTask or a DepthwiseTask
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

template <typename P>
inline void depthwise_conv(const DepthwiseTask& t) {
  dispatch_epilogue(t, [&](auto res, auto relu) { depthwise_t<P, decltype(res)::value, decltype(relu)::value>(t); });
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

// The fallback margin of the reciprocal quantizer (see quantize in simd_x86_avx512.cc): with
// r = float32(1/s) and q = float32(x * r), |q - float32(x / s)| < |q| * 2^-22, so rint gives the
// same integer unless q lies within that distance of a half-integer (a possible tie or a
// boundary between q and the exact quotient). Lanes with |q| <= hi + 1 closer than this margin
// to a half-integer are recomputed with the division; farther lanes, and lanes beyond the clamp
// range, give the same code either way.
inline float quantize_margin(const QuantParams& q) {
  const float m = (q.hi > -q.lo ? q.hi : -q.lo) + 1.0f;
  return m * 0x1p-20f + 0x1p-20f;
}

}  // namespace
}  // namespace simd
}  // namespace qexport
