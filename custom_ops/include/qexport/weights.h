// Packed-weight decoding (through the codecs of codec.h), the shared part of the weighted ops (attributes,
// scales, epilogue) and the integer dot-product micro-kernels (docs/ops.md, "Weighted ops").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qexport/codec.h"
#include "qexport/common.h"
#include "qexport/simd.h"

namespace qexport {

// The version-1 ops name their format (PostConv, PotGemm, UniformConvFused, ...): the codec name
// of such an op name, or nullptr for QConv / QGemm / QConvFused, which read attribute `format`.
const char* v1_format(const char* op) noexcept;


// Multiple of 16 >= k (rows of decoded weights and im2col rows are zero-padded to it, so that the
// dot-product loops have no remainder).
inline int64_t padded_length(int64_t k) { return (k + 15) / 16 * 16; }

// WeightedAttrs::packed_bytes of an entropy-coded codec: the length depends on the weights.
constexpr int64_t kVariableLength = -1;

// Attributes shared by the conv and gemm ops, validated at kernel creation.
struct WeightedAttrs {
  const WeightCodec* codec = nullptr;
  std::vector<int> bits;     // bit-width of each output channel (O entries)
  std::array<WeightLut, 9> luts;  // luts[b]: the level table of bit-width b (those in `bits`)
  int64_t wmax = 0;          // largest |weight| over the channels' bit-widths
  int act_bits = 0;
  int act_zero_point = 0;
  bool relu = false;
  std::vector<int64_t> weight_shape;
  int64_t out_channels = 0;  // O = weight_shape[0]
  int64_t k = 0;             // dot-product length: (C/group)*kH*kW or K
  int64_t k_padded = 0;      // padded_length(k)
  int64_t count = 0;         // numel(weight_shape)
  int64_t packed_bytes = 0;  // ceil(k * sum(bits) / 8); kVariableLength for an entropy-coded codec
  bool int64_acc = false;    // K * A * Wmax > INT32_MAX
  int64_t chunk = 0;         // int32 partial-sum length (k_padded unless int64_acc)
};
// Reads and checks format (or the version-1 op name's format), bits (one value for an
// entropy-coded codec), act_bits, act_zero_point, relu and weight_shape (rank `rank`).
WeightedAttrs read_weighted_attrs(const OrtKernelInfo* info, const char* op, size_t rank);

// Unpacks and decodes the fixed-width stream (row o: k codes of bits[o] bits; docs/ops.md "Weight
// codecs") or, for an entropy-coded codec, the rANS stream of all codes (docs/ops.md "Per-parameter
// formats and the entropy-coded stream") into `a.out_channels` rows of `a.k` int16 weights, row
// stride a.k_padded (zero padding). Checks the exact length, zero padding bits and canonical codes
// (entropy-coded: the table, every read, the final state and that every byte is read); errors name
// input 'W'.
void decode_weights(const char* op, const WeightedAttrs& a, const uint8_t* packed, int64_t packed_len,
                    int16_t* out);

// Weights, scales and bias of a weighted op: decoded once at kernel creation when W is a constant
// initializer, else at every Compute.
class WeightedState {
 public:
  WeightedState(const OrtKernelInfo* info, const char* op, WeightedAttrs attrs);

  const WeightedAttrs& attrs() const { return a_; }
  const char* op() const { return op_; }

  // The decoded weights (out_channels x k_padded): the constant ones, or input 'W' decoded into
  // `scratch`.
  const int16_t* weights(Ort::KernelContext& ctx, std::vector<int16_t>& scratch) const;

  struct Scales {
    const float* x_scale = nullptr;
    bool x_scale_per_sample = false;
    const float* w_scale = nullptr;
    const float* bias = nullptr;
  };
  // Reads and checks X_scale (N or 1 entries), W_scale and B (O entries).
  Scales scales(Ort::KernelContext& ctx, int64_t n) const;

  // Every code of X must be <= 2^act_bits - 1 (checked with the path's max_code).
  void check_codes(const uint8_t* x, size_t count, const SimdKernels* simd) const;

  // True when W is a constant initializer (decoded once, at kernel creation).
  bool weights_constant() const { return w_constant_; }
  // The decoded constant weights (valid when weights_constant()).
  const int16_t* weights_at_creation() const { return w_.data(); }

