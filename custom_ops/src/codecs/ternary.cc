// ternary: {-1, 0, +1}, 2-bit codes 0 -> 0, 1 -> +1, 2 -> -1, 3 not canonical
// (qexport/spec/codecs/ternary.py).
#include "qexport/codec.h"

namespace qexport {
namespace {
void levels(int, int16_t* value, bool* valid) {
  static const int16_t kValue[4] = {0, 1, -1, 0};
  for (int c = 0; c < 4; ++c) {
    value[c] = kValue[c];
    valid[c] = c != 3;
  }
}
const WeightCodec kCodec{"ternary", 2, 2, levels};
const CodecRegistration kRegistered(&kCodec);
}  // namespace
}  // namespace qexport
