"""Quantizers (one file per method) and the numpy integer reference (the definition)."""
from ..spec import reference
from .base import ACT_QUANTIZERS, WEIGHT_QUANTIZERS, ActQuantizer, WeightQuantizer
from . import asq, lsq, perparam, pot, post  # noqa: F401  (fill the registries)
from .config import METHODS, QuantConfig

__all__ = ["reference", "ACT_QUANTIZERS", "WEIGHT_QUANTIZERS", "ActQuantizer", "WeightQuantizer", "METHODS", "QuantConfig"]
