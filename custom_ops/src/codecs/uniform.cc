// uniform: two's complement, code c -> c (c < 2^(b-1)) or c - 2^b; 2..8 bits
// (qexport/spec/codecs/uniform.py).
#include "qexport/codec.h"

namespace qexport {
namespace {
void levels(int bits, int16_t* value, bool* valid) {
  const int n = 1 << bits, half = 1 << (bits - 1);
  for (int c = 0; c < n; ++c) {
    value[c] = static_cast<int16_t>(c >= half ? c - n : c);
    valid[c] = true;
  }
}
const WeightCodec kCodec{"uniform", 2, 8, levels};
const CodecRegistration kRegistered(&kCodec);
}  // namespace
}  // namespace qexport
