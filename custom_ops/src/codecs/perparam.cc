// The per-parameter formats (qexport/spec/codecs/perparam.py): every weight has its own bit-width
// up to B (the one `bits` value), stored as the entropy-coded stream of the B-bit codes
// (WeightCodec::entropy_coded; decoded in src/kernels/weights.cc).
//   perparam:      fixed point, sign-magnitude, m -> m (|w| <= 2^(B-1) - 1); 2..8 bits.
//   perparam_post: the post levels (src/codecs/post.cc) of the B-bit table; 2..4 bits.
#include "qexport/codec.h"

namespace qexport {
namespace {
int64_t fixed_point_level(int, int m) { return m; }
void fixed_point_levels(int bits, int16_t* value, bool* valid) {
  sign_magnitude_levels(bits, fixed_point_level, value, valid);
}
const WeightCodec kFixedPoint{"perparam", 2, 8, fixed_point_levels, /*entropy_coded=*/true};
const WeightCodec kPost{"perparam_post", 2, 4, post_levels, /*entropy_coded=*/true};
const CodecRegistration kFixedPointRegistered(&kFixedPoint);
const CodecRegistration kPostRegistered(&kPost);
}  // namespace
}  // namespace qexport
