"""Weight codecs (qexport/spec/codecs/, docs/ops.md "Weight codecs"): the registry, the
fixed-width stream with a bit-width per output channel, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest

from qexport.spec import codecs
from qexport.spec import reference as R
from qexport.spec.codecs import rans

FIXED_WIDTH = [f for f in R.WEIGHT_FORMATS if not codecs.get(f).variable_length]
VARIABLE_LENGTH = [f for f in R.WEIGHT_FORMATS if codecs.get(f).variable_length]


def _bit_string_pack(rows: list[list[int]], bits: list[int]) -> bytes:
    """An independent statement of the stream: one Python int, code after code, LSB first."""
    acc, pos = 0, 0
    for row, b in zip(rows, bits):
        for c in row:
            acc |= int(c) << pos
            pos += b
    return acc.to_bytes((pos + 7) // 8, "little")


def test_registry_is_the_format_list():
    assert R.WEIGHT_FORMATS == codecs.names() and {"uniform", "pot", "post", "ternary"} <= set(R.WEIGHT_FORMATS)
    assert {"perparam", "perparam_post"} <= set(VARIABLE_LENGTH)
    for name in R.WEIGHT_FORMATS:
        codec = codecs.get(name)
        assert codec.name == name and R.WEIGHT_BITS[name] == codec.bits and max(codec.bits) <= 8
        for b in codec.bits:
            values, valid = R.weight_lut(name, b)
            assert values.shape == valid.shape == (2**b,) and valid.any()
            canonical = values[valid]
            assert len(set(canonical.tolist())) == canonical.size  # decodable and encodable
            assert np.abs(canonical).max() <= 128  # the kernels' int8 re-packing holds every level
    with pytest.raises(codecs.CodecError, match="unknown weight format 'int3'"):
        codecs.get("int3")


@pytest.mark.parametrize("seed", range(30))
def test_per_channel_stream_round_trips_and_matches_the_bit_string(seed: int):
    rng = np.random.default_rng(seed)
    fmt = FIXED_WIDTH[seed % len(FIXED_WIDTH)]
    allowed = R.WEIGHT_BITS[fmt]
    o, k = int(rng.integers(1, 9)), int(rng.integers(1, 30))
    bits = [int(b) for b in rng.integers(allowed.start, allowed.stop, size=o)] if seed % 3 else [int(allowed.start)] * o
    rows = []
    for b in bits:
        values, valid = R.weight_lut(fmt, b)
        rows.append(values[rng.choice(np.nonzero(valid)[0], size=k)])
    w_int = np.stack(rows).reshape(o, k, 1, 1)
    packed = R.pack_weights(w_int, fmt, bits)
    codes = [R.encode_weights(w_int[i], fmt, bits[i]).reshape(-1).tolist() for i in range(o)]
    assert packed.tobytes() == _bit_string_pack(codes, bits)
    assert packed.size == (k * sum(bits) + 7) // 8  # the ideal size: no per-row alignment
    np.testing.assert_array_equal(R.decode_weights(packed, fmt, bits, w_int.shape), w_int)
    if len(set(bits)) == 1:  # one width: the version-1 stream (pack_codes of the flat codes), byte for byte
        flat = R.encode_weights(w_int, fmt, bits[0])
        np.testing.assert_array_equal(R.pack_codes(flat, bits[0]), packed)
        np.testing.assert_array_equal(R.decode_weights(packed, fmt, [bits[0]], w_int.shape), w_int)


@pytest.mark.parametrize("seed", range(30))
def test_entropy_coded_stream_round_trips(seed: int):
    """The variable-length formats: one bit-width B for every channel (1 or O equal entries), the
    rANS stream of the B-bit codes of the whole tensor in row-major order; its length is the
    weights', not the shape's (Codec.packed_length and reference.packed_length say so)."""
    rng = np.random.default_rng(seed)
    fmt = VARIABLE_LENGTH[seed % len(VARIABLE_LENGTH)]
    codec = codecs.get(fmt)
    b = int(rng.integers(codec.bits.start, codec.bits.stop))
    o, k = int(rng.integers(1, 9)), int(rng.integers(1, 30))
    values, valid = R.weight_lut(fmt, b)
    w_int = values[rng.choice(np.nonzero(valid)[0], size=(o, k))]
    if seed % 3 == 0:  # pruned
        w_int[rng.random(w_int.shape) < 0.9] = 0
    w_int = w_int.reshape(o, k, 1, 1)
    bits = b if seed % 2 else [b] * o
    packed = R.pack_weights(w_int, fmt, bits)
    assert packed.tobytes() == rans.encode(R.encode_weights(w_int, fmt, b), 1 << b).tobytes()
    np.testing.assert_array_equal(R.decode_weights(packed, fmt, bits, w_int.shape), w_int)
    assert codec.packed_length(codecs.channel_bits(bits, o), k) is None
    assert R.packed_length(o * k, b, fmt) is None
    assert R.packed_length(o * k, b) == (o * k * b + 7) // 8  # the fixed-width length, format or not
    other = b - 1 if b > codec.bits.start else b + 1
    with pytest.raises(ValueError, match="one bit-width for every channel"):
        R.decode_weights(packed, fmt, [b] * o + [other], (o + 1, k, 1, 1))


def test_bad_streams_and_bit_widths_are_refused():
    w = np.array([[1, -1, 0], [0, 1, 1]])
    packed = R.pack_weights(w, "ternary", [2, 2])
    with pytest.raises(ValueError, match="bits must be one integer or 2"):
        R.decode_weights(packed, "ternary", [2, 2, 2], (2, 3))
    with pytest.raises(ValueError, match="ternary weights support 2..2 bits, got 3"):
        R.decode_weights(packed, "ternary", [2, 3], (2, 3))
    with pytest.raises(ValueError, match="hold 1 bytes, expected 2"):
        R.decode_weights(packed[:1], "ternary", 2, (2, 3))
    with pytest.raises(ValueError, match="non-zero padding bits"):
        R.decode_weights(np.array([packed[0], packed[1] | 0x80], np.uint8), "ternary", 2, (2, 3))
    with pytest.raises(ValueError, match="non-canonical ternary code"):
        R.decode_weights(np.array([0x03, 0x00], np.uint8), "ternary", 2, (2, 3))
    with pytest.raises(ValueError, match=r"integer weights \[2\] are not 2-bit ternary levels"):
        R.pack_weights(np.array([[2, 0, 0]]), "ternary", 2)
    mixed = R.pack_weights(np.array([[7, -8], [1, -2]]), "uniform", [4, 2])
    assert mixed.size == 2  # 2*4 + 2*2 = 12 bits
    with pytest.raises(ValueError, match="hold 2 bytes, expected 3"):
        R.decode_weights(mixed, "uniform", [8, 4], (2, 2))
