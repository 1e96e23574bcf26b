"""Invalid models and inputs give an ONNX Runtime exception (never a crash) naming the op and the problem.

Attribute and constant-initializer problems surface when the session is created (ONNX Runtime
reports a kernel-creation failure as RUNTIME_EXCEPTION "Exception during initialization: ...");
input problems surface in run() as INVALID_ARGUMENT; dtype problems are refused by ONNX Runtime
itself at session creation (INVALID_GRAPH), because the ops declare their input types.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from qexport.spec import reference as R
from qexport.runtime import make_session

from shared import rans_stream
from kernel_graphs import assert_bitwise_equal, feeds, quantize_model, serialize, weighted_model

WEIGHTS = ("W", "W_scale", "B")


def conv_inputs(n=2, c=4, h=5, w=5, o=4, cg=4, k=3, fmt="post", bits=4, act_bits=4, codes=None):
    count = o * cg * k * k
    if codes is None:
        codes = np.zeros(count, dtype=np.uint8)
    return {
        "X": np.zeros((n, c, h, w), dtype=np.uint8),
        "X_scale": np.ones(n, dtype=np.float32),
        "W": R.pack_codes(codes, bits),
        "W_scale": np.ones(o, dtype=np.float32),
        "B": np.zeros(o, dtype=np.float32),
    }


def conv_attrs(o=4, cg=4, k=3, bits=4, act_bits=4, **extra):
    attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=0, weight_shape=[o, cg, k, k], strides=[1, 1],
                 pads=[1, 1, 1, 1], dilations=[1, 1], group=1, relu=0)
    attrs.update(extra)
    return attrs


def gemm_inputs(n=2, k=10, o=3, bits=4):
    return {"X": np.zeros((n, k), dtype=np.uint8), "X_scale": np.ones(n, dtype=np.float32),
            "W": R.pack_codes(np.zeros(o * k, dtype=np.uint8), bits), "W_scale": np.ones(o, dtype=np.float32),
            "B": np.zeros(o, dtype=np.float32)}


def gemm_attrs(k=10, o=3, bits=4, **extra):
    attrs = dict(bits=bits, act_bits=4, act_zero_point=0, weight_shape=[o, k], relu=0)
    attrs.update(extra)
    return attrs


def asq_inputs(n=2, c=3, hidden=4, rank=4):
    rng = np.random.default_rng(0)
    return {"X": rng.normal(size=(n, c) + (3,) * (rank - 2)).astype(np.float32),
            "W1": rng.normal(size=(hidden, c)).astype(np.float32), "B1": np.zeros(hidden, np.float32),
            "W2": rng.normal(size=(1, hidden)).astype(np.float32), "B2": np.zeros(1, np.float32)}


def run_model(model, inputs, constant):
    sess = make_session(serialize(model))
    return sess.run(None, feeds(inputs, constant))


def expect_error(model, inputs, constant, *fragments, at_run=None):
    """The model fails with an onnxruntime exception whose message holds every fragment.

    at_run: True -> must fail in run() with INVALID_ARGUMENT (session creation succeeds);
    False -> must fail at session creation; None -> either.
    """
    try:
        sess = make_session(serialize(model))
    except Exception as exc:  # noqa: BLE001 - checked below
        assert at_run is not True, f"failed at session creation, expected in run(): {exc}"
        return _check(exc, fragments)
    with pytest.raises(Exception) as info:
        sess.run(None, feeds(inputs, constant))
    assert at_run is not False, f"failed in run(), expected at session creation: {info.value}"
    assert isinstance(info.value, ort_errors.InvalidArgument), f"{type(info.value).__name__}: {info.value}"
    _check(info.value, fragments)
    return sess


def _check(exc, fragments):
    assert type(exc).__module__.startswith("onnxruntime"), f"not an onnxruntime exception: {type(exc)!r} {exc}"
    msg = str(exc)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


# --------------------------------------------------------------------------- input types and shapes
def test_float_x_is_refused_by_type() -> None:
    inputs = conv_inputs()
    inputs["X"] = inputs["X"].astype(np.float32)
    expect_error(weighted_model("conv", "post", inputs, conv_attrs()), inputs, WEIGHTS, "QConv", "tensor(float)",
                 "(X)", at_run=False)


def test_uint8_scale_is_refused_by_type() -> None:
    inputs = gemm_inputs()
    inputs["W_scale"] = inputs["W_scale"].astype(np.uint8)
    expect_error(weighted_model("gemm", "uniform", inputs, gemm_attrs()), inputs, (), "QGemm",
                 "(W_scale)", at_run=False)


def test_asq_float64_input_is_refused_by_type() -> None:
    inputs = asq_inputs()
    inputs["X"] = inputs["X"].astype(np.float64)
    expect_error(quantize_model("AsqQuantize", inputs, dict(bits=4, signed=0, step=0.1)), inputs, (),
                 "AsqQuantize", "tensor(double)", at_run=False)


def test_wrong_number_of_inputs() -> None:
    inputs = gemm_inputs()
    del inputs["B"]
    expect_error(weighted_model("gemm", "post", inputs, gemm_attrs(), ()), inputs, (), "QGemm", "input size 4",
                 at_run=False)


def test_conv_wrong_rank() -> None:
    inputs = conv_inputs()
    inputs["X"] = np.zeros((2, 4, 5), dtype=np.uint8)
    model = weighted_model("conv", "post", inputs, conv_attrs(), free_shapes=True)
    sess = expect_error(model, inputs, WEIGHTS, "QConv: ",
                        "input 'X' must be (N, C, H, W), got rank 3", at_run=True)
    # The session survives the error and still runs valid input.
    good = conv_inputs()
    (y,) = sess.run(None, feeds(good, WEIGHTS))
    assert y.shape == (2, 4, 5, 5)


def test_gemm_wrong_rank() -> None:
    inputs = gemm_inputs()
    inputs["X"] = np.zeros((2, 10, 1), dtype=np.uint8)
    expect_error(weighted_model("gemm", "pot", inputs, gemm_attrs()), inputs, WEIGHTS, "QGemm: ",
                 "input 'X' must be (N, K), got rank 3", at_run=True)


def test_conv_channels_not_group_times_weight_channels() -> None:
    inputs = conv_inputs(c=6, o=4, cg=2)
    expect_error(weighted_model("conv", "uniform", inputs, conv_attrs(o=4, cg=2, group=2)), inputs, WEIGHTS,
                 "QConv: ", "input 'X' has 6 channels, expected group * weight_shape[1] = 2 * 2 = 4",
                 at_run=True)


def test_gemm_wrong_k() -> None:
    inputs = gemm_inputs(k=10)
    inputs["X"] = np.zeros((2, 11), dtype=np.uint8)
    expect_error(weighted_model("gemm", "post", inputs, gemm_attrs(k=10)), inputs, WEIGHTS, "QGemm: ",
                 "input 'X' has 11 features, expected K = weight_shape[1] = 10", at_run=True)


def test_x_scale_wrong_length() -> None:
    inputs = conv_inputs(n=2)
    inputs["X_scale"] = np.ones(3, dtype=np.float32)
    expect_error(weighted_model("conv", "post", inputs, conv_attrs()), inputs, WEIGHTS, "QConv: ",
                 "input 'X_scale' has 3 entries for a batch of 2", at_run=True)


@pytest.mark.parametrize("name", ["W_scale", "B"])
@pytest.mark.parametrize("constant", [True, False])
def test_w_scale_or_bias_wrong_length(name: str, constant: bool) -> None:
    inputs = conv_inputs(o=4)
    inputs[name] = np.ones(3, dtype=np.float32)
    const = WEIGHTS if constant else ("W",)
    expect_error(weighted_model("conv", "pot", inputs, conv_attrs(), const), inputs, const, "QConv: ",
                 f"input '{name}' has 3 entries for 4 output channels", at_run=not constant)


@pytest.mark.parametrize("constant", [True, False])
def test_gemm_bias_wrong_length(constant: bool) -> None:
    inputs = gemm_inputs(o=3)
    inputs["B"] = np.ones(5, dtype=np.float32)
    const = WEIGHTS if constant else ()
    expect_error(weighted_model("gemm", "uniform", inputs, gemm_attrs(), const), inputs, const, "QGemm: ",
                 "input 'B' has 5 entries for 3 output channels", at_run=not constant)


# --------------------------------------------------------------------------- packed weights
@pytest.mark.parametrize("constant", [True, False])
def test_truncated_packed_weights(constant: bool) -> None:
    inputs = conv_inputs(o=4, cg=4, k=3, bits=3, fmt="post")  # 144 codes * 3 bits = 54 bytes
    inputs["W"] = inputs["W"][:-1]
    const = WEIGHTS if constant else ()
    expect_error(weighted_model("conv", "post", inputs, conv_attrs(bits=3), const), inputs, const, "QConv: ",
                 "input 'W' holds 53 bytes, expected 54", at_run=not constant)


@pytest.mark.parametrize("constant", [True, False])
def test_too_long_packed_weights(constant: bool) -> None:
    inputs = gemm_inputs(k=10, o=3, bits=4)  # 30 codes * 4 bits = 15 bytes
    inputs["W"] = np.concatenate([inputs["W"], np.zeros(1, np.uint8)])
    const = WEIGHTS if constant else ()
    expect_error(weighted_model("gemm", "uniform", inputs, gemm_attrs(), const), inputs, const, "QGemm: ",
                 "input 'W' holds 16 bytes, expected 15", at_run=not constant)


@pytest.mark.parametrize("constant", [True, False])
def test_nonzero_padding_bits(constant: bool) -> None:
    inputs = gemm_inputs(k=5, o=1, bits=3)  # 15 bits in 2 bytes: bit 15 is padding
    inputs["W"] = inputs["W"].copy()
    inputs["W"][-1] |= 0x80
    const = WEIGHTS if constant else ()
    expect_error(weighted_model("gemm", "uniform", inputs, gemm_attrs(k=5, o=1, bits=3), const), inputs, const,
                 "QGemm: ", "input 'W' has non-zero padding bits", at_run=not constant)


@pytest.mark.parametrize("fmt", ["pot", "post"])
@pytest.mark.parametrize("constant", [True, False])
def test_negative_zero_code(fmt: str, constant: bool) -> None:
    codes = np.zeros(4 * 4 * 9, dtype=np.uint8)
    codes[37] = 0b1000  # 4-bit sign-magnitude: sign 1, magnitude 0
    inputs = conv_inputs(fmt=fmt, codes=codes)
    const = WEIGHTS if constant else ()
    op = "QConv"
    expect_error(weighted_model("conv", fmt, inputs, conv_attrs(), const), inputs, const, f"{op}: ",
                 f"non-canonical {fmt} code 8 (negative zero) at weight index 37", at_run=not constant)


# --------------------------------------------------------------------------- entropy-coded weights
# The per-parameter formats' rANS stream (docs/ops.md, "Per-parameter formats and the entropy-coded
# stream"): the library refuses exactly what qexport/spec/codecs/rans.py refuses (tests/spec/test_rans.py),
# with a message naming input 'W' and what is wrong, and never reads outside the bytes.
L = 1 << 23  # the coder's lower bound: the encoder's first state and the decoder's last


def perparam_case(fmt: str = "perparam", bits: int = 2, o: int = 4, k: int = 16, seed: int = 0):
    """(inputs, attrs) of a QGemm with random, half-pruned weights in the entropy-coded stream."""
    rng = np.random.default_rng(seed)
    values, valid = R.weight_lut(fmt, bits)
    w = rng.choice(values[valid], size=(o, k))
    w[rng.random((o, k)) < 0.5] = 0
    inputs = gemm_inputs(k=k, o=o)
    inputs.update(X=rng.integers(0, 16, size=(2, k), dtype=np.uint8), W=R.pack_weights(w, fmt, bits))
    return inputs, gemm_attrs(k=k, o=o, bits=bits)


def reference_or_refusal(inputs: dict, fmt: str, attrs: dict):
    """The reference's output for these inputs, or its error message when it refuses them."""
    try:
        return R.qgemm(*(inputs[n] for n in ("X", "X_scale", "W", "W_scale", "B")), fmt=fmt, bits=attrs["bits"],
                       act_bits=attrs["act_bits"], act_zero_point=attrs["act_zero_point"],
                       weight_shape=attrs["weight_shape"])
    except ValueError as exc:
        return str(exc)


