// The amx path's conv: AMX tiles (TDPBSUD: signed 8-bit weights x unsigned 8-bit codes, int32
// accumulators that wrap modulo 2^32, no saturation) for the dot products, AVX-512 for the
// re-layout and the epilogue. Compiled with -mamx-tile -mamx-int8 and the AVX-512 flags; used
// only when the CPU has AMX and Linux grants the process the tile state (isa.cc). The rest of the
// path (gemm, means, quantizer) is the avx512vnni code (simd.cc merges the tables).
//
// Layout (simd.h, ConvGeometry with expand = true): the codes of a sample are re-laid out into
// planes of 4-channel cells, one per (row phase, kernel column, channel group), so that the 16
// planes of a chunk hold, at the same cell, 64 consecutive K values of one output position. A
// tile product C[16 channels][16 positions] += A[16 channels][64 K] x B[16 planes][16 cells]
// (B rows are the 16 planes at the vector's position: a strided tile load) is one vector of 16
// outputs for 16 channels. Vectors go in groups of 2 into two alternating sets of accumulator
// tiles, so that one group's products overlap the previous group's store and epilogue. The
// accumulators start from the zero-point correction init[o] (a tile load) and end in the same
// epilogue as the avx512vnni path.
#include <immintrin.h>

#include <cstdint>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"
#include "simd_x86_common.h"

namespace qexport {
namespace {

constexpr int kBlock = 16;  // output channels per tile

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// tmm0..3: accumulators (16 channels x 16 int32), two sets of two; tmm4: weights (16 channels x
// 64 int8); tmm6, tmm7: codes (16 planes x 64 bytes). Checked at the start of every task (sttilecfg, a few
// ns) and loaded when it differs (ldtilecfg, ~50 ns): other code on the same thread (ONNX
// Runtime's own AMX kernels) may have configured the tiles otherwise. The configuration is left
// in place afterwards (as ONNX Runtime's kernels do).
inline void configure_tiles() {
  TileConfig want{};
  want.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    want.rows[i] = 16;
    want.colsb[i] = 64;
  }
  alignas(64) TileConfig have{};
  _tile_storeconfig(&have);
  const uint8_t* a = reinterpret_cast<const uint8_t*>(&want);
  const uint8_t* b = reinterpret_cast<const uint8_t*>(&have);
  for (size_t i = 0; i < sizeof(TileConfig); ++i) {
    if (a[i] != b[i]) {
      _tile_loadconfig(&want);
      return;
    }
  }
}

// The dot products of a group of 2 vectors into accumulator tiles C0, C1 (set 0: tmm0, tmm1;
// set 1: tmm2, tmm3), starting from init. (Tile numbers are part of the instruction: literals.)
#define QX_GROUP_DOTS(C0, C1)                        \
  _tile_loadd(C0, init, VL * 4);                     \
  _tile_loadd(C1, init, VL * 4);                     \
  for (int64_t s = 0; s < g.steps; ++s) {            \
    const int64_t off = g.off[s];                    \
    _tile_loadd(4, wb + s * (kBlock * 64), 64);      \
    _tile_loadd(6, b0 + off, stride);                \
    _tile_dpbsud(C0, 4, 6);                          \
    _tile_loadd(7, b1 + off, stride);                \
    _tile_dpbsud(C1, 4, 7);                          \
  }

inline void group_dots(int set, const ConvGeometry& g, const int8_t* wb, const int32_t* init, const uint8_t* b0,
                       const uint8_t* b1, int64_t stride) {
  if (set == 0) {
    QX_GROUP_DOTS(0, 1)
  } else {
    QX_GROUP_DOTS(2, 3)
  }
}
#undef QX_GROUP_DOTS

inline void group_store(int set, int32_t* acc) {
  if (set == 0) {
    _tile_stored(0, acc, VL * 4);
    _tile_stored(1, acc + kBlock * VL, VL * 4);
  } else {
    _tile_stored(2, acc, VL * 4);
    _tile_stored(3, acc + kBlock * VL, VL * 4);
  }
}

template <bool kRes, bool kRelu>
void conv_t(const ConvTask& t) {
  const ConvGeometry& g = *t.g;
  const int64_t plane = g.oh * g.ow;
  const int64_t stride = g.plane_pos * 4;  // bytes between the planes of a chunk
  configure_tiles();
  alignas(64) int32_t init[kBlock * VL];
  alignas(64) int32_t acc[2][2 * kBlock * VL];
  for (int64_t b = t.b0; b < t.b1; ++b) {
    BlockEpilogue e;
    const int64_t o0 = b * kBlock;
    e.nvalid = simd::min64(kBlock, t.og - o0);
    for (int64_t o = 0; o < e.nvalid; ++o) {
      e.m[o] = t.x_scale * t.w_scale[o0 + o];
      e.b[o] = t.bias[o0 + o];
      e.y[o] = t.y + (o0 + o) * plane;
      e.r[o] = kRes ? t.residual + (o0 + o) * plane : nullptr;
    }
    for (int o = 0; o < kBlock; ++o) _mm512_store_si512(init + o * VL, _mm512_set1_epi32(t.init[o0 + o]));
    const int8_t* wb = t.w + b * g.steps * (kBlock * 64);
    // Groups of 2 vectors alternate between the two accumulator sets, software-pipelined: the
    // dot products of group k are issued before group k-1's results are stored and finished,
    // so the tile unit works while the previous group drains.
    const int64_t groups = (t.v1 - t.v0 + 1) / 2;
    auto base = [&](int64_t v) { return t.buf + g.vstart[v < t.v1 ? v : t.v1 - 1] * 4; };
    auto finish = [&](int64_t k, const int32_t* a) {
      const int64_t v = t.v0 + 2 * k;
      for (int64_t p = 0; p < 2 && v + p < t.v1; ++p)
        finish_vector<kRes, kRelu>(a + p * kBlock * VL, e, g.seg + g.vseg[v + p], g.vseg[v + p + 1] - g.vseg[v + p]);
    };
    for (int64_t k = 0; k <= groups; ++k) {
      if (k < groups) {
        const int64_t v = t.v0 + 2 * k;
        group_dots(static_cast<int>(k % 2), g, wb, init, base(v), base(v + 1), stride);
      }
      if (k > 0) {
        int32_t* a = acc[(k - 1) % 2];
        group_store(static_cast<int>((k - 1) % 2), a);
        finish(k - 1, a);
      }
    }
  }
}

void conv(const ConvTask& t) {
  simd::dispatch_epilogue(t, [&](auto res, auto relu) { conv_t<decltype(res)::value, decltype(relu)::value>(t); });
}

void relayout(const ConvTask& t) { simd::conv_relayout<Interleave>(t); }

// Constant-initialized (no code runs when the library loads). The gemm, means, quantizer and
// code check come from the avx512vnni table (simd.cc).
constexpr SimdKernels kKernels{Isa::kAmx, VL,      0,      false, &relayout, &conv, nullptr, nullptr,
                               nullptr,   nullptr, kBlock, true,  4,         8};

}  // namespace

const SimdKernels* simd_kernels_amx() noexcept { return &kKernels; }

}  // namespace qexport
