// The codec registry (include/qexport/codec.h).
#include <map>
#include <string>

#include "qexport/codec.h"

namespace qexport {
namespace {
// Function-local static: codec files register during static initialisation, in any order.
std::map<std::string, const WeightCodec*>& registry() {
  static std::map<std::string, const WeightCodec*> codecs;
  return codecs;
}
}  // namespace

CodecRegistration::CodecRegistration(const WeightCodec* codec) { registry()[codec->name] = codec; }

const WeightCodec* find_codec(const std::string& name) {
  const auto it = registry().find(name);
  return it == registry().end() ? nullptr : it->second;
}

std::string codec_names() {
  std::string out;
  for (const auto& kv : registry()) out += (out.empty() ? "" : ", ") + kv.first;
  return out;
}

WeightLut make_weight_lut(const WeightCodec& codec, int bits) {
  WeightLut lut;
  lut.bits = bits;
  codec.levels(bits, lut.value.data(), lut.valid.data());
  for (int code = 0; code < (1 << bits); ++code) {
    const int64_t v = lut.value[code];
    if (lut.valid[code] && (v < 0 ? -v : v) > lut.wmax) lut.wmax = v < 0 ? -v : v;
  }
  return lut;
}

void sign_magnitude_levels(int bits, int64_t (*level)(int bits, int m), int16_t* value, bool* valid) {
  const int half = 1 << (bits - 1);
  for (int code = 0; code < (1 << bits); ++code) {
    const int sign = code >> (bits - 1), m = code & (half - 1);
    const int64_t v = m == 0 ? 0 : level(bits, m);
    value[code] = static_cast<int16_t>(sign ? -v : v);
    valid[code] = m != 0 || sign == 0;
  }
}

}  // namespace qexport
