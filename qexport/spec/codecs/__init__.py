"""Weight codecs: how a weight format turns integer weights into the bytes of input ``W`` and back.

A format is one codec, found by one name (the ``format`` attribute of ``QConv`` / ``QGemm`` /
``QConvFused``; docs/ops.md, "Weight codecs"). Every module of this package that defines a
:class:`Codec` subclass with ``register`` is picked up at import time, so adding a format is one
Python file here plus one C++ decoder in ``custom_ops/src/codecs/`` (and their tests and docs):
no op name, list or switch elsewhere changes.

The kernels never see a format: they get the decoded integer rows. What a codec defines:

* ``levels(bits)``: the integer weight of every ``bits``-bit code and which codes are canonical
  (the default decoder and encoder are table look-ups through it);
* ``bits``: the bit-widths it supports;
* optionally its own stream layout (``pack_rows`` / ``unpack_rows``) -- the default is the
  fixed-width stream below, which every format so far uses.

The fixed-width stream, with a bit-width per output channel (``bits[o]``): row ``o`` (its ``K``
codes in row-major order of the weight shape) is ``K`` codes of ``bits[o]`` bits; rows follow one
another with no alignment; codes are packed LSB-first into a little-endian bit stream; the last
byte is padded with zero bits. With one bit-width for every channel this is exactly the stream of
the version-1 ops (``PostConv`` ...), so their files decode unchanged.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = ["Codec", "CodecError", "register", "get", "names", "channel_bits", "pack_fixed_width",
           "unpack_fixed_width", "fixed_width_length", "sign_magnitude"]


class CodecError(ValueError):
    """Invalid weights, bit-widths or packed bytes for a codec (the kernels refuse the same)."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise CodecError(msg)


def channel_bits(bits: int | Sequence[int] | np.ndarray, out_channels: int) -> np.ndarray:
    """The bit-width of each output channel (int64, shape (O,)) from one int, a 1-entry list (every
    channel) or an O-entry list."""
    arr = np.atleast_1d(np.asarray(bits))
    _check(arr.ndim == 1 and arr.size in (1, out_channels) and np.issubdtype(arr.dtype, np.integer),
           f"bits must be one integer or {out_channels} (one per output channel), got {np.asarray(bits).tolist()}")
    return np.broadcast_to(arr.astype(np.int64), (out_channels,)).copy()


def fixed_width_length(bits: np.ndarray, k: int) -> int:
    """Bytes of the fixed-width stream: ceil(K * sum(bits) / 8)."""
    return (int(k) * int(np.sum(bits)) + 7) // 8


def _width_runs(bits: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, end row, width) of each run of consecutive rows with one bit-width."""
    edges = np.flatnonzero(np.diff(bits)) + 1
    bounds = [0, *edges.tolist(), len(bits)]
    return [(a, b, int(bits[a])) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


_CHUNK_CODES = 1 << 24  # codes per step of the (un)packing loops: about 16 MB per bit of width


def pack_fixed_width(codes: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Codes (O, K) with row o of ``bits[o]`` bits -> the fixed-width stream (uint8).

    Code by code in row-major order, each code's ``bits[o]`` bits least significant first, then
    the bits packed 8 to a byte (little bit order), zero padding at the end. Memory: about
    (width + 1) bytes per code in chunks, not the 8-byte-per-bit arrays of a direct shift."""
    codes = np.asarray(codes)
    bits = np.asarray(bits, dtype=np.int64)
    _check(codes.ndim == 2 and codes.shape[0] == len(bits), "codes must be (O, K) with one bit-width per row")
    runs = _width_runs(bits)
    for r0, r1, b in runs:
        _check(1 <= b <= 8, f"bits must be in 1..8, got {b}")
        block = codes[r0:r1]
        _check(block.size == 0 or (int(block.min()) >= 0 and int(block.max()) < (1 << b)),
               f"codes out of range for {b} bits")
    k = codes.shape[1]
    stream = np.empty(int(k) * int(bits.sum()), dtype=np.uint8)
    pos = 0
    for r0, r1, b in runs:
        flat = codes[r0:r1].reshape(-1)
        for start in range(0, flat.size, _CHUNK_CODES):
            part = flat[start:start + _CHUNK_CODES].astype(np.uint8).reshape(-1, 1)
            stream[pos:pos + part.size * b] = np.unpackbits(part, axis=1, bitorder="little")[:, :b].reshape(-1)
            pos += part.size * b
    return np.packbits(stream, bitorder="little")