_SMALL = perparam_case()[0]["W"]  # 64 codes of 2 bits: a table, the state and a payload
CORRUPT_STREAMS = [  # (id, W, what the message says after the common part)
    ("empty", np.zeros(0, np.uint8), "it ends inside the code table"),
    ("n_above_alphabet", np.array([4], np.uint8), "the table lists 5 codes, more than the 4 of the format"),
    ("codes_out_of_order", rans_stream([(1, 2048), (0, 2048)], L), "code table entry 0 is out of order or >= 4"),
    ("code_repeated", rans_stream([(1, 2048), (1, 2048)], L), "code table entry 1 is out of order or >= 4"),
    ("code_above_alphabet", rans_stream([(0, 2048), (4, 2048)], L), "code table entry 4 is out of order or >= 4"),
    ("non_canonical", rans_stream([(0, 2048), (2, 2048)], L), "the table lists the non-canonical code 2 (negative zero)"),
    ("varint_too_long", rans_stream([(0, b"\x80\x80\x80\x01")], L), "the frequency varint of code 0 is too long"),
    ("varint_truncated", np.array([0, 0, 0x80], np.uint8), "it ends inside the code table"),
    ("frequency_zero", rans_stream([(0, 0), (1, 4096)], L), "frequency 0 of code 0 is outside 1..4096"),
    ("frequency_above_m", rans_stream([(0, 4097)], L), "frequency 4097 of code 0 is outside 1..4096"),
    ("frequency_21_bits", rans_stream([(0, b"\xff\xff\x7f")], L), "frequency 2097151 of code 0 is outside"),
    ("sum_below_m", rans_stream([(0, 2048), (1, 2047)], L), "the frequencies sum to 4095, not 4096"),
    ("sum_above_m", rans_stream([(0, 4096), (1, 1)], L), "the frequencies sum to 4097, not 4096"),
    ("state_truncated", rans_stream([(0, 4096)], L)[:-1], "it ends inside the coder state"),
    ("state_below_l", rans_stream([(0, 4096)], L - 1), "the initial coder state 8388607 is outside [2^23, 2^31)"),
    ("state_at_2_31", rans_stream([(0, 4096)], 1 << 31), "the initial coder state 2147483648 is outside"),
    ("state_max", rans_stream([(0, 4096)], 2**32 - 1), "the initial coder state 4294967295 is outside"),
    ("final_state_not_l", rans_stream([(0, 4096)], L + 1), "the coder ends in state 8388609, not 2^23"),
    ("byte_left_over", rans_stream([(0, 4096)], L, b"\x00"), "1 bytes are left over after the last of 64 codes"),
    ("payload_truncated", _SMALL[:-1], "it ends after "),  # some code of the last ones
    ("trailing_bytes", np.concatenate([_SMALL, np.zeros(3, np.uint8)]), "3 bytes are left over after the last of 64 codes"),
]


