"""Compatibility name: the integer reference lives in :mod:`qexport.spec.reference` (torch-free).

``qexport.quant.reference`` is the same module object, so ``R.<anything>`` keeps working.
"""
import sys

from ..spec import reference as _reference

sys.modules[__name__] = _reference