def unpack_fixed_width(packed: np.ndarray, bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_fixed_width: (O, K) uint8 codes; checks the exact length and zero padding bits."""
    packed = np.asarray(packed)
    _check(packed.dtype == np.uint8 and packed.ndim == 1,
           f"packed weights must be 1-D uint8, got {packed.dtype} rank {packed.ndim}")
    bits = np.asarray(bits, dtype=np.int64)
    need = fixed_width_length(bits, k)
    total = int(k) * int(np.sum(bits))
    _check(packed.shape[0] == need,
           f"packed weights hold {packed.shape[0]} bytes, expected {need} for {len(bits) * k} codes of "
           f"{_bits_text(bits)} bits")
    _check(total % 8 == 0 or not (int(packed[-1]) >> (total % 8)), "packed weights have non-zero padding bits")
    out = np.empty((len(bits), int(k)), dtype=np.uint8)
    flat = out.reshape(-1)
    pos = 0  # bit position in the stream
    for r0, r1, b in _width_runs(bits):
        count = (r1 - r0) * int(k)
        done = 0
        while done < count:
            n = min(_CHUNK_CODES, count - done)
            first, last = pos // 8, -(-(pos + n * b) // 8)
            chunk = np.unpackbits(packed[first:last], bitorder="little")[pos - 8 * first:pos - 8 * first + n * b]
            flat[r0 * int(k) + done:r0 * int(k) + done + n] = np.packbits(
                chunk.reshape(n, b), axis=1, bitorder="little").reshape(-1)
            pos += n * b
            done += n
    return out


def _bits_text(bits: np.ndarray) -> str:
    u = np.unique(bits)
    return str(int(u[0])) if len(u) == 1 else "/".join(str(int(b)) for b in u) + " (per channel)"


class Codec:
    """A weight format. Subclasses set ``name`` and ``bits`` and implement ``levels``."""

    name: str = ""
    bits: range = range(0)
    # True for a stream whose length depends on the weights (entropy-coded, one bit-width for every
    # channel: the widest a parameter may have); False for the fixed-width stream.
    variable_length: bool = False

    def levels(self, bits: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
        """(value, valid) of every code 0 .. 2^bits - 1."""
        raise NotImplementedError

    # ----------------------------------------------------------------- derived, cached
    def check_bits(self, bits: np.ndarray) -> None:
        bad = sorted({int(b) for b in np.atleast_1d(bits) if int(b) not in self.bits})
        if bad:
            raise CodecError(f"{self.name} weights support {self.bits.start}..{self.bits.stop - 1} bits, got {bad[0]}")

    def lut(self, bits: int) -> tuple[np.ndarray, np.ndarray]:
        return _lut(self, int(bits))

    def weight_max(self, bits: int) -> int:
        return int(np.abs(self.lut(bits)[0]).max())

    # ----------------------------------------------------------------- the stream
    def encode_rows(self, w_int: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Integer weights (O, K) -> codes (O, K) uint8, refusing values that are not levels.

        By a lookup table over the level range (every level of these formats is within
        +-2^16), in row runs of one width: a few bytes per weight, no sort."""
        w_int = np.asarray(w_int)
        codes = np.empty(w_int.shape, dtype=np.uint8)
        for r0, r1, b in _width_runs(np.asarray(bits, dtype=np.int64)):
            values, valid = self.lut(b)
            lo, hi = int(values.min()), int(values.max())
            table = np.zeros(hi - lo + 1, dtype=np.uint8)  # read only where ok (a level of this width)
            ok = np.zeros(hi - lo + 1, dtype=bool)
            for c, v in enumerate(values):
                if valid[c]:
                    table[int(v) - lo], ok[int(v) - lo] = c, True
            block = w_int[r0:r1]
            if not block.size:
                continue
            index = np.subtract(block, lo, dtype=np.int64)
            if int(index.min()) < 0 or int(index.max()) > hi - lo or not bool(ok[index].all()):
                flat = block.reshape(-1)
                bad = np.unique(flat[(flat < lo) | (flat > hi) | ~ok[np.clip(flat - lo, 0, hi - lo)]])
                _check(False, f"integer weights {[int(v) for v in bad[:5]]} are not {b}-bit {self.name} levels")
            codes[r0:r1] = table[index]
        return codes

    def pack_rows(self, w_int: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Integer weights (O, K) -> the bytes of input W."""
        self.check_bits(bits)
        return pack_fixed_width(self.encode_rows(w_int, bits), bits)

    def unpack_rows(self, packed: np.ndarray, bits: np.ndarray, k: int) -> np.ndarray:
        """The bytes of input W -> integer weights (O, K) int64; refuses any malformed stream."""
        self.check_bits(bits)
        codes = unpack_fixed_width(packed, bits, k)
        out = np.empty(codes.shape, dtype=np.int64)
        for r0, r1, b in _width_runs(np.asarray(bits, dtype=np.int64)):
            values, valid = self.lut(b)
            c = codes[r0:r1]
            _check(bool(valid[c].all()), f"packed weights contain a non-canonical {self.name} code (negative zero)")
            out[r0:r1] = values[c]
        return out

    def packed_length(self, bits: np.ndarray, k: int) -> int:
        return fixed_width_length(bits, k)


@lru_cache(maxsize=None)
def _lut(codec: Codec, bits: int) -> tuple[np.ndarray, np.ndarray]:
    codec.check_bits(np.array([bits]))
    values, valid = codec.levels(bits)
    v, ok = np.array(values, dtype=np.int64), np.array(valid, dtype=bool)
    v.setflags(write=False)
    ok.setflags(write=False)
    return v, ok


def sign_magnitude(bits: int, level) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Levels of a sign-magnitude code: MSB the sign, the rest m; m = 0 is 0 (the "negative zero"
    code is not canonical), else +-level(m)."""
    half = 1 << (bits - 1)
    values, valid = [], []
    for code in range(1 << bits):
        sign, m = code >> (bits - 1), code & (half - 1)
        v = 0 if m == 0 else level(m)
        values.append(-v if sign else v)
        valid.append(m != 0 or sign == 0)
    return tuple(values), tuple(valid)


_REGISTRY: dict[str, Codec] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator: makes the codec available under ``cls.name``."""
    _check(bool(cls.name) and cls.name not in _REGISTRY, f"codec name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Codec:
    """The codec of a format name (the ``format`` attribute)."""
    _check(name in _REGISTRY, f"unknown weight format {name!r}; expected one of {names()}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every registered format, in a fixed order (sorted by name)."""
    return tuple(sorted(_REGISTRY))


for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
