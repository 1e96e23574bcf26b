// Weight formats, packed-weight decoding and the shared part of the weighted ops
// (see include/qexport/weights.h and docs/ops.md).
#include "qexport/weights.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace qexport {

const char* v1_format(const char* op) noexcept {
  const std::string name(op);
  if (name == "QConv" || name == "QGemm" || name == "QConvFused") return nullptr;
  if (name.rfind("Post", 0) == 0) return "post";
  if (name.rfind("Pot", 0) == 0) return "pot";
  if (name.rfind("Uniform", 0) == 0) return "uniform";
  return nullptr;
}

namespace {
// The codec and per-channel bit-widths of a weighted op. Version 2 (QConv ...): attribute
// `format` names the codec, `bits` (INTS) has 1 or O entries. Version 1: the op name gives the
// format and `bits` is one INT.
void read_format_and_bits(const Attributes& attrs, const char* op, WeightedAttrs* a) {
  const char* fixed = v1_format(op);
  const std::string format = fixed != nullptr ? fixed : attrs.get_string("format", "");
  if (format.empty()) invalid(op, "attribute 'format' is missing (a weight codec: ", codec_names(), ")");
  a->codec = find_codec(format);
  if (a->codec == nullptr)
    invalid(op, "attribute 'format'='", format, "' is not a weight codec of this library (", codec_names(), ")");
  std::vector<int64_t> bits;
  if (fixed != nullptr) {
    bits.push_back(attrs.get_int("bits"));
  } else {
    bits = attrs.get_ints("bits");
  }
  if (bits.size() != 1 && static_cast<int64_t>(bits.size()) != a->out_channels)
    invalid(op, "attribute 'bits' has ", bits.size(), " entries; expected 1 (every output channel) or ",
            a->out_channels, " (one per output channel)");
  const WeightCodec& c = *a->codec;
  // The entropy-coded stream codes every weight at one width (the widest a parameter may have).
  if (c.entropy_coded && std::any_of(bits.begin(), bits.end(), [&](int64_t b) { return b != bits[0]; }))
    invalid(op, "attribute 'bits'=", list_str(bits), " has more than one value: ", c.name,
            " weights take one bit-width for every output channel (the widest a parameter may have)");
  a->bits.assign(static_cast<size_t>(a->out_channels), 0);
  for (int64_t o = 0; o < a->out_channels; ++o) {
    const int64_t b = bits[bits.size() == 1 ? 0 : static_cast<size_t>(o)];
    if (b < c.min_bits || b > c.max_bits)
      invalid(op, "attribute 'bits'=", b, bits.size() == 1 ? "" : " (output channel " + std::to_string(o) + ")",
              " is out of range for ", c.name, " weights (", c.min_bits, "..", c.max_bits, ")");
    a->bits[static_cast<size_t>(o)] = static_cast<int>(b);
    WeightLut& lut = a->luts[static_cast<size_t>(b)];
    if (lut.bits == 0) lut = make_weight_lut(c, static_cast<int>(b));
    if (lut.wmax > a->wmax) a->wmax = lut.wmax;
  }
}
}  // namespace

