// pot: powers of two, sign-magnitude, m -> 2^(m-1); 2..4 bits (qexport/spec/codecs/pot.py).
#include "qexport/codec.h"

namespace qexport {
namespace {
int64_t level(int, int m) { return int64_t{1} << (m - 1); }
void levels(int bits, int16_t* value, bool* valid) { sign_magnitude_levels(bits, level, value, valid); }
const WeightCodec kCodec{"pot", 2, 4, levels};
const CodecRegistration kRegistered(&kCodec);
}  // namespace
}  // namespace qexport
