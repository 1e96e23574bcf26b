// The neon path: Advanced SIMD of ARMv8-A (every aarch64 CPU; the path for cores without the
// dot-product extension, e.g. Cortex-A53).
//
// Conv: the cell layout of simd.h, 8 positions per vector, two dot products:
// * codes of at most 7 bits (ConvTask::steps16 > 0; e.g. the 3- and 4-bit layers): 8-bit
//   multiplies, 8 per instruction. Per step one ld4 deinterleaves the step's 32 weights into the
//   8 output channels of each input channel, and per position one ld4r broadcasts its cell's 4
//   codes; smlal (int8 x int8 + int16) adds them into an int16 vector of the 8 output channels per
//   position, exact while a run of steps16 steps cannot overflow it (qconv.cc), then saddw into
//   int32. 48 instructions per 256 multiply-adds, where the int16 path needs about 90.
// * else (8-bit codes): one vld4 of 8 cells deinterleaves the 4 channels; codes widen to int16
//   (exact, <= 255) and vmlal_laneq_s16 multiplies them by the int16 weight of (output channel,
//   channel) into int32 accumulators (modular, exact under the op's bound); 8 output channels x 2
//   halves = 16 accumulators.
// The gemm is the portable code (compiled for aarch64, where the compiler vectorizes it with
// NEON); the means and the quantizer are simd_arm_common.h's.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "qexport/simd.h"
#include "qexport/simd_impl.h"
#include "simd_arm_common.h"

namespace qexport {
namespace {

// r[i][j] <-> r[j][i].
inline void transpose4(int32x4_t& r0, int32x4_t& r1, int32x4_t& r2, int32x4_t& r3) {
  const int32x4_t t0 = vtrn1q_s32(r0, r1), t1 = vtrn2q_s32(r0, r1), t2 = vtrn1q_s32(r2, r3), t3 = vtrn2q_s32(r2, r3);
  r0 = vreinterpretq_s32_s64(vtrn1q_s64(vreinterpretq_s64_s32(t0), vreinterpretq_s64_s32(t2)));
  r1 = vreinterpretq_s32_s64(vtrn1q_s64(vreinterpretq_s64_s32(t1), vreinterpretq_s64_s32(t3)));
  r2 = vreinterpretq_s32_s64(vtrn2q_s64(vreinterpretq_s64_s32(t0), vreinterpretq_s64_s32(t2)));
  r3 = vreinterpretq_s32_s64(vtrn2q_s64(vreinterpretq_s64_s32(t1), vreinterpretq_s64_s32(t3)));
}

// acc += position a's 4 codes (ld4r: code c in every lane of v<c>) times w0..w3 (the 4 input
// channels' weights of the 8 output channels), then a += 4: ld4r's post-indexed form, which the
// compiler does not emit for a run of consecutive cells (it adds each cell's address first: 8
// more instructions per step), and whose 4 destinations it then copies around.
inline void mac_cell(int16x8_t& acc, const int8_t*& a, int8x8_t w0, int8x8_t w1, int8x8_t w2, int8x8_t w3) {
#if defined(__GNUC__)
  asm("ld4r {v0.8b, v1.8b, v2.8b, v3.8b}, [%1], #4\n\t"
      "smlal %0.8h, v0.8b, %2.8b\n\t"
      "smlal %0.8h, v1.8b, %3.8b\n\t"
      "smlal %0.8h, v2.8b, %4.8b\n\t"
      "smlal %0.8h, v3.8b, %5.8b"
      : "+w"(acc), "+r"(a)
      : "w"(w0), "w"(w1), "w"(w2), "w"(w3), "m"(*reinterpret_cast<const int8_t(*)[4]>(a))
      : "v0", "v1", "v2", "v3");
#else
  const int8x8x4_t x = vld4_dup_s8(a);
  acc = vmlal_s8(vmlal_s8(vmlal_s8(vmlal_s8(acc, x.val[0], w0), x.val[1], w1), x.val[2], w2), x.val[3], w3);
  a += 4;
#endif
}

// The 8-bit dot product (codes <= 127, runs of steps16 steps; see the top of the file). lo[p], hi[p]:
// the int32 sums of position p for output channels 0..3 and 4..7, transposed at the end.
__attribute__((noinline)) void dot8(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp,
                                    const int32_t* init, int32_t* out, int64_t steps16) {
  int32x4_t lo[VL], hi[VL];
  const int32x4_t i0 = vld1q_s32(init), i1 = vld1q_s32(init + 4);
  for (int p = 0; p < VL; ++p) lo[p] = i0, hi[p] = i1;
  for (int64_t s0 = 0; s0 < steps; s0 += steps16) {
    const int64_t s1 = simd::min64(steps, s0 + steps16);
    int16x8_t acc[VL];
    for (int p = 0; p < VL; ++p) acc[p] = vdupq_n_s16(0);
    for (int64_t s = s0; s < s1; ++s, wp += kConvBlock * 4) {
      const int8x8x4_t w = vld4_s8(wp);  // w.val[c]: input channel c's weights of the 8 output channels
      const int8_t* a = reinterpret_cast<const int8_t*>(b0 + off[s]);
      for (int p = 0; p < VL; ++p) mac_cell(acc[p], a, w.val[0], w.val[1], w.val[2], w.val[3]);
    }
    for (int p = 0; p < VL; ++p) {
      lo[p] = vaddw_s16(lo[p], vget_low_s16(acc[p]));
      hi[p] = vaddw_high_s16(hi[p], acc[p]);
    }
  }
  transpose4(lo[0], lo[1], lo[2], lo[3]);  // lo[o]: output channel o, positions 0..3
  transpose4(lo[4], lo[5], lo[6], lo[7]);  // lo[4 + o]: output channel o, positions 4..7
  transpose4(hi[0], hi[1], hi[2], hi[3]);
  transpose4(hi[4], hi[5], hi[6], hi[7]);
  for (int o = 0; o < 4; ++o) {
    vst1q_s32(out + o * VL, lo[o]);
    vst1q_s32(out + o * VL + 4, lo[4 + o]);
    vst1q_s32(out + (4 + o) * VL, hi[o]);
    vst1q_s32(out + (4 + o) * VL + 4, hi[4 + o]);
  }
}

// The int16 dot product (any codes): accumulators of vector `a0` (8 cells at b0 + off[s]) for the
// 8 channels of a weight block.
__attribute__((noinline)) void dot(const uint8_t* b0, const int32_t* off, int64_t steps, const int8_t* wp,
                                   const int32_t* init, int32_t* out, int64_t /*steps16*/) {
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

void conv(const ConvTask& t) {
  if (t.steps16 > 0) {
    conv_with<&dot8>(t);
  } else {
    conv_with<&dot>(t);
  }
}

void relayout(const ConvTask& t) { simd::conv_relayout<InterleaveNeon>(t); }


constexpr SimdKernels kKernels{Isa::kNeon, VL, 0, false, &relayout, &conv, nullptr, &plane_means_arm,
                               &quantize_arm, &max_code_portable, kConvBlock, false, 1, 1, &depthwise_arm};

}  // namespace

const SimdKernels* simd_kernels_neon() noexcept { return &kKernels; }

}  // namespace qexport