WeightedAttrs read_weighted_attrs(const OrtKernelInfo* info, const char* op, size_t rank) {
  Attributes attrs(info, op);
  WeightedAttrs a;

  const int64_t act_bits = attrs.get_int("act_bits");
  if (act_bits < 2 || act_bits > 8) invalid(op, "attribute 'act_bits'=", act_bits, " is out of range (2..8)");
  a.act_bits = static_cast<int>(act_bits);

  const int64_t zp = attrs.get_int("act_zero_point");
  const int64_t code_max = (int64_t{1} << act_bits) - 1;
  if (zp < 0 || zp > code_max)
    invalid(op, "attribute 'act_zero_point'=", zp, " is out of range (0..", code_max, " for act_bits=", act_bits, ")");
  a.act_zero_point = static_cast<int>(zp);

  const int64_t relu = attrs.get_int("relu", 0);
  if (relu != 0 && relu != 1) invalid(op, "attribute 'relu'=", relu, " must be 0 or 1");
  a.relu = relu == 1;

  a.weight_shape = attrs.get_ints("weight_shape");
  if (a.weight_shape.size() != rank)
    invalid(op, "attribute 'weight_shape'=", list_str(a.weight_shape), " must have ", rank, " entries",
            rank == 4 ? " [O, C/group, kH, kW]" : " [O, K]");
  int64_t count = 1;
  for (int64_t d : a.weight_shape) {
    if (d < 1) invalid(op, "attribute 'weight_shape'=", list_str(a.weight_shape), " must be positive");
    count = checked_mul(op, count, d, "attribute 'weight_shape'");
  }
  a.count = count;
  a.out_channels = a.weight_shape[0];
  a.k = count / a.out_channels;
  a.k_padded = padded_length(a.k);
  checked_mul(op, a.out_channels, a.k_padded, "attribute 'weight_shape'");
  read_format_and_bits(attrs, op, &a);
  int64_t total_bits = 0;  // k * sum(bits) <= count * 8: no overflow once count * 8 is checked
  checked_mul(op, count, 8, "attribute 'weight_shape'");
  for (int b : a.bits) total_bits += a.k * b;
  a.packed_bytes = a.codec->entropy_coded ? kVariableLength : total_bits / 8 + (total_bits % 8 != 0);

  // Overflow bound (docs/ops.md): |acc| <= K * A * Wmax, Wmax over every channel's bit-width.
  const int64_t amax = zp > code_max - zp ? zp : code_max - zp;
  const int64_t per_term = amax * a.wmax;  // <= 255 * 128
  const int64_t max_terms = per_term > 0 ? INT32_MAX / per_term : INT64_MAX;
  a.int64_acc = a.k > max_terms;
  a.chunk = a.int64_acc ? (max_terms / 16) * 16 : a.k_padded;
  return a;
}

namespace {
// The entropy-coded stream (docs/ops.md, "Per-parameter formats and the entropy-coded stream";
// qexport/spec/codecs/rans.py's decode is the definition): a table of the codes present and their
// frequencies, then a static rANS stream of all a.count codes of a.bits[0] bits in row-major
// order. Every read is bounds-checked and the stream is refused exactly when rans.py refuses it.
constexpr int kProbBits = 12;
constexpr uint32_t kProbScale = uint32_t{1} << kProbBits;  // M: the frequencies sum to it
constexpr uint64_t kStateLow = uint64_t{1} << 23;          // L: the state lives in [L, 256 L)
constexpr int kVarintMaxBytes = 3;                          // 21 bits hold every frequency

void decode_entropy_coded(const char* op, const WeightedAttrs& a, const uint8_t* packed, int64_t packed_len,
                          int16_t* out) {
  const int bits = a.bits[0];  // one width for every channel (read_format_and_bits)
  const WeightLut& lut = a.luts[static_cast<size_t>(bits)];
  const uint32_t alphabet = uint32_t{1} << bits;
  const std::string bad = cat("input 'W' is not a valid entropy-coded ", a.codec->name, " stream (", bits,
                              "-bit codes, ", packed_len, " bytes): ");
  int64_t pos = 0;
  const auto table_byte = [&]() -> uint32_t {
    if (pos >= packed_len) invalid(op, bad, "it ends inside the code table");
    return packed[pos++];
  };

  // 1. The code table: n - 1, then n (code, LEB128 frequency) entries, codes strictly increasing.
  const uint32_t n = table_byte() + 1;
  if (n > alphabet) invalid(op, bad, "the table lists ", n, " codes, more than the ", alphabet, " of the format");
  std::array<uint32_t, 256> freq{};
  uint32_t total = 0;  // <= 256 * M: no overflow
  int64_t prev = -1;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t s = table_byte();
    if (static_cast<int64_t>(s) <= prev || s >= alphabet)
      invalid(op, bad, "code table entry ", s, " is out of order or >= ", alphabet);
    if (!lut.valid[s]) invalid(op, bad, "the table lists the non-canonical code ", s, " (negative zero)");
    uint32_t f = 0;
    for (int j = 0;; ++j) {
      const uint32_t byte = table_byte();
      f |= (byte & 0x7Fu) << (7 * j);
      if ((byte & 0x80u) == 0) break;
      if (j + 1 == kVarintMaxBytes) invalid(op, bad, "the frequency varint of code ", s, " is too long");
    }
    if (f < 1 || f > kProbScale) invalid(op, bad, "frequency ", f, " of code ", s, " is outside 1..", kProbScale);
    freq[s] = f;
    total += f;
    prev = s;
  }
  if (total != kProbScale) invalid(op, bad, "the frequencies sum to ", total, ", not ", kProbScale);
  // cum[s]: the frequencies of the codes below s; slot_code[slot]: the code s with
  // cum[s] <= slot < cum[s] + freq[s] (the slots are exactly covered: the sum is M).
  std::array<uint32_t, 256> cum{};
  std::array<uint8_t, kProbScale> slot_code{};
  uint32_t c = 0;
  for (uint32_t s = 0; s < alphabet; ++s) {
    cum[s] = c;
    std::fill(slot_code.begin() + c, slot_code.begin() + c + freq[s], static_cast<uint8_t>(s));
    c += freq[s];
  }

