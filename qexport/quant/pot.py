"""POT: weights on powers of two, alpha * {0, 2^-(M-1), ..., 1/2, 1} (sign + magnitude)."""
from __future__ import annotations

from .base import register_weight
from .levels import LevelWeightQuantizer


@register_weight("pot")
class PotWeightQuantizer(LevelWeightQuantizer):
    """Integer weights +-2^(m-1) (a pure shift); exported as ``QConv`` / ``QGemm`` with format pot.

    Spends its levels near zero ("rigid resolution"), which is what POST improves on.
    """
