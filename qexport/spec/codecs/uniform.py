"""uniform: two's-complement integers, code c -> c (c < 2^(b-1)) or c - 2^b; 2..8 bits."""
from . import Codec, register


@register
class Uniform(Codec):
    name = "uniform"
    bits = range(2, 9)

    def levels(self, bits: int):
        n, half = 1 << bits, 1 << (bits - 1)
        return tuple(c - n if c >= half else c for c in range(n)), (True,) * n
