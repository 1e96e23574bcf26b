"""POST (the ASQ paper, section 3.3): weights on powers of sqrt(2), shift for even exponents,
table for odd ones."""
from __future__ import annotations

from .base import register_weight
from .levels import LevelWeightQuantizer


@register_weight("post")
class PostWeightQuantizer(LevelWeightQuantizer):
    """Levels alpha * T[e] / 64 with T[e] = round(2^(F + e/2)) (4-bit: 8 11 16 23 32 45 64).

    Training uses exactly the integer table the kernels use (ours, see docs/ops.md): the levels
    deviate from exact powers of sqrt(2) by at most 2.8% at 4 bits and 0.6% at 3 bits, and in
    exchange training, the numpy reference and every kernel agree to the bit.
    Exported as ``QConv`` / ``QGemm`` with format post.
    """
