"""The entropy-coded stream of the per-parameter formats (``perparam``, ``perparam_post``;
docs/ops.md "Entropy-coded stream"): a static rANS coder over the codes of one weight tensor.

Why rANS over the codes and not "bit-widths, then codes": a weight's value already says how many
bits it needs, so coding the values directly costs H(value) <= H(width) + E[width] bits per weight
(plus a small table), and an arithmetic-style coder spends ~0.1 bit on a pruned (zero) weight where
any prefix code (Huffman, or a width field) spends at least 1. benchmarks/perparam.py prints both
sizes for every model it writes.

Layout of the bytes (B = the format's bit-width, the alphabet is the 2^B codes):

* ``n - 1`` (one byte): ``n`` = number of distinct codes present, 1 .. 2^B;
* ``n`` entries, codes strictly increasing: the code (one byte), its frequency ``f`` as an
  unsigned LEB128 varint (1 .. 2^12); the frequencies sum to exactly ``M = 2^12``;
* the rANS payload: the final encoder state as a little-endian uint32, then the renormalisation
  bytes in the order the decoder reads them.

Decoding (state ``x``, ``L = 2^23``): ``x`` = the uint32; for each of the ``O*K`` codes in row-major
order of ``weight_shape``: ``slot = x mod M``; the code ``s`` is the one with
``cum[s] <= slot < cum[s] + f[s]``; ``x = f[s] * (x >> 12) + slot - cum[s]``; while ``x < L``:
``x = (x << 8) | next byte``. A stream is valid only if every read stays inside the bytes, every
code is canonical for the format, and at the end ``x == L`` and every byte has been read.
"""
from __future__ import annotations

import numpy as np

from . import CodecError

PROB_BITS = 12
M = 1 << PROB_BITS
L = 1 << 23

__all__ = ["PROB_BITS", "M", "L", "normalize", "encode", "decode", "ideal_bits"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise CodecError(msg)


def normalize(counts: np.ndarray) -> np.ndarray:
    """Frequencies summing to M, >= 1 for every present code, 0 for absent ones (deterministic)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    _check(total > 0, "nothing to encode")
    f = np.where(counts > 0, np.maximum(1, (counts * M) // total), 0)
    # Move the rounding surplus/deficit onto the most frequent codes (the cheapest place).
    order = np.argsort(-counts, kind="stable")
    i = 0
    while int(f.sum()) != M:
        s = order[i % len(order)]
        if int(f.sum()) < M:
            f[s] += 1
        elif f[s] > 1:
            f[s] -= 1
        i += 1
    return f


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def encode(codes: np.ndarray, alphabet: int) -> np.ndarray:
    """Codes (any shape, row-major, each < alphabet <= 256) -> the stream (uint8)."""
    flat = np.asarray(codes, dtype=np.int64).ravel()
    _check(flat.size > 0 and 1 <= alphabet <= 256, "an entropy-coded stream needs >= 1 code and <= 256 symbols")
    _check(bool(np.all((flat >= 0) & (flat < alphabet))), f"codes out of range 0..{alphabet - 1}")
    freq = normalize(np.bincount(flat, minlength=alphabet))
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    present = np.nonzero(freq)[0]
    head = bytearray([len(present) - 1])
    for s in present:
        head.append(int(s))
        head += _varint(int(freq[s]))
    f_list, c_list = freq.tolist(), cum.tolist()
    x, out = L, bytearray()
    xmax_unit = (L >> PROB_BITS) << 8
    for s in flat[::-1].tolist():
        f = f_list[s]
        x_max = xmax_unit * f
        while x >= x_max:
            out.append(x & 0xFF)
            x >>= 8
        x = ((x // f) << PROB_BITS) + (x % f) + c_list[s]
    out.reverse()
    return np.frombuffer(bytes(head) + x.to_bytes(4, "little") + bytes(out), dtype=np.uint8).copy()


def decode(packed: np.ndarray, count: int, alphabet: int, valid: np.ndarray | None = None) -> np.ndarray:
    """The stream -> ``count`` codes (int64); refuses a truncated, padded or corrupt stream."""
    packed = np.asarray(packed)
    _check(packed.dtype == np.uint8 and packed.ndim == 1,
           f"packed weights must be 1-D uint8, got {packed.dtype} rank {packed.ndim}")
    data = packed.tobytes()
    pos = 0

    def byte(what: str) -> int:
        nonlocal pos
        _check(pos < len(data), f"entropy-coded weights end inside {what} (byte {pos} of {len(data)})")
        pos += 1
        return data[pos - 1]

    n = byte("the code table") + 1
    _check(n <= alphabet, f"entropy-coded weights list {n} codes, more than the {alphabet} of the format")
    freq = np.zeros(alphabet, dtype=np.int64)
    prev = -1
    for _ in range(n):
        s = byte("the code table")
        _check(prev < s < alphabet, f"entropy-coded weights: code table entry {s} is out of order or >= {alphabet}")
        if valid is not None:
            _check(bool(valid[s]), f"entropy-coded weights list the non-canonical code {s}")
        v, shift = 0, 0
        while True:
            b = byte("the code table")
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            _check(shift < 21, "entropy-coded weights: a frequency varint is too long")
        _check(1 <= v <= M, f"entropy-coded weights: frequency {v} of code {s} is outside 1..{M}")
        freq[s], prev = v, s
    _check(int(freq.sum()) == M, f"entropy-coded weights: frequencies sum to {int(freq.sum())}, not {M}")
    cum = np.concatenate([[0], np.cumsum(freq)])
    slot_to_code = np.repeat(np.arange(alphabet), freq)
    _check(pos + 4 <= len(data), "entropy-coded weights end inside the coder state")
    x = int.from_bytes(data[pos : pos + 4], "little")
    pos += 4
    _check(L <= x < (L << 8), "entropy-coded weights: the initial coder state is outside [2^23, 2^31)")
    out = np.empty(int(count), dtype=np.int64)
    f_list, c_list, table = freq.tolist(), cum.tolist(), slot_to_code.tolist()
    mask = M - 1
    for i in range(int(count)):
        slot = x & mask
        s = table[slot]
        out[i] = s
        x = f_list[s] * (x >> PROB_BITS) + slot - c_list[s]
        while x < L:
            _check(pos < len(data), f"entropy-coded weights end after {i + 1} of {count} codes")
            x = (x << 8) | data[pos]
            pos += 1
    _check(x == L and pos == len(data),
           f"entropy-coded weights are corrupt: the coder does not end in its initial state "
           f"({len(data) - pos} bytes left over)")
    return out


def ideal_bits(codes: np.ndarray) -> float:
    """Empirical entropy of the codes times their count (the bound no coder of them beats)."""
    _, counts = np.unique(np.asarray(codes).ravel(), return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
