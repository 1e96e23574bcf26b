"""post: powers of sqrt(2) (the POST paper). Code = sign bit | magnitude m; m = 0 is 0, else
+-T[m-1] with T[e] = round(2^(F + e/2)), F = 6 - (M-1)/2, M = 2^(b-1) - 1 (the largest entry is
64, so every level fits int8); even e are exact shifts 1 << (F + e/2). 2..4 bits."""
from functools import lru_cache

import numpy as np

from . import Codec, register, sign_magnitude


def post_frac_bits(bits: int) -> int:
    """F of the POST table: the largest entry T[M-1] is 64."""
    m = 2 ** (bits - 1) - 1
    return 6 - (m - 1) // 2


@lru_cache(maxsize=None)
def post_table(bits: int) -> tuple[int, ...]:
    """T[e], e = 0 .. M-1 (4-bit: 8 11 16 23 32 45 64)."""
    f, m = post_frac_bits(bits), 2 ** (bits - 1) - 1
    # Even e: exactly 1 << (F + e/2). Odd e: 2^(F+e/2) is irrational, so rint never meets a tie.
    return tuple((1 << (f + e // 2)) if e % 2 == 0 else int(np.rint(2.0 ** (f + e / 2))) for e in range(m))


@register
class Post(Codec):
    name = "post"
    bits = range(2, 5)

    def levels(self, bits: int):
        return post_levels(bits)


def post_levels(bits: int):
    """The b-bit post codes' levels (sign-magnitude over post_table); perparam_post shares them."""
    table = post_table(bits)
    return sign_magnitude(bits, lambda m: table[m - 1])