  // 2. The initial state: a little-endian uint32 in [L, 256 L).
  if (packed_len - pos < 4) invalid(op, bad, "it ends inside the coder state");
  uint64_t x = 0;
  for (int j = 0; j < 4; ++j) x |= uint64_t{packed[pos + j]} << (8 * j);
  pos += 4;
  if (x < kStateLow || x >= (kStateLow << 8))
    invalid(op, bad, "the initial coder state ", x, " is outside [2^23, 2^31)");

  // 3. The codes, row after row; each step keeps x < 2^31, renormalising with the next bytes.
  int64_t index = 0;
  for (int64_t o = 0; o < a.out_channels; ++o) {
    int16_t* row = out + o * a.k_padded;
    for (int64_t k = 0; k < a.k; ++k, ++index) {
      const uint32_t slot = static_cast<uint32_t>(x & (kProbScale - 1));
      const uint32_t s = slot_code[slot];
      row[k] = lut.value[s];
      x = freq[s] * (x >> kProbBits) + slot - cum[s];
      while (x < kStateLow) {
        if (pos >= packed_len) invalid(op, bad, "it ends after ", index + 1, " of ", a.count, " codes");
        x = (x << 8) | packed[pos++];
      }
    }
    std::memset(row + a.k, 0, sizeof(int16_t) * static_cast<size_t>(a.k_padded - a.k));
  }

  // 4. The encoder started from x = L and wrote every byte: anything else is a corrupt stream.
  if (x != kStateLow) invalid(op, bad, "the coder ends in state ", x, ", not 2^23 (corrupt payload)");
  if (pos != packed_len)
    invalid(op, bad, packed_len - pos, " bytes are left over after the last of ", a.count, " codes");
}
}  // namespace

void decode_weights(const char* op, const WeightedAttrs& a, const uint8_t* packed, int64_t packed_len,
                    int16_t* out) {
  if (a.codec->entropy_coded) return decode_entropy_coded(op, a, packed, packed_len, out);
  if (packed_len != a.packed_bytes) {
    const int lo = *std::min_element(a.bits.begin(), a.bits.end());
    const int hi = *std::max_element(a.bits.begin(), a.bits.end());
    const std::string widths = lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi) +
                                                                  " (per channel)";
    invalid(op, "input 'W' holds ", packed_len, " bytes, expected ", a.packed_bytes, " = ceil(", a.count,
            " codes of ", widths, " bits / 8) for weight_shape ", list_str(a.weight_shape));
  }
  uint32_t buf = 0;  // holds < 8 + bits <= 16 pending bits
  int nbits = 0;
  int64_t byte = 0;
  for (int64_t o = 0; o < a.out_channels; ++o) {
    const int bits = a.bits[static_cast<size_t>(o)];
    const WeightLut& lut = a.luts[static_cast<size_t>(bits)];
    const uint32_t mask = (1u << bits) - 1u;
    int16_t* row = out + o * a.k_padded;
    for (int64_t k = 0; k < a.k; ++k) {
      if (nbits < bits) {
        buf |= static_cast<uint32_t>(packed[byte++]) << nbits;
        nbits += 8;
      }
      const uint32_t code = buf & mask;
      buf >>= bits;
      nbits -= bits;
      if (!lut.valid[code])
        invalid(op, "input 'W' holds the non-canonical ", a.codec->name, " code ", code,
                " (negative zero) at weight index ", o * a.k + k, " (output channel ", o, ")");
      row[k] = lut.value[code];
    }
    std::memset(row + a.k, 0, sizeof(int16_t) * static_cast<size_t>(a.k_padded - a.k));
  }
  // Every byte is consumed (the length is exact); what is left in buf are the padding bits.
  if (buf != 0) invalid(op, "input 'W' has non-zero padding bits after the last of ", a.count, " codes");
}

