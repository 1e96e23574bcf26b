"""pot: powers of two. Code = sign bit (MSB) | magnitude m; m = 0 is 0, else +-2^(m-1); 2..4 bits.
The "negative zero" code (sign 1, m 0) is not canonical and is refused."""
from . import Codec, register, sign_magnitude


@register
class Pot(Codec):
    name = "pot"
    bits = range(2, 5)

    def levels(self, bits: int):
        return sign_magnitude(bits, lambda m: 1 << (m - 1))
