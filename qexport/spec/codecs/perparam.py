"""Per-parameter precision (Khoram and Li, ICLR 2018): every weight has its own bit-width.

Two formats, one per level family; ``bits`` (one entry) is the family's widest width ``B``:

* ``perparam`` -- fixed point. The integer weight of a ``b``-bit parameter (``2 <= b <= B``) is
  ``n * 2^(B-b)`` with ``|n| <= 2^(b-1) - 1`` (a sign and ``b-1`` magnitude bits); ``b = 0`` is a
  pruned weight (0). Widths are nested: a ``b``-bit level is also a ``b+1``-bit level, and every
  level lies in ``[-(2^(B-1) - 1), 2^(B-1) - 1]``, the ``B``-bit sign-magnitude table the kernels
  run (``B = 8``: the int8 path of a uniform 8-bit layer).
* ``perparam_post`` -- powers of sqrt(2): a ``b``-bit parameter takes a level of the ``b``-bit POST
  table (``post.py``); these tables are nested at the top (2-bit {64}, 3-bit {32, 45, 64}, 4-bit
  {8 .. 64}), so fewer bits remove the small levels. ``B`` is 2..4.

The stream does not store widths: it is the rANS stream of ``rans.py`` over the ``B``-bit codes,
so a weight's cost follows how often its value occurs; the width a parameter *needs* is a function
of its value (``param_bits``), which is what ``qexport inspect`` histograms.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import Codec, CodecError, register, sign_magnitude
from . import rans
from .post import post_levels, post_table


class PerParameter(Codec):
    """A family of nested level sets, one per width, stored entropy-coded."""

    variable_length = True

    def width_levels(self, top: int, b: int) -> np.ndarray:
        """Sorted integer levels (0 included) a ``b``-bit parameter can take in the ``top`` family."""
        raise NotImplementedError

    def widths(self, top: int) -> tuple[int, ...]:
        """The widths a parameter can have: 0 (pruned) and 2 .. top."""
        return (0,) + tuple(range(2, int(top) + 1))

    def param_bits(self, w_int: np.ndarray, top: int) -> np.ndarray:
        """The smallest width whose level set holds each integer weight (0 for a zero)."""
        w_int = np.asarray(w_int, dtype=np.int64)
        out = np.full(w_int.shape, -1, dtype=np.int64)
        for b in self.widths(top):
            hit = (out < 0) & np.isin(w_int, _levels_at(self, int(top), b))
            out[hit] = b
        if (out < 0).any():
            bad = np.unique(w_int[out < 0])[:5].tolist()
            raise CodecError(f"integer weights {bad} are not {self.name} levels of width <= {top}")
        return out

    def _one_width(self, bits: np.ndarray) -> int:
        self.check_bits(bits)
        u = np.unique(bits)
        if u.size != 1:
            raise CodecError(f"{self.name} weights take one bit-width for every channel (the widest a "
                             f"parameter may have), got {u.tolist()}")
        return int(u[0])

    def pack_rows(self, w_int: np.ndarray, bits: np.ndarray) -> np.ndarray:
        top = self._one_width(bits)
        return rans.encode(self.encode_rows(w_int, bits), 1 << top)

    def unpack_rows(self, packed: np.ndarray, bits: np.ndarray, k: int) -> np.ndarray:
        top = self._one_width(bits)
        values, valid = self.lut(top)
        codes = rans.decode(packed, len(bits) * int(k), 1 << top, valid)
        return values[codes].reshape(len(bits), int(k))

    def packed_length(self, bits: np.ndarray, k: int) -> int | None:
        return None  # variable: known only from the weights


@lru_cache(maxsize=None)
def _levels_at(codec: PerParameter, top: int, b: int) -> np.ndarray:
    v = codec.width_levels(top, b)
    v.setflags(write=False)
    return v


@register
class PerParamFixed(PerParameter):
    name = "perparam"
    bits = range(2, 9)

    def levels(self, bits: int):
        return sign_magnitude(bits, lambda m: m)

    def width_levels(self, top: int, b: int) -> np.ndarray:
        if b == 0:
            return np.zeros(1, dtype=np.int64)
        n = (1 << (b - 1)) - 1
        return np.arange(-n, n + 1, dtype=np.int64) << (top - b)


@register
class PerParamPost(PerParameter):
    name = "perparam_post"
    bits = range(2, 5)

    def levels(self, bits: int):
        return post_levels(bits)

    def width_levels(self, top: int, b: int) -> np.ndarray:
        if b == 0:
            return np.zeros(1, dtype=np.int64)
        t = np.array(post_table(b), dtype=np.int64)
        return np.sort(np.concatenate([-t, [0], t]))
