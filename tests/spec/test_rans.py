"""The entropy-coded stream of the per-parameter formats (qexport/spec/codecs/rans.py, docs/ops.md
"Per-parameter formats and the entropy-coded stream"): round trips, the size against the entropy,
and every malformed stream refused with a CodecError that says what is wrong. The C++ decoder
refuses the same streams (tests/kernels/test_kernel_errors.py)."""
from __future__ import annotations

import numpy as np
import pytest

from qexport.spec import codecs
from qexport.spec import reference as R
from qexport.spec.codecs import rans

from shared import rans_stream as stream

VARIABLE = [f for f in R.WEIGHT_FORMATS if codecs.get(f).variable_length]


def table_length(packed: np.ndarray) -> int:
    """Bytes of the code table (the first byte and the n entries)."""
    data, pos = packed.tobytes(), 1
    for _ in range(data[0] + 1):
        pos += 1
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    return pos


def random_codes(rng: np.random.Generator, count: int, alphabet: int, kind: str) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(0, alphabet, size=count)
    if kind == "single":
        return np.full(count, int(rng.integers(0, alphabet)))
    if kind == "pruned":  # 90% zeros, the rest spread like trained weights
        codes = rng.integers(1, alphabet, size=count) if alphabet > 1 else np.zeros(count, np.int64)
        codes[rng.random(count) < 0.9] = 0
        return codes
    p = rng.dirichlet(np.full(alphabet, 0.3))  # "skewed": a few frequent codes, many rare ones
    return rng.choice(alphabet, size=count, p=p)


