// Weight codecs: a weight format is one codec, found by its name (the `format` attribute of
// QConv / QGemm / QConvFused; docs/ops.md, "Weight codecs"). The kernels never see a format, only
// the decoded integer rows. Each codec lives in its own file under src/codecs/ and registers itself
// with a static CodecRegistration, so adding a format adds one file (CMake picks up every
// src/codecs/*.cc) and no op, list or switch changes. The Python twin is qexport/spec/codecs/.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace qexport {

struct WeightCodec {
  const char* name;  // the `format` attribute value
  int min_bits;      // supported bit-widths min_bits..max_bits (<= 8)
  int max_bits;
  // The integer weight of every code 0 .. 2^bits - 1 and whether the code is canonical (a
  // non-canonical code in W is refused). |value| <= 128. Called only with supported bits.
  void (*levels)(int bits, int16_t* value, bool* valid);
  // The stream of input W: false, the fixed-width stream (a bit-width per output channel, every
  // code min_bits..max_bits wide); true, the entropy-coded (rANS) stream of the per-parameter
  // formats over the codes of one bit-width for every channel (docs/ops.md, "Per-parameter formats
  // and the entropy-coded stream"). Last and defaulted, so `{name, min, max, levels}` is fixed-width.
  bool entropy_coded = false;
};

// Makes `codec` findable by name; a static object in the codec's file.
struct CodecRegistration {
  explicit CodecRegistration(const WeightCodec* codec);
};

const WeightCodec* find_codec(const std::string& name);  // nullptr when unknown
std::string codec_names();                               // "post, pot, uniform"

// The level table of one bit-width of a codec.
struct WeightLut {
  int bits = 0;
  std::array<int16_t, 256> value{};
  std::array<bool, 256> valid{};
  int64_t wmax = 0;  // largest |value| of a valid code
};
WeightLut make_weight_lut(const WeightCodec& codec, int bits);

// Sign-magnitude levels (pot, post): MSB the sign, the rest m; m = 0 is 0 and "negative zero" is
// not canonical; else +-level(bits, m).
void sign_magnitude_levels(int bits, int64_t (*level)(int bits, int m), int16_t* value, bool* valid);

// The levels of the post codec (src/codecs/post.cc), which perparam_post shares.
void post_levels(int bits, int16_t* value, bool* valid);

}  // namespace qexport
