// The dotprod path: ARMv8.2-A dot product (sdot: 4 signed 8-bit products per int32 lane, no
// intermediate saturation), e.g. Cortex-A55/A76 and later. Compiled with
// -march=armv8.2-a+dotprod; used only when getauxval(AT_HWCAP) has HWCAP_ASIMDDP (isa.cc).
//
// sdot is signed x signed: codes are stored as c - act_offset (act_offset = 128 for 8-bit codes,
// else 0, so they fit int8) and the accumulators start from init[o] = -(zp - act_offset) sum w.
// Conv: the cell layout of simd.h, 8 positions per vector (two 16-byte loads of 4 cells per
// step), vdotq_laneq_s32 with the 4 weights of an output channel as the lane operand; 8 output
// channels x 2 = 16 accumulators. Gemm: 8 output channels per block. Means and quantizer:
// simd_arm_common.h's.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"
#include "simd_arm_common.h"

namespace qexport {
namespace {

using simd::load_i32;

__attribute__((noinline)) void dot(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp,
                                   const int32_t* init, int32_t* out, int64_t /*steps16*/) {
  int32x4_t lo[kConvBlock], hi[kConvBlock];
  for (int o = 0; o < kConvBlock; ++o) lo[o] = hi[o] = vdupq_n_s32(init[o]);
  for (int64_t s = 0; s < steps; ++s, wp += kConvBlock * 4) {
    const int8x16_t a0 = vreinterpretq_s8_u8(vld1q_u8(b0 + off[s]));       // cells of positions 0..3
    const int8x16_t a1 = vreinterpretq_s8_u8(vld1q_u8(b0 + off[s] + 16));  // positions 4..7
    const int8x16_t w0 = vld1q_s8(wp), w1 = vld1q_s8(wp + 16);           // channels 0..3, 4..7
#define QX_DOT(o, wv)                                         \
  lo[o] = vdotq_laneq_s32(lo[o], a0, wv, (o) % 4);            \
  hi[o] = vdotq_laneq_s32(hi[o], a1, wv, (o) % 4);
    QX_DOT(0, w0) QX_DOT(1, w0) QX_DOT(2, w0) QX_DOT(3, w0)
    QX_DOT(4, w1) QX_DOT(5, w1) QX_DOT(6, w1) QX_DOT(7, w1)
#undef QX_DOT
  }
  for (int o = 0; o < kConvBlock; ++o) {
    vst1q_s32(out + o * VL, lo[o]);
    vst1q_s32(out + o * VL + 4, hi[o]);
  }
}

void conv(const ConvTask& t) { conv_with<&dot>(t); }

void relayout(const ConvTask& t) { simd::conv_relayout<InterleaveNeon>(t); }

// ------------------------------------------------------------------------------ gemm
void gemm(const GemmTask& t) {
  simd::gemm_rows(t);
  const int64_t kg = t.kp / 4;
  alignas(16) float tmp[VL];
  for (int64_t b = t.b0; b < t.b1; ++b) {
    const int8_t* wb = t.w + b * kg * (VL * 4);
    const int64_t o0 = b * VL;
    const int64_t nvalid = simd::min64(VL, t.o - o0);
    for (int64_t n = t.n0; n < t.n1; ++n) {
      const uint8_t* xr = t.buf + (n - t.n0) * t.kp;
      int32x4_t acc0 = vld1q_s32(t.init + o0), acc1 = vld1q_s32(t.init + o0 + 4);
      for (int64_t k = 0; k < kg; ++k) {
        const int8x16_t x4 = vreinterpretq_s8_s32(vdupq_n_s32(load_i32(xr + 4 * k)));
        acc0 = vdotq_s32(acc0, vld1q_s8(wb + k * (VL * 4)), x4);
        acc1 = vdotq_s32(acc1, vld1q_s8(wb + k * (VL * 4) + 16), x4);
      }
      const float xs = t.x_scale[t.x_scale_per_sample ? n : 0];
      vst1q_f32(tmp, vcvtq_f32_s32(acc0));
      vst1q_f32(tmp + 4, vcvtq_f32_s32(acc1));
      float* out = t.y + n * t.o + o0;
      for (int64_t o = 0; o < nvalid; ++o) {  // the scalar epilogue of the portable path
        float y = tmp[o] * (xs * t.w_scale[o0 + o]);
        y = y + t.bias[o0 + o];
        if (t.relu) y = (y < 0.0f) ? 0.0f : y;
        out[o] = y;
      }
    }
  }
}


constexpr SimdKernels kKernels{Isa::kDotprod, VL, VL, true, &relayout, &conv, &gemm, &plane_means_arm,
                               &quantize_arm, &max_code_portable, kConvBlock, false, 1, 1, &depthwise_arm};

}  // namespace

const SimdKernels* simd_kernels_dotprod() noexcept { return &kKernels; }

}  // namespace qexport
