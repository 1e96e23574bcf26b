"""ternary: weights in {-1, 0, +1} (times the channel's W_scale; ternary weight networks), 2-bit
codes 0 -> 0, 1 -> +1, 2 -> -1; code 3 is not canonical. The codec added after the redesign to
show what a new format touches: this file and custom_ops/src/codecs/ternary.cc (docs/ops.md)."""
from . import Codec, register


@register
class Ternary(Codec):
    name = "ternary"
    bits = range(2, 3)

    def levels(self, bits: int):
        return (0, 1, -1, 0), (True, True, True, False)
