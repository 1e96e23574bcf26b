// The neon path: Advanced SIMD of ARMv8-A (every aarch64 CPU; the path for cores without the
// dot-product extension, e.g. Cortex-A53).
//
// Conv: the cell layout of simd.h, 8 positions per vector. Per step (4 channels x 1 tap) one
// vld4 of 8 cells deinterleaves the 4 channels; codes widen to int16 (exact, <= 255) and
// vmlal_laneq_s16 multiplies them by the int16 weight of (output channel, channel) into int32
// accumulators (modular, exact under the op's bound); 8 output channels x 2 halves = 16
// accumulators. The gemm, the means and the quantizer are the portable code (compiled for
// aarch64, where the compiler vectorizes them with NEON).
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"

namespace qexport {
namespace {

constexpr int VL = 8;

inline float32x4_t relu_f32(float32x4_t y) { return vbslq_f32(vcltq_f32(y, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), y); }

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

template <bool kRes, bool kRelu>
void conv_t(const ConvTask& t) {
  const ConvGeometry& g = *t.g;
  const int64_t plane = g.oh * g.ow;
  alignas(16) int32_t acc[kConvBlock * VL];
  alignas(16) float tmp[VL];
  for (int64_t b = t.b0; b < t.b1; ++b) {
    const int64_t o0 = b * kConvBlock;
    const int64_t nvalid = simd::min64(kConvBlock, t.og - o0);
    const int8_t* wb = t.w + b * g.steps * (kConvBlock * 4);
    for (int64_t v = t.v0; v < t.v1; ++v) {
      dot(t.buf + g.vstart[v] * 4, g.off, g.steps, wb, t.init + o0, acc);
      const ConvSegment* seg = g.seg + g.vseg[v];
      const int ns = g.vseg[v + 1] - g.vseg[v];
      for (int64_t o = 0; o < nvalid; ++o) {
        const float32x4_t m = vdupq_n_f32(t.x_scale * t.w_scale[o0 + o]);
        const float32x4_t bias = vdupq_n_f32(t.bias[o0 + o]);
        for (int h = 0; h < 2; ++h) {
          float32x4_t y = vmulq_f32(vcvtq_f32_s32(vld1q_s32(acc + o * VL + 4 * h)), m);
          y = vaddq_f32(y, bias);
          if (!kRes && kRelu) y = relu_f32(y);
          vst1q_f32(tmp + 4 * h, y);
        }
        float* yo = t.y + (o0 + o) * plane;
        const float* ro = kRes ? t.residual + (o0 + o) * plane : nullptr;
        simd::store_segments<kRes, kRelu>(tmp, seg, ns, yo, ro);
      }
    }
  }
}

void conv(const ConvTask& t) {
  simd::dispatch_epilogue(t, [&](auto res, auto relu) { conv_t<decltype(res)::value, decltype(relu)::value>(t); });
}

void relayout(const ConvTask& t) { simd::conv_relayout<simd::InterleavePortable>(t); }

// Constant-initialized.
constexpr SimdKernels kKernels{Isa::kNeon, VL, 0, false, &relayout, &conv, nullptr, &plane_means_portable,
                               &quantize_portable, &max_code_portable, kConvBlock, false, 1};

}  // namespace

const SimdKernels* simd_kernels_neon() noexcept { return &kKernels; }

}  // namespace qexport
