// The path table (include/qexport/simd.h): the portable kernels and the lookup of the ISA files'
// tables. This file is compiled for the baseline ISA.
#include "qexport/simd.h"
#include "qexport/simd_impl.h"

namespace qexport {

void plane_means_portable(const float* x, size_t channels, size_t plane, double* out) {
  simd::plane_means_lanes(x, channels, plane, out);
}

namespace {
// clamp(rint(x / s), lo, hi) + zero_point with a float32 division and NaN -> zero point.
//
// Clamping before rounding gives the same integer as rounding first (lo and hi are integers and
// rint is monotonic), and for |v| <= 255 adding and subtracting 1.5 * 2^23 rounds v to an integer
// half to even in the default rounding mode: exactly std::nearbyint, but branch-free and
// vectorizable (the build has -ffp-contract=off and no -ffast-math, so the two additions stay).
inline uint8_t quantize_one(float x, float s, float lo, float hi, int zero_point) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  float v = x / s;
  v = (v != v) ? 0.0f : v;
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  const float r = (v + kRound) - kRound;
  return static_cast<uint8_t>(static_cast<int>(r) + zero_point);
}
}  // namespace

void quantize_portable(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) {
  const float lo = q.lo, hi = q.hi;
  const int zp = q.zero_point;
  for (size_t i = 0; i < count; ++i) y[i] = quantize_one(x[i], scale, lo, hi, zp);
}

uint8_t max_code_portable(const uint8_t* x, size_t count) {
  uint8_t mx = 0;
  for (size_t i = 0; i < count; ++i) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

void depthwise_portable(const DepthwiseTask& t) { simd::depthwise_conv<simd::DwGeneric<simd::DwV4, 8>>(t); }

namespace {
constexpr SimdKernels kPortable{Isa::kScalar,      0,    0, false, nullptr, nullptr, nullptr, &plane_means_portable,
                                &quantize_portable, &max_code_portable, kConvBlock, false, 2, 1, &depthwise_portable};
}  // namespace

const SimdKernels* simd_kernels(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar: return &kPortable;
#ifdef QEXPORT_HAVE_AVX2
    case Isa::kAvx2: return simd_kernels_avx2();
#endif
#ifdef QEXPORT_HAVE_AVX512VNNI
    case Isa::kAvx512Vnni: return simd_kernels_avx512vnni();
#endif
#ifdef QEXPORT_HAVE_AMX
    case Isa::kAmx: {
      // The AMX conv with the avx512vnni gemm, means, quantizer and code check (this file is
      // compiled for the baseline ISA: building the table runs no AVX-512 instruction).
      static const SimdKernels merged = [] {
        SimdKernels k = *simd_kernels_amx();
        const SimdKernels& v = *simd_kernels_avx512vnni();
        k.gemm = v.gemm, k.gemm_block = v.gemm_block;
        k.plane_means = v.plane_means, k.quantize = v.quantize, k.max_code = v.max_code;
        k.depthwise = v.depthwise;
        return k;
      }();
      return &merged;
    }
#endif
#ifdef QEXPORT_HAVE_NEON
    case Isa::kNeon: return simd_kernels_neon();
#endif
#ifdef QEXPORT_HAVE_DOTPROD
    case Isa::kDotprod: return simd_kernels_dotprod();
#endif
    default: return nullptr;
  }
}

namespace {
// The path of a function taken from another table: the amx table's non-conv kernels are the
// avx512vnni ones (simd_kernels above).
Isa owner(const SimdKernels& k) noexcept { return k.isa == Isa::kAmx ? Isa::kAvx512Vnni : k.isa; }
}  // namespace

Isa conv_path(const SimdKernels& k) noexcept { return k.conv == nullptr ? Isa::kScalar : k.isa; }

Isa gemm_path(const SimdKernels& k) noexcept { return k.gemm == nullptr ? Isa::kScalar : owner(k); }

Isa depthwise_path(const SimdKernels& k) noexcept {
  return k.depthwise == &depthwise_portable ? Isa::kScalar : owner(k);
}

Isa vector_path(const SimdKernels& k) noexcept {
  return k.quantize == &quantize_portable && k.plane_means == &plane_means_portable ? Isa::kScalar : owner(k);
}

}  // namespace qexport