namespace {
int32_t wrap_i32(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v))); }
}  // namespace

void pack_conv_weights(const WeightedAttrs& a, const int16_t* decoded, int64_t group, int64_t kh, int64_t kw,
                       int act_offset, PackedWeights* out, bool fold) {
  const int64_t og = a.out_channels / group, cg = a.weight_shape[1], taps = kh * kw;
  if (fold && (cg != 1 || kw > 4)) throw std::logic_error("pack_conv_weights: fold needs one channel and kW <= 4");
  const int64_t cg4 = (cg + 3) / 4, steps = fold ? kh : cg4 * taps, nob = (og + kConvBlock - 1) / kConvBlock;
  out->w.assign(static_cast<size_t>(group * nob * steps * kConvBlock * 4), 0);
  out->init.assign(static_cast<size_t>(group * nob * kConvBlock), 0);
  const int64_t zp_eff = a.act_zero_point - act_offset;
  for (int64_t gi = 0; gi < group; ++gi) {
    for (int64_t oi = 0; oi < og; ++oi) {
      const int64_t o = gi * og + oi, b = oi / kConvBlock, lane = oi % kConvBlock;
      const int16_t* row = decoded + o * a.k_padded;
      int8_t* blk = out->w.data() + ((gi * nob + b) * steps) * kConvBlock * 4;
      int64_t sum = 0;
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t tap = 0; tap < taps; ++tap) {
          const int16_t v = row[c * taps + tap];
          sum += v;
          const int64_t s = fold ? tap / kw : (c / 4) * taps + tap;
          blk[(s * kConvBlock + lane) * 4 + (fold ? tap % kw : c % 4)] = static_cast<int8_t>(v);
        }
      }
      out->init[static_cast<size_t>((gi * nob + b) * kConvBlock + lane)] = wrap_i32(-zp_eff * sum);
    }
  }
}

void pack_conv_weights_tiles(const WeightedAttrs& a, const int16_t* decoded, int64_t group, int64_t kh, int64_t kw,
                             int act_offset, PackedWeights* out) {
  constexpr int64_t kBlock = 16;
  const int64_t og = a.out_channels / group, cg = a.weight_shape[1], taps = kh * kw;
  const int64_t cg4 = (cg + 3) / 4, chunks = (kw * cg4 + 15) / 16, steps = kh * chunks;
  const int64_t nob = (og + kBlock - 1) / kBlock;
  out->w.assign(static_cast<size_t>(group * nob * steps * kBlock * 64), 0);
  out->init.assign(static_cast<size_t>(group * nob * kBlock), 0);
  const int64_t zp_eff = a.act_zero_point - act_offset;
  for (int64_t gi = 0; gi < group; ++gi) {
    for (int64_t oi = 0; oi < og; ++oi) {
      const int64_t o = gi * og + oi, b = oi / kBlock, lane = oi % kBlock;
      const int16_t* row = decoded + o * a.k_padded;
      int8_t* blk = out->w.data() + (gi * nob + b) * steps * kBlock * 64;
      int64_t sum = 0;
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            const int16_t v = row[c * taps + i * kw + j];
            sum += v;
            const int64_t plane = j * cg4 + c / 4;  // expanded plane within kernel row i
            const int64_t s = i * chunks + plane / 16;
            blk[(s * kBlock + lane) * 64 + (plane % 16) * 4 + c % 4] = static_cast<int8_t>(v);
          }
        }
      }
      out->init[static_cast<size_t>((gi * nob + b) * kBlock + lane)] = wrap_i32(-zp_eff * sum);
    }
  }
}

