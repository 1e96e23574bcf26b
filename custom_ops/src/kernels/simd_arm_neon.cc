// The neon path: Advanced SIMD of ARMv8-A (every aarch64 CPU; the path for cores without the
// dot-product extension, e.g. Cortex-A53).
//
// Conv: the cell layout of simd.h, 8 positions per vector. Per step (4 channels x 1 tap) one
// vld4 of 8 cells deinterleaves the 4 channels; codes widen to int16 (exact, <= 255) and
// vmlal_laneq_s16 multiplies them by the int16 weight of (output channel, channel) into int32
// accumulators (modular, exact under the op's bound); 8 output channels x 2 halves = 16
// accumulators. The gemm is the portable code (compiled for aarch64, where the compiler vectorizes
// it with NEON); the means and the quantizer are simd_arm_common.h's.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"
#include "simd_arm_common.h"

namespace qexport {
namespace {

// Accumulators of vector `a0` (8 cells at b0 + off[s]) for the 8 channels of a weight block.
__attribute__((noinline)) void dot(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp,
                                   const int32_t* init, int32_t* out) {
  int32x4_t lo[kConvBlock], hi[kConvBlock];
  for (int o = 0; o < kConvBlock; ++o) lo[o] = hi[o] = vdupq_n_s32(init[o]);
  for (int64_t s = 0; s < steps; ++s, wp += kConvBlock * 4) {
    const uint8x8x4_t a = vld4_u8(b0 + off[s]);  // a.val[c]: channel c of the 8 positions
    int16x8_t x[4];
    for (int c = 0; c < 4; ++c) x[c] = vreinterpretq_s16_u16(vmovl_u8(a.val[c]));
    const int8x16_t w01 = vld1q_s8(wp), w23 = vld1q_s8(wp + 16);
    // w[k]: int16 weights of channels 2k, 2k+1: lane 4*(o%2) + c is (output o, input c).
    const int16x8_t w[4] = {vmovl_s8(vget_low_s8(w01)), vmovl_s8(vget_high_s8(w01)), vmovl_s8(vget_low_s8(w23)),
                            vmovl_s8(vget_high_s8(w23))};
#define QX_MAC(o, c)                                                                          \
  lo[o] = vmlal_laneq_s16(lo[o], vget_low_s16(x[c]), w[(o) / 2], 4 * ((o) % 2) + (c));       \
  hi[o] = vmlal_laneq_s16(hi[o], vget_high_s16(x[c]), w[(o) / 2], 4 * ((o) % 2) + (c));
#define QX_OC(o) QX_MAC(o, 0) QX_MAC(o, 1) QX_MAC(o, 2) QX_MAC(o, 3)
    QX_OC(0) QX_OC(1) QX_OC(2) QX_OC(3) QX_OC(4) QX_OC(5) QX_OC(6) QX_OC(7)
#undef QX_OC
#undef QX_MAC
  }
  for (int o = 0; o < kConvBlock; ++o) {
    vst1q_s32(out + o * VL, lo[o]);
    vst1q_s32(out + o * VL + 4, hi[o]);
  }
}

void conv(const ConvTask& t) { conv_with<&dot>(t); }

void relayout(const ConvTask& t) { simd::conv_relayout<InterleaveNeon>(t); }

// Constant-initialized.
void depthwise(const DepthwiseTask& t) { simd::depthwise_conv<DwNeon>(t); }

constexpr SimdKernels kKernels{Isa::kNeon, VL, 0, false, &relayout, &conv, nullptr, &plane_means_arm,
                               &quantize_arm, &max_code_portable, kConvBlock, false, 1, 1, &depthwise};

}  // namespace

const SimdKernels* simd_kernels_neon() noexcept { return &kKernels; }

}  // namespace qexport