 private:
  const char* op_;
  WeightedAttrs a_;
  bool w_constant_ = false;
  std::vector<int16_t> w_;
};

// Weights re-packed for the SIMD paths (simd.h), with the accumulator start values
// init[o] = -(act_zero_point - act_offset) * sum_k w[o, k] (wrapped to int32: the kernels' sums
// are exact modulo 2^32 and the op's bound keeps the result in int32).
struct PackedWeights {
  std::vector<int8_t> w;
  std::vector<int32_t> init;
};

// Conv: per group, per block of kConvBlock output channels, per step s = g4 * kH*kW + i*kW + j
// (4 input channels 4*g4 .. 4*g4+3 of the group at tap (i, j)): [kConvBlock][4] int8, zero for
// channels beyond the group's. `decoded` is decode_weights' output. fold (one input channel per
// group, kW <= 4: simd.h's folded layout): step s = i, byte j the weight at tap (i, j).
void pack_conv_weights(const WeightedAttrs& a, const int16_t* decoded, int64_t group, int64_t kh, int64_t kw,
                       int act_offset, PackedWeights* out, bool fold = false);

// Conv for AMX tiles (the expanded layout of simd.h's ConvGeometry): per group, per block of
// 16 output channels, per kernel row i and chunk c of 16 expanded planes (plane r of the chunk
// is kernel column j, channel group g4 with j * cg4 + g4 = 16 c + r): [16 channels][64] int8,
// byte 4 r + e of a channel's row being its weight for input channel 4 g4 + e at tap (i, j);
// zero for planes and channels beyond the group's.
void pack_conv_weights_tiles(const WeightedAttrs& a, const int16_t* decoded, int64_t group, int64_t kh, int64_t kw,
                             int act_offset, PackedWeights* out);

// Gemm: per block of `block` output channels, per 4 inputs: [block][4] int8 (K padded to a
// multiple of 4 with zero weights).
void pack_gemm_weights(const WeightedAttrs& a, const int16_t* decoded, int block, int act_offset,
                       PackedWeights* out);

// y = float32(acc) * m; y = y + b; relu: y < 0 ? 0 : y -- each a single float32 operation.
template <typename Acc>
inline float epilogue(Acc acc, float m, float b, bool relu) {
  float y = static_cast<float>(acc) * m;
  y = y + b;
  if (relu) y = (y < 0.0f) ? 0.0f : y;
  return y;
}

// ---------------------------------------------------------------------- dot products
// Plain loops over contiguous int16 data that the compiler vectorizes (pmaddwd / smlal);
// partial sums stay in int32, which the overflow bound guarantees.
inline void dot1_i32(const int16_t* __restrict a, const int16_t* __restrict w, size_t n, int32_t* out) {
  int32_t s = 0;
  for (size_t k = 0; k < n; ++k) s += static_cast<int32_t>(a[k]) * static_cast<int32_t>(w[k]);
  *out = s;
}

inline void dot4_i32(const int16_t* __restrict a, const int16_t* __restrict w0, const int16_t* __restrict w1,
                     const int16_t* __restrict w2, const int16_t* __restrict w3, size_t n, int32_t* out) {
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t k = 0; k < n; ++k) {
    const int32_t x = a[k];
    s0 += x * w0[k];
    s1 += x * w1[k];
    s2 += x * w2[k];
    s3 += x * w3[k];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// acc[r] = sum_{k < len} a[k] * w[r * stride + k] for r < rows (rows <= 4), exactly: partial
// sums over at most `chunk` elements in int32 (chunk is chosen so that they cannot overflow),
// added into Acc (int32 when the whole sum fits, int64 otherwise).
template <typename Acc>
inline void dot_rows(const int16_t* a, const int16_t* w, size_t stride, size_t rows, size_t len, size_t chunk,
                     Acc* acc) {
  for (size_t r = 0; r < rows; ++r) acc[r] = 0;
  for (size_t k0 = 0; k0 < len; k0 += chunk) {
    const size_t n = (len - k0 < chunk) ? len - k0 : chunk;
    int32_t part[4];
    if (rows == 4) {
      dot4_i32(a + k0, w + k0, w + stride + k0, w + 2 * stride + k0, w + 3 * stride + k0, n, part);
    } else {
      for (size_t r = 0; r < rows; ++r) dot1_i32(a + k0, w + r * stride + k0, n, part + r);
    }
    for (size_t r = 0; r < rows; ++r) acc[r] += static_cast<Acc>(part[r]);
  }
}

}  // namespace qexport

namespace qexport {

// The op object of a weighted op: inputs X (uint8), X_scale, W (uint8), W_scale, B; output Y.
// Kernel is constructed as Kernel(info, op_name) and reports errors by throwing.
template <typename Kernel>
struct WeightedOp : Ort::CustomOpBase<WeightedOp<Kernel>, Kernel, /*WithStatus=*/true> {
  explicit WeightedOp(const char* name) : name_(name) {}

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    return guarded(name_, node_name(info), [&] { *kernel = new Kernel(info, name_); });
  }

  const char* GetName() const { return name_; }
  size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return (index == 0 || index == 2) ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  const char* name_;
};

}  // namespace qexport