@pytest.mark.parametrize("case", CORRUPT_STREAMS, ids=[c[0] for c in CORRUPT_STREAMS])
@pytest.mark.parametrize("constant", [True, False])
def test_corrupt_entropy_coded_weights(case, constant: bool) -> None:
    _, w, fragment = case
    inputs, attrs = perparam_case()
    inputs["W"] = w
    assert isinstance(reference_or_refusal(inputs, "perparam", attrs), str)  # rans.py refuses it too
    const = WEIGHTS if constant else ()
    expect_error(weighted_model("gemm", "perparam", inputs, attrs, const), inputs, const, "QGemm: ",
                 f"input 'W' is not a valid entropy-coded perparam stream (2-bit codes, {w.size} bytes): {fragment}",
                 at_run=not constant)


@pytest.mark.parametrize("fmt", ["perparam", "perparam_post"])
@pytest.mark.parametrize("constant", [True, False])
def test_every_truncation_of_an_entropy_coded_stream(fmt: str, constant: bool) -> None:
    inputs, attrs = perparam_case(fmt, bits=3, o=3, k=7)
    w = inputs["W"]
    const = WEIGHTS if constant else ()
    parts = ("inside the code table", "inside the coder state", "after")
    seen = set()
    for n in range(w.size):
        inputs["W"] = w[:n]
        refusal = reference_or_refusal(inputs, fmt, attrs)  # where rans.py says the stream ends ...
        part = next(p for p in parts if f"entropy-coded weights end {p}" in refusal)
        seen.add(part)
        expect_error(weighted_model("gemm", fmt, inputs, attrs, const), inputs, const, "QGemm: ",  # ... the library too
                     f"input 'W' is not a valid entropy-coded {fmt} stream (3-bit codes, {n} bytes): it ends {part}",
                     at_run=not constant)
    assert seen == set(parts)


