// post: powers of sqrt(2), sign-magnitude, m -> T[m-1], T[e] = round(2^(F + e/2)),
// F = 6 - (M-1)/2, M = 2^(b-1) - 1; even e are exact shifts; 2..4 bits (qexport/spec/codecs/post.py).
#include <cmath>

#include "qexport/codec.h"

namespace qexport {
namespace {
int64_t level(int bits, int m) {
  const int e = m - 1, big_m = (1 << (bits - 1)) - 1, f = 6 - (big_m - 1) / 2;
  if (e % 2 == 0) return int64_t{1} << (f + e / 2);  // even exponent: an exact shift
  // Odd exponent: 2^(F + e/2) is irrational, far from a rounding tie.
  return static_cast<int64_t>(std::nearbyint(std::exp2(f + e / 2.0)));
}
}  // namespace

// Shared with perparam_post (codec.h).
void post_levels(int bits, int16_t* value, bool* valid) { sign_magnitude_levels(bits, level, value, valid); }

namespace {
const WeightCodec kCodec{"post", 2, 4, post_levels};
const CodecRegistration kRegistered(&kCodec);
}  // namespace
}  // namespace qexport