# --------------------------------------------------------------------------- round trips and size
@pytest.mark.parametrize("seed", range(40))
def test_round_trip_on_random_tensors(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = 1 << int(rng.integers(1, 9))
    kind = ("uniform", "single", "pruned", "skewed")[seed % 4]
    count = int(rng.choice([1, 2, 3, 17, 255, 1000, 5000]))
    codes = random_codes(rng, count, alphabet, kind)
    packed = rans.encode(codes, alphabet)
    assert packed.dtype == np.uint8 and packed.ndim == 1
    np.testing.assert_array_equal(rans.decode(packed, count, alphabet), codes)
    # the table: the codes present, in increasing order, frequencies summing to M
    present = np.unique(codes)
    assert packed[0] + 1 == present.size
    freq = rans.normalize(np.bincount(codes, minlength=alphabet))
    assert freq.sum() == rans.M and np.array_equal(np.nonzero(freq)[0], present)


def test_single_symbol_tensor_is_table_and_state_only() -> None:
    codes = np.full(1000, 5)
    packed = rans.encode(codes, 16)
    # n - 1 = 0, code 5, frequency 4096 (2 varint bytes), the state (which never moves: x = L)
    assert packed.tobytes() == bytes([0, 5, 0x80, 0x20]) + (1 << 23).to_bytes(4, "little")
    np.testing.assert_array_equal(rans.decode(packed, 1000, 16), codes)
    np.testing.assert_array_equal(rans.decode(packed, 1, 16), codes[:1])  # the count is the caller's


@pytest.mark.parametrize("kind", ["uniform", "pruned", "skewed"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_size_is_close_to_the_entropy(kind: str, bits: int) -> None:
    rng = np.random.default_rng(bits * 10 + len(kind))
    codes = random_codes(rng, 20000, 1 << bits, kind)
    packed = rans.encode(codes, 1 << bits)
    ideal = rans.ideal_bits(codes) / 8
    payload = packed.size - table_length(packed)
    # the coder's own overhead: 12-bit frequencies and the 4-byte final state
    assert payload <= 1.03 * ideal + 4, (payload, ideal)


@pytest.mark.parametrize("fmt", VARIABLE)
def test_pruned_weights_of_each_format_round_trip(fmt: str) -> None:
    rng = np.random.default_rng(len(fmt))
    top = max(R.WEIGHT_BITS[fmt])
    values, valid = R.weight_lut(fmt, top)
    w = rng.choice(values[valid], size=(16, 3, 3, 3))
    w[rng.random(w.shape) < 0.9] = 0
    packed = R.pack_weights(w, fmt, top)
    np.testing.assert_array_equal(R.decode_weights(packed, fmt, top, w.shape), w)
    np.testing.assert_array_equal(R.decode_weights(packed, fmt, [top] * 16, w.shape), w)  # O equal entries
    np.testing.assert_array_equal(
        packed, rans.encode(R.encode_weights(w, fmt, top), 1 << top))  # the stream of the B-bit codes


# --------------------------------------------------------------------------- refusals
L = rans.L
SMALL = rans.encode(np.array([0, 1, 1, 2, 0, 0, 3, 0, 1, 0, 0, 2] * 5), 4)  # 60 codes, 4 symbols


def small_table() -> int:
    return table_length(SMALL)


# (case id, the stream, count, alphabet, valid table or None, the message)
CORRUPT = [
    ("empty", np.zeros(0, np.uint8), 4, 4, None, r"end inside the code table \(byte 0 of 0\)"),
    ("n_above_alphabet", stream([(0, 2048), (1, 1024), (2, 512), (3, 256), (4, 256)], L), 4, 4, None,
     "list 5 codes, more than the 4 of the format"),
    ("n_above_alphabet_header_only", np.array([4], np.uint8), 4, 4, None, "list 5 codes, more than the 4"),
    ("codes_out_of_order", stream([(1, 2048), (0, 2048)], L), 4, 4, None, "entry 0 is out of order or >= 4"),
    ("code_repeated", stream([(1, 2048), (1, 2048)], L), 4, 4, None, "entry 1 is out of order"),
    ("code_above_alphabet", stream([(0, 2048), (4, 2048)], L), 4, 4, None, "entry 4 is out of order or >= 4"),
    ("non_canonical", stream([(0, 2048), (2, 2048)], L), 4, 4, np.array([1, 1, 0, 1], bool),
     "list the non-canonical code 2"),
    ("varint_too_long", stream([(0, b"\x80\x80\x80\x01")], L), 4, 4, None, "varint is too long"),
    ("frequency_zero", stream([(0, 0), (1, 4096)], L), 4, 4, None, r"frequency 0 of code 0 is outside 1\.\.4096"),
    ("frequency_above_m", stream([(0, 4097)], L), 4, 4, None, r"frequency 4097 of code 0 is outside 1\.\.4096"),
    ("frequency_non_minimal_too_big", stream([(0, b"\xff\xff\x7f")], L), 4, 4, None, "frequency 2097151"),
    ("sum_below_m", stream([(0, 2048), (1, 2047)], L), 4, 4, None, "frequencies sum to 4095, not 4096"),
    ("sum_above_m", stream([(0, 4096), (1, 1)], L), 4, 4, None, "frequencies sum to 4097, not 4096"),
    ("state_truncated", stream([(0, 4096)], L)[:-1], 4, 4, None, "end inside the coder state"),
    ("state_below_l", stream([(0, 4096)], L - 1), 4, 4, None, r"initial coder state is outside \[2\^23, 2\^31\)"),
    ("state_at_2_31", stream([(0, 4096)], 1 << 31), 4, 4, None, r"outside \[2\^23, 2\^31\)"),
    ("state_max", stream([(0, 4096)], 2**32 - 1), 4, 4, None, r"outside \[2\^23, 2\^31\)"),
    ("final_state_not_l", stream([(0, 4096)], L + 1), 4, 4, None, r"does not end in its initial state \(0 bytes"),
    ("byte_left_over", stream([(0, 4096)], L, b"\x00"), 4, 4, None, r"initial state \(1 bytes left over\)"),
    ("payload_truncated", SMALL[:-1], 60, 4, None, r"end after \d+ of 60 codes"),
    ("trailing_byte", np.append(SMALL, np.uint8(0)), 60, 4, None, r"\(1 bytes left over\)"),
    ("fewer_codes_than_coded", SMALL, 59, 4, None, "does not end in its initial state|bytes left over"),
    ("more_codes_than_coded", SMALL, 61, 4, None, "end after|does not end in its initial state"),
]


@pytest.mark.parametrize("case", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_streams_are_refused(case) -> None:
    _, packed, count, alphabet, valid, message = case
    with pytest.raises(codecs.CodecError, match=message):
        rans.decode(packed, count, alphabet, valid)


def test_every_truncation_is_refused() -> None:
    np.testing.assert_array_equal(rans.decode(SMALL, 60, 4), [0, 1, 1, 2, 0, 0, 3, 0, 1, 0, 0, 2] * 5)
    t = small_table()
    for n in range(SMALL.size):
        where = "code table" if n < t else "coder state" if n < t + 4 else "after"
        with pytest.raises(codecs.CodecError, match=where):
            rans.decode(SMALL[:n], 60, 4)


def test_flipped_bits_are_refused_or_decode_to_valid_codes() -> None:
    """A flipped bit is refused or, rarely, still a well-formed stream of valid codes; never more."""
    rng = np.random.default_rng(0)
    codes = rng.choice(4, size=300, p=[0.7, 0.1, 0.1, 0.1])
    packed = rans.encode(codes, 4)
    refused = 0
    for i in range(packed.size):
        for bit in range(8):
            bad = packed.copy()
            bad[i] ^= np.uint8(1 << bit)
            try:
                out = rans.decode(bad, codes.size, 4)
            except codecs.CodecError:
                refused += 1
                continue
            assert out.shape == codes.shape and out.min() >= 0 and out.max() < 4
    assert refused >= 0.9 * 8 * packed.size


def test_not_a_byte_vector_is_refused() -> None:
    with pytest.raises(codecs.CodecError, match="1-D uint8"):
        rans.decode(SMALL.astype(np.int16), 60, 4)
    with pytest.raises(codecs.CodecError, match="1-D uint8"):
        rans.decode(SMALL.reshape(1, -1), 60, 4)


@pytest.mark.parametrize("fmt", VARIABLE)
def test_per_channel_widths_and_bad_weights_are_refused(fmt: str) -> None:
    lo = R.WEIGHT_BITS[fmt].start
    w = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match=rf"{fmt} weights take one bit-width for every channel .* got \[{lo}, {lo + 1}\]"):
        R.pack_weights(w, fmt, [lo, lo + 1])
    packed = R.pack_weights(w, fmt, lo)
    with pytest.raises(ValueError, match="one bit-width for every channel"):
        R.decode_weights(packed, fmt, [lo, lo + 1], (2, 3))
    with pytest.raises(ValueError, match=f"{fmt} weights support"):
        R.pack_weights(w, fmt, max(R.WEIGHT_BITS[fmt]) + 1)
    values, valid = R.weight_lut(fmt, lo)
    with pytest.raises(ValueError, match=f"not {lo}-bit {fmt} levels"):
        R.pack_weights(w + int(np.abs(values).max()) + 1, fmt, lo)
    # the "negative zero" code listed in the table
    neg_zero = 1 << (lo - 1)
    assert not valid[neg_zero]
    with pytest.raises(ValueError, match=f"non-canonical code {neg_zero}"):
        R.decode_weights(stream([(neg_zero, 4096)], L), fmt, lo, (2, 3))