@pytest.mark.parametrize("constant", [True, False])
def test_flipped_bits_of_an_entropy_coded_stream(constant: bool) -> None:
    """Every single-bit flip: refused by both the library and the reference, or (rarely) accepted by
    both with the same outputs."""
    base, attrs = perparam_case("perparam", bits=3, o=4, k=9, seed=3)
    const = WEIGHTS if constant else ()
    refused = 0
    for i in range(base["W"].size):
        for bit in range(8):
            inputs = dict(base, W=base["W"].copy())
            inputs["W"][i] ^= np.uint8(1 << bit)
            expected = reference_or_refusal(inputs, "perparam", attrs)
            model = weighted_model("gemm", "perparam", inputs, attrs, const)
            if isinstance(expected, str):
                refused += 1
                expect_error(model, inputs, const, "QGemm: ", "input 'W' is not a valid entropy-coded perparam stream",
                             at_run=not constant)
            else:
                (y,) = run_model(model, inputs, const)
                assert_bitwise_equal(y, expected, f"byte {i} bit {bit} flipped")
    assert refused >= 0.9 * 8 * base["W"].size


@pytest.mark.parametrize("fmt", ["perparam", "perparam_post"])
def test_entropy_coded_weights_take_one_bit_width(fmt: str) -> None:
    inputs, attrs = perparam_case(fmt, bits=3, o=3, k=4)
    expect_error(weighted_model("gemm", fmt, inputs, dict(attrs, bits=[3, 2, 3])), inputs, WEIGHTS, "QGemm: ",
                 f"attribute 'bits'=[3, 2, 3] has more than one value: {fmt} weights take one bit-width for every "
                 "output channel", at_run=False)
    # O equal entries are one width
    (y,) = run_model(weighted_model("gemm", fmt, inputs, dict(attrs, bits=[3, 3, 3])), inputs, WEIGHTS)
    assert_bitwise_equal(y, reference_or_refusal(inputs, fmt, attrs), f"{fmt} bits=[3, 3, 3]")
    top = max(R.WEIGHT_BITS[fmt])
    expect_error(weighted_model("gemm", fmt, inputs, dict(attrs, bits=top + 1)), inputs, WEIGHTS, "QGemm: ",
                 f"attribute 'bits'={top + 1} is out of range for {fmt} weights (2..{top})", at_run=False)