void pack_gemm_weights(const WeightedAttrs& a, const int16_t* decoded, int block, int act_offset,
                       PackedWeights* out) {
  const int64_t o = a.out_channels, k = a.k, kg = (k + 3) / 4, nob = (o + block - 1) / block;
  out->w.assign(static_cast<size_t>(nob * kg * block * 4), 0);
  out->init.assign(static_cast<size_t>(nob * block), 0);
  const int64_t zp_eff = a.act_zero_point - act_offset;
  for (int64_t oc = 0; oc < o; ++oc) {
    const int64_t b = oc / block, lane = oc % block;
    const int16_t* row = decoded + oc * a.k_padded;
    int8_t* blk = out->w.data() + b * kg * block * 4;
    int64_t sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      sum += row[j];
      blk[((j / 4) * block + lane) * 4 + j % 4] = static_cast<int8_t>(row[j]);
    }
    out->init[static_cast<size_t>(oc)] = wrap_i32(-zp_eff * sum);
  }
}

WeightedState::WeightedState(const OrtKernelInfo* info, const char* op, WeightedAttrs attrs)
    : op_(op), a_(std::move(attrs)) {
  const ConstantInput w = constant_input(info, 2);
  if (w.is_constant) {
    if (w.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) invalid(op_, "input 'W' must be uint8");
    if (w.shape.size() != 1) invalid(op_, "input 'W' must be 1-D packed codes, got shape ", shape_str(w.shape));
    w_.assign(static_cast<size_t>(a_.out_channels * a_.k_padded), 0);
    decode_weights(op_, a_, static_cast<const uint8_t*>(w.data), static_cast<int64_t>(w.count), w_.data());
    w_constant_ = true;
  }
  static const char* const names[] = {"W_scale", "B"};
  for (size_t i = 0; i < 2; ++i) {
    const ConstantInput c = constant_input(info, 3 + i);
    if (c.is_constant && static_cast<int64_t>(c.count) != a_.out_channels)
      invalid(op_, "input '", names[i], "' has ", c.count, " entries for ", a_.out_channels, " output channels");
  }
}

const int16_t* WeightedState::weights(Ort::KernelContext& ctx, std::vector<int16_t>& scratch) const {
  if (w_constant_) return w_.data();
  const Input w = get_input(op_, ctx, 2, "W", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  if (w.shape.size() != 1) invalid(op_, "input 'W' must be 1-D packed codes, got shape ", shape_str(w.shape));
  scratch.assign(static_cast<size_t>(a_.out_channels * a_.k_padded), 0);
  decode_weights(op_, a_, static_cast<const uint8_t*>(w.data), static_cast<int64_t>(w.count), scratch.data());
  return scratch.data();
}

WeightedState::Scales WeightedState::scales(Ort::KernelContext& ctx, int64_t n) const {
  Scales s;
  constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  const OrtKernelContext* raw = ctx.GetOrtKernelContext();
  const InputView xs = input_view(op_, raw, 1, "X_scale", kF32);
  const int64_t nxs = static_cast<int64_t>(xs.count);
  if (nxs != n && nxs != 1)
    invalid(op_, "input 'X_scale' has ", nxs, " entries for a batch of ", n, " (expected ", n, " or 1)");
  s.x_scale = static_cast<const float*>(xs.data);
  s.x_scale_per_sample = nxs != 1;
  const InputView ws = input_view(op_, raw, 3, "W_scale", kF32);
  if (static_cast<int64_t>(ws.count) != a_.out_channels)
    invalid(op_, "input 'W_scale' has ", ws.count, " entries for ", a_.out_channels, " output channels");
  s.w_scale = static_cast<const float*>(ws.data);
  const InputView b = input_view(op_, raw, 4, "B", kF32);
  if (static_cast<int64_t>(b.count) != a_.out_channels)
    invalid(op_, "input 'B' has ", b.count, " entries for ", a_.out_channels, " output channels");
  s.bias = static_cast<const float*>(b.data);
  return s;
}

void WeightedState::check_codes(const uint8_t* x, size_t count, const SimdKernels* simd) const {
  const unsigned limit = (1u << a_.act_bits) - 1u;
  const unsigned mx = simd->max_code(x, count);
  if (mx > limit)
    invalid(op_, "input 'X' holds code ", mx, " above 2^act_bits - 1 = ", limit, " (act_bits=", a_.act_bits, ")");
}

}  // namespace qexport