def test_packed_weights_must_be_1d() -> None:
    inputs = gemm_inputs(k=10, o=3)
    inputs["W"] = inputs["W"].reshape(3, 5)
    expect_error(weighted_model("gemm", "post", inputs, gemm_attrs(), ()), inputs, (), "QGemm: ",
                 "input 'W' must be 1-D", at_run=True)


# --------------------------------------------------------------------------- activation codes
@pytest.mark.parametrize("kind", ["conv", "gemm"])
def test_code_above_act_bits(kind: str) -> None:
    if kind == "conv":
        inputs, attrs = conv_inputs(), conv_attrs(act_bits=4)
    else:
        inputs, attrs = gemm_inputs(), gemm_attrs()
    inputs["X"] = inputs["X"].copy()
    inputs["X"].reshape(-1)[7] = 16
    op = "QConv" if kind == "conv" else "QGemm"
    expect_error(weighted_model(kind, "post", inputs, attrs), inputs, WEIGHTS, f"{op}: ",
                 "input 'X' holds code 16 above 2^act_bits - 1 = 15 (act_bits=4)", at_run=True)


# --------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("fmt,bits", [("post", 5), ("pot", 5), ("post", 1), ("uniform", 9), ("uniform", 1)])
def test_weight_bits_out_of_range(fmt: str, bits: int) -> None:
    inputs = gemm_inputs(bits=4)
    hi = 8 if fmt == "uniform" else 4
    op = "QGemm"
    expect_error(weighted_model("gemm", fmt, inputs, gemm_attrs(bits=bits)), inputs, WEIGHTS, f"{op}: ",
                 f"attribute 'bits'={bits} is out of range for {fmt} weights (2..{hi})", at_run=False)


@pytest.mark.parametrize("act_bits", [1, 9])
def test_act_bits_out_of_range(act_bits: int) -> None:
    inputs = conv_inputs()
    expect_error(weighted_model("conv", "post", inputs, conv_attrs(act_bits=act_bits)), inputs, WEIGHTS,
                 "QConv: ", f"attribute 'act_bits'={act_bits} is out of range (2..8)", at_run=False)


@pytest.mark.parametrize("zp", [-1, 16])
def test_act_zero_point_out_of_range(zp: int) -> None:
    inputs = conv_inputs()
    expect_error(weighted_model("conv", "post", inputs, conv_attrs(act_zero_point=zp)), inputs, WEIGHTS,
                 "QConv: ", f"attribute 'act_zero_point'={zp} is out of range (0..15", at_run=False)


def test_group_does_not_divide_out_channels() -> None:
    inputs = conv_inputs(c=3 * 4, o=16, cg=4)
    expect_error(weighted_model("conv", "post", inputs, conv_attrs(o=16, cg=4, group=3)), inputs, WEIGHTS,
                 "QConv: attribute 'group'=3 does not divide out channels 16", at_run=False)


def test_group_zero() -> None:
    inputs = conv_inputs()
    expect_error(weighted_model("conv", "post", inputs, conv_attrs(group=0)), inputs, WEIGHTS,
                 "QConv: attribute 'group'=0 must be >= 1", at_run=False)


@pytest.mark.parametrize("pads", [[-1, 0, 0, 0], [0, 0, 0, -2], [1, 1]])
def test_bad_pads(pads: list[int]) -> None:
    inputs = conv_inputs()
    expect_error(weighted_model("conv", "uniform", inputs, conv_attrs(pads=pads)), inputs, WEIGHTS,
                 "QConv: ", f"attribute 'pads'={pads} must be 4 values >= 0", at_run=False)


@pytest.mark.parametrize("name,value", [("strides", [0, 1]), ("strides", [1]), ("dilations", [1, 0])])
def test_bad_strides_or_dilations(name: str, value: list[int]) -> None:
    inputs = conv_inputs()
    expect_error(weighted_model("conv", "pot", inputs, conv_attrs(**{name: value})), inputs, WEIGHTS,
                 "QConv: ", f"attribute '{name}'={value} must be 2 values >= 1", at_run=False)


@pytest.mark.parametrize("kind", ["conv", "gemm"])
def test_relu_not_boolean(kind: str) -> None:
    if kind == "conv":
        inputs, attrs = conv_inputs(), conv_attrs(relu=2)
    else:
        inputs, attrs = gemm_inputs(), gemm_attrs(relu=2)
    op = "QConv" if kind == "conv" else "QGemm"
    expect_error(weighted_model(kind, "post", inputs, attrs), inputs, WEIGHTS, f"{op}: ",
                 "attribute 'relu'=2 must be 0 or 1", at_run=False)


@pytest.mark.parametrize("shape", [[4, 4, 3], [4, 0, 3, 3], [4, 4, 3, -3]])
def test_bad_weight_shape(shape: list[int]) -> None:
    inputs = conv_inputs()
    expect_error(weighted_model("conv", "post", inputs, conv_attrs(weight_shape=shape)), inputs, WEIGHTS,
                 "QConv: ", f"attribute 'weight_shape'={shape}", at_run=False)


def test_empty_output() -> None:
    inputs = conv_inputs(h=2, w=5, k=3)
    attrs = conv_attrs(k=3, pads=[0, 0, 0, 0])
    expect_error(weighted_model("conv", "post", inputs, attrs), inputs, WEIGHTS, "QConv: ",
                 "output would be empty (0x3) for input 2x5 with kernel 3x3", at_run=True)


@pytest.mark.parametrize("missing", ["bits", "act_bits", "act_zero_point", "weight_shape"])
def test_missing_attribute(missing: str) -> None:
    inputs = conv_inputs()
    attrs = conv_attrs()
    del attrs[missing]
    expect_error(weighted_model("conv", "post", inputs, attrs), inputs, WEIGHTS, "QConv: ",
                 f"missing required attribute '{missing}'", at_run=False)


def test_attribute_of_wrong_type() -> None:
    inputs = gemm_inputs()
    expect_error(weighted_model("gemm", "post", inputs, gemm_attrs(relu=1.0)), inputs, WEIGHTS, "QGemm: ",
                 "attribute 'relu' must be of type int", at_run=False)


# --------------------------------------------------------------------------- quantize ops
def test_asq_w1_wrong_shape() -> None:
    inputs = asq_inputs(c=3, hidden=4)
    inputs["W1"] = np.zeros((4, 5), dtype=np.float32)
    expect_error(quantize_model("AsqQuantize", inputs, dict(bits=4, signed=0, step=0.1)), inputs, (),
                 "AsqQuantize: ", "input 'W1' must be (H, C) = (H, 3), got (4, 5)", at_run=True)


@pytest.mark.parametrize("name,shape,fragment", [("B1", (3,), "input 'B1' must be (4,), got (3,)"),
                                                 ("W2", (4,), "input 'W2' must be (1, 4), got (4,)"),
                                                 ("B2", (2,), "input 'B2' must be (1,), got (2,)")])
def test_asq_adapter_shapes(name: str, shape: tuple, fragment: str) -> None:
    inputs = asq_inputs(c=3, hidden=4)
    inputs[name] = np.zeros(shape, dtype=np.float32)
    expect_error(quantize_model("AsqQuantize", inputs, dict(bits=4, signed=0, step=0.1)), inputs, (),
                 "AsqQuantize: ", fragment, at_run=True)


def test_asq_constant_adapters_checked_at_creation() -> None:
    inputs = asq_inputs(c=3, hidden=4)
    inputs["B1"] = np.zeros(5, dtype=np.float32)
    const = ("W1", "B1", "W2", "B2")
    expect_error(quantize_model("AsqQuantize", inputs, dict(bits=4, signed=0, step=0.1), const), inputs, const,
                 "AsqQuantize: ", "input 'B1' must be (4,), got (5,)", at_run=False)


def test_asq_rank_1() -> None:
    inputs = asq_inputs()
    inputs["X"] = np.zeros(3, dtype=np.float32)
    expect_error(quantize_model("AsqQuantize", inputs, dict(bits=4, signed=0, step=0.1)), inputs, (),
                 "AsqQuantize: ", "input 'X' must have rank >= 2", at_run=True)


def test_lsq_scalar() -> None:
    inputs = {"X": np.array(1.0, dtype=np.float32)}
    expect_error(quantize_model("LsqQuantize", inputs, dict(bits=4, signed=0, step=0.1)), inputs, (),
                 "LsqQuantize: ", "input 'X' must have rank >= 1", at_run=True)


@pytest.mark.parametrize("op", ["AsqQuantize", "LsqQuantize"])
@pytest.mark.parametrize("step", [0.0, -0.5, float("inf"), float("nan")])
def test_step_not_positive_finite(op: str, step: float) -> None:
    inputs = asq_inputs() if op == "AsqQuantize" else {"X": np.zeros((2, 3), np.float32)}
    expect_error(quantize_model(op, inputs, dict(bits=4, signed=0, step=step)), inputs, (), f"{op}: ",
                 "attribute 'step'=", "must be finite and > 0", at_run=False)


@pytest.mark.parametrize("attrs,fragment", [(dict(bits=9, signed=0, step=0.1), "attribute 'bits'=9 is out of range (2..8)"),
                                            (dict(bits=1, signed=0, step=0.1), "attribute 'bits'=1 is out of range"),
                                            (dict(bits=4, signed=2, step=0.1), "attribute 'signed'=2 must be 0 or 1"),
                                            (dict(bits=4, signed=0), "missing required attribute 'step' (float)"),
                                            (dict(signed=0, step=0.1), "missing required attribute 'bits' (int)")])
def test_quantize_attributes(attrs: dict, fragment: str) -> None:
    inputs = {"X": np.zeros((2, 3), np.float32)}
    expect_error(quantize_model("LsqQuantize", inputs, attrs), inputs, (), "LsqQuantize: ", fragment, at_run=False)
