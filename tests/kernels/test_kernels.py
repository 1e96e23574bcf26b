"""ONNX Runtime + libqexport_ops against the numpy reference, bit for bit.

Every case draws its shapes, bit-widths and data from a seeded numpy generator (the seed is the
test id, so a failure is reproducible alone: ``pytest tests/kernels/test_kernels.py -k "conv and 17"``),
runs one single-node model and compares the uint8 codes and the float32 outputs *bitwise* with
qexport.spec.reference (the definition of the ops).

Every test runs once per kernel path this CPU supports (qexport.runtime.kernel_isas(): the
portable "scalar" code always, plus e.g. avx2, avx512vnni, amx or neon, dotprod), forced with
QEXPORT_KERNEL_ISA before each session is created; ``-k avx2`` selects one path. With
QEXPORT_KERNEL_TRACE=1 every kernel reports the path whose code it ran, and each test checks that
this is the forced path (or the one docs/ops.md names for a part the path has no kernel of its
own for, or the portable code with its reason): no silent fallback.
"""
from __future__ import annotations

import numpy as np
import pytest

from onnx import TensorProto

from qexport.runtime import KERNEL_ISA_ENV, KERNEL_TRACE_ENV, kernel_isas, make_session, parse_kernel_trace
from qexport.spec import codecs
from qexport.spec import reference as R

from kernel_graphs import (assert_bitwise_equal, check_trace, expected_path, feeds, quantize_model, serialize,
                           single_node_model, weighted_model, weighted_op)

N_CONV_CASES = 600
N_LARGE_CONV_CASES = 24
N_WIDE_CONV_CASES = 40
N_FUSED_CASES = 160
N_DEPTHWISE_CASES = 30
N_GEMM_CASES = 200
N_ASQ_CASES = 120
N_LSQ_CASES = 80

# The reference itself warns on inf - inf inside the ASQ adapter (a NaN scale, as intended).
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.fixture(autouse=True, params=kernel_isas())
def kernel_isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture):
    """Every test of this module once per kernel path (read when the session creates its kernels);
    afterwards, every kernel that ran must have reported running that path (check_trace)."""
    monkeypatch.setenv(KERNEL_ISA_ENV, request.param)
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    yield request.param
    check_trace(parse_kernel_trace(capfd.readouterr().err), request.param)


def ran_paths(capfd: pytest.CaptureFixture) -> list:
    """The kernel-path lines written since the last call (the fixture above checks the rest)."""
    return parse_kernel_trace(capfd.readouterr().err)


# --------------------------------------------------------------------------- random data
def random_act(rng: np.random.Generator) -> tuple[int, int]:
    """(act_bits, act_zero_point): mostly the two zero points quantizers produce, sometimes any."""
    act_bits = int(rng.integers(2, 9))
    r = rng.random()
    if r < 0.45:
        zp = 0
    elif r < 0.9:
        zp = 2 ** (act_bits - 1)
    else:
        zp = int(rng.integers(0, 2**act_bits))
    return act_bits, zp


def random_format(rng: np.random.Generator) -> tuple[str, int]:
    fmt = R.WEIGHT_FORMATS[int(rng.integers(0, len(R.WEIGHT_FORMATS)))]
    allowed = R.WEIGHT_BITS[fmt]
    return fmt, int(rng.integers(allowed.start, allowed.stop))


def random_codes(rng: np.random.Generator, shape, act_bits: int) -> np.ndarray:
    """Activation codes: uniform, or piled up at the extremes (to stress the accumulator)."""
    top = 2**act_bits - 1
    r = rng.random()
    if r < 0.15:
        return rng.choice(np.array([0, top], dtype=np.uint8), size=shape)
    return rng.integers(0, top + 1, size=shape, dtype=np.uint8)


def random_weight_codes(rng: np.random.Generator, fmt: str, bits: int, count: int) -> np.ndarray:
    values, valid = R.weight_lut(fmt, bits)
    canonical = np.nonzero(valid)[0]
    if codecs.get(fmt).variable_length and rng.random() < 0.4:  # what the entropy coder meets in models:
        if rng.random() < 0.25:  # one level only (a table of one code, a stream without payload)
            return np.full(count, rng.choice(canonical), dtype=np.uint8)
        codes = rng.choice(canonical, size=count).astype(np.uint8)
        codes[rng.random(count) < 0.9] = canonical[np.argmin(np.abs(values[canonical]))]  # 90% pruned
        return codes
    if rng.random() < 0.15:  # extreme magnitudes only
        mags = np.abs(values[canonical])
        canonical = canonical[mags == mags.max()]
    return rng.choice(canonical, size=count).astype(np.uint8)


def random_channel_bits(rng: np.random.Generator, fmt: str, bits: int, o: int) -> int | list[int]:
    """One bit-width (most cases) or, in about a third, one per output channel (mixed precision);
    for a variable-length (entropy-coded) format always one, sometimes written as O equal entries."""
    if rng.random() < 0.65:
        return bits
    if codecs.get(fmt).variable_length:
        return [bits] * o
    allowed = R.WEIGHT_BITS[fmt]
    return [int(b) for b in rng.integers(allowed.start, allowed.stop, size=o)]


def random_weights(rng: np.random.Generator, fmt: str, bits: int, weight_shape) -> tuple[int | list[int], np.ndarray]:
    """(bits attribute, packed W): codes of each output channel at its bit-width (an entropy-coded
    format: the whole tensor's codes drawn at once), in the format's stream."""
    o, k = int(weight_shape[0]), int(np.prod(weight_shape[1:]))
    bits = random_channel_bits(rng, fmt, bits, o)
    per = [bits] * o if isinstance(bits, int) else bits
    if codecs.get(fmt).variable_length:
        codes = random_weight_codes(rng, fmt, per[0], o * k).reshape(o, k)
    else:
        codes = np.stack([random_weight_codes(rng, fmt, b, k) for b in per])
    w_int = np.stack([R.weight_lut(fmt, b)[0][row] for row, b in zip(codes, per)])
    return bits, R.pack_weights(w_int, fmt, bits)


def random_scales(rng: np.random.Generator, count: int) -> np.ndarray:
    return (rng.uniform(0.5, 2.0, size=count) * 10.0 ** rng.integers(-4, 1, size=count)).astype(np.float32)


def random_bias(rng: np.random.Generator, count: int) -> np.ndarray:
    return (rng.normal(size=count) * 10.0 ** rng.integers(-3, 2)).astype(np.float32)


def constant_set(rng: np.random.Generator) -> tuple[str, ...]:
    """Which of W, W_scale, B are initializers (the kernels decode constant weights once)."""
    r = rng.random()
    if r < 0.6:
        return ("W", "W_scale", "B")
    if r < 0.8:
        return ("W_scale", "B")
    if r < 0.9:
        return ("W",)
    return ()


def run_single(model, inputs, constant, threads=None):
    sess = make_session(serialize(model), threads=threads)
    return sess.run(None, feeds(inputs, constant))


# --------------------------------------------------------------------------- conv
def conv_case(seed: int, large: bool = False, wide: bool = False, depthwise: bool = False) -> dict:
    rng = np.random.default_rng((70000 if large else 90000 if wide else 110000 if depthwise else 1000) + seed)
    fmt, bits = random_format(rng)
    act_bits, zp = random_act(rng)
    r = rng.random()
    if large:  # several pixel blocks and output-channel blocks per task split
        group = int(rng.choice([1, 1, 2, 4]))
        cg, og = int(rng.integers(16, 65)) // group, int(rng.integers(16, 65)) // group
    elif wide:  # long rows: the SIMD re-layout's full and partial 16/64-cell blocks, strides 1 and 2
        group, cg, og = 1, int(rng.integers(1, 10)), int(rng.integers(1, 20))
    elif r < 0.55:
        group, cg, og = 1, int(rng.integers(1, 9)), int(rng.integers(1, 10))
    elif r < 0.75:
        group, cg, og = int(rng.integers(2, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    else:  # depthwise (channel multiplier 1 or 2)
        group, cg, og = int(rng.integers(1, 9)), 1, int(rng.integers(1, 3))
    o, c = group * og, group * cg
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    strides = [int(v) for v in rng.integers(1, 4, size=2)]
    dilations = [int(v) for v in rng.integers(1, 3, size=2)]
    pads = [int(v) for v in rng.integers(0, 4, size=4)]
    # Spatial sizes (often odd) such that the output is not empty.
    h_min = max(1, dilations[0] * (kh - 1) + 1 - pads[0] - pads[2])
    w_min = max(1, dilations[1] * (kw - 1) + 1 - pads[1] - pads[3])
    h = h_min + int(rng.integers(0, 9))
    w = w_min + int(rng.integers(0, 9))
    n = int(rng.integers(1, 5))
    if wide:
        strides = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        w = w_min + int(rng.integers(20, 150))
        n = int(rng.integers(1, 3))
    if depthwise:  # MobileNet-like: 8-96 channels, 3x3/5x5 "same" convs, strides 1/2, planes up to 60x60
        group, cg, og = int(rng.integers(8, 97)), 1, int(rng.choice([1, 1, 2]))
        o, c = group * og, group
        kh = kw = int(rng.choice([3, 3, 5, 1, 7]))
        if rng.random() < 0.3:
            kh = int(rng.integers(1, 6))
        s = int(rng.integers(1, 3))
        strides = [s, s] if rng.random() < 0.8 else [int(v) for v in rng.integers(1, 3, size=2)]
        dilations = [1, 1] if rng.random() < 0.8 else [int(v) for v in rng.integers(1, 3, size=2)]
        pads = [kh // 2, kw // 2, kh // 2, kw // 2] if rng.random() < 0.7 else [int(v) for v in rng.integers(0, 4, size=4)]
        h_min = max(1, dilations[0] * (kh - 1) + 1 - pads[0] - pads[2])
        w_min = max(1, dilations[1] * (kw - 1) + 1 - pads[1] - pads[3])
        h = max(h_min, int(rng.integers(4, 61)))
        w = max(w_min, h + int(rng.integers(-2, 3)))
        n = int(rng.integers(1, 3))
    weight_shape = [o, cg, kh, kw]
    bits, packed = random_weights(rng, fmt, bits, weight_shape)
    inputs = {
        "X": random_codes(rng, (n, c, h, w), act_bits),
        "X_scale": random_scales(rng, n if rng.random() < 0.7 else 1),
        "W": packed,
        "W_scale": random_scales(rng, o),
        "B": random_bias(rng, o),
    }
    attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=zp, weight_shape=weight_shape, strides=strides,
                 pads=pads, dilations=dilations, group=group, relu=int(rng.integers(0, 2)))
    return dict(fmt=fmt, inputs=inputs, attrs=attrs, constant=constant_set(rng))


def reference_conv(case: dict) -> np.ndarray:
    a, i = case["attrs"], case["inputs"]
    return R.qconv(i["X"], i["X_scale"], i["W"], i["W_scale"], i["B"], fmt=case["fmt"], bits=a["bits"],
                   act_bits=a["act_bits"], act_zero_point=a["act_zero_point"], weight_shape=a["weight_shape"],
                   strides=a["strides"], pads=a["pads"], dilations=a["dilations"], group=a["group"],
                   relu=bool(a["relu"]))


@pytest.mark.parametrize("seed", range(N_CONV_CASES))
def test_conv_matches_reference(seed: int) -> None:
    case = conv_case(seed)
    model = weighted_model("conv", case["fmt"], case["inputs"], case["attrs"], case["constant"])
    (y,) = run_single(model, case["inputs"], case["constant"])
    assert_bitwise_equal(y, reference_conv(case), f"conv case {seed} ({case['fmt']}, {case['attrs']})")


@pytest.mark.parametrize("seed", range(N_LARGE_CONV_CASES))
def test_large_conv_matches_reference(seed: int) -> None:
    case = conv_case(seed, large=True)
    model = weighted_model("conv", case["fmt"], case["inputs"], case["attrs"], case["constant"])
    (y,) = run_single(model, case["inputs"], case["constant"])
    assert_bitwise_equal(y, reference_conv(case), f"large conv case {seed} ({case['fmt']}, {case['attrs']})")


@pytest.mark.parametrize("seed", range(N_WIDE_CONV_CASES))
def test_wide_conv_matches_reference(seed: int) -> None:
    case = conv_case(seed, wide=True)
    model = weighted_model("conv", case["fmt"], case["inputs"], case["attrs"], case["constant"])
    (y,) = run_single(model, case["inputs"], case["constant"])
    assert_bitwise_equal(y, reference_conv(case), f"wide conv case {seed} ({case['fmt']}, {case['attrs']})")


# --------------------------------------------------------------------------- fused conv
def fused_case(seed: int, depthwise: bool = False) -> dict:
    """A conv case plus the fused parts: residual R, ReLU, output quantizer, optional outputs."""
    case = conv_case(seed, large=seed % 4 == 0 and not depthwise, depthwise=depthwise)
    rng = np.random.default_rng(40000 + seed)
    i, a = case["inputs"], case["attrs"]
    y = reference_conv(dict(case, attrs=dict(a, relu=0)))
    n, o = y.shape[:2]
    if rng.random() < 0.3:  # one sample: the SIMD paths split a single image over tasks
        y = y[:1]
        i["X"] = i["X"][:1]
        i["X_scale"] = i["X_scale"][:1]
    quantizer = str(rng.choice(["none", "lsq", "asq"]))
    residual = rng.random() < 0.5
    extra = {"R": (rng.normal(size=y.shape) * rng.uniform(0.1, 3)).astype(np.float32) if residual else None}
    if quantizer == "asq":
        hidden = int(rng.integers(1, 5))
        adapter_attrs, g = random_adapter_attrs(np.random.default_rng(60000 + seed), o, prefix="q_")
        a.update(adapter_attrs)
        extra.update(QW1=rng.normal(size=(hidden, g)).astype(np.float32), QB1=rng.normal(size=hidden).astype(np.float32),
                     QW2=rng.normal(size=(1, hidden)).astype(np.float32), QB2=rng.normal(size=1).astype(np.float32))
        if adapter_attrs.get("q_beta_map") == "relu" and rng.random() < 0.5:  # mostly z > 1e-8: beta = z
            extra["QB2"] = np.abs(extra["QB2"]) + np.float32(1)
    if quantizer != "none":
        a.update(quantizer=quantizer, q_bits=int(rng.integers(2, 9)), q_signed=int(rng.integers(0, 2)),
                 q_step=float(np.float32(10.0 ** rng.uniform(-2, 0))))
    # Which outputs the node uses: Y alone, Y + codes, or the codes alone.
    outputs = ("Y",) if quantizer == "none" else (("Y", "Q", "Q_scale"), ("Q", "Q_scale"))[int(rng.integers(0, 2))]
    constant = case["constant"] + tuple(k for k in ("QW1", "QB1", "QW2", "QB2") if k in extra and rng.random() < 0.7)
    return dict(case, extra=extra, outputs=outputs, constant=constant)


def fused_model(case: dict):
    """A QConvFused node (the version-1 <Fmt>ConvFused if case["v1"]); absent optional inputs and
    outputs are empty names."""
    from onnx import helper

    i, extra = case["inputs"], case["extra"]
    everything = {**i, **{k: v for k, v in extra.items() if v is not None}}
    op_type, attrs = weighted_op("conv_fused", case["fmt"], case["attrs"], case.get("v1", False))
    model = single_node_model(op_type, everything, [("Y", TensorProto.FLOAT)], attrs, case["constant"])
    names = ["X", "X_scale", "W", "W_scale", "B", "R", "QW1", "QB1", "QW2", "QB2"]
    ins = [k if k in everything else "" for k in names]
    while not ins[-1]:
        ins.pop()
    node = model.graph.node[0]
    del node.input[:]
    node.input.extend(ins)
    types = {"Y": TensorProto.FLOAT, "Q": TensorProto.UINT8, "Q_scale": TensorProto.FLOAT}
    del node.output[:]
    node.output.extend([k if k in case["outputs"] else "" for k in ("Y", "Q", "Q_scale")][: 1 if case["outputs"] == ("Y",) else 3])
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info(k, types[k], None) for k in case["outputs"]])
    return model, everything


def check_fused(case: dict, seed: int, threads: int | None = None) -> None:
    a, i, e = case["attrs"], case["inputs"], case["extra"]
    model, everything = fused_model(case)
    got = dict(zip(case["outputs"], run_single(model, everything, case["constant"], threads=threads)))
    y, q, scale = R.qconv_fused(
        i["X"], i["X_scale"], i["W"], i["W_scale"], i["B"], e["R"], e.get("QW1"), e.get("QB1"), e.get("QW2"),
        e.get("QB2"), fmt=case["fmt"], bits=a["bits"], act_bits=a["act_bits"], act_zero_point=a["act_zero_point"],
        weight_shape=a["weight_shape"], strides=a["strides"], pads=a["pads"], dilations=a["dilations"],
        group=a["group"], relu=bool(a["relu"]), quantizer=a.get("quantizer", "none"), q_bits=a.get("q_bits", 8),
        q_signed=bool(a.get("q_signed", 0)), q_step=a.get("q_step", 1.0), q_beta_map=a.get("q_beta_map", "sigmoid2"),
        q_groups=a.get("q_groups", 0))
    what = f"fused case {seed} ({case['fmt']}, {a}, R={e['R'] is not None}, outputs={case['outputs']})"
    if "Y" in got:
        assert_bitwise_equal(got["Y"], y, what + " Y")
    if "Q" in got:
        assert_bitwise_equal(got["Q_scale"], scale, what + " Q_scale")
        assert_bitwise_equal(got["Q"], q, what + " Q")


@pytest.mark.parametrize("seed", range(N_FUSED_CASES))
def test_fused_conv_matches_reference(seed: int) -> None:
    check_fused(fused_case(seed), seed)


@pytest.mark.parametrize("seed", range(N_DEPTHWISE_CASES))
def test_depthwise_conv_matches_reference(seed: int, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """Depthwise convs as MobileNets have them (one input channel per group), plain and fused, one
    and two threads (a single image's channels are split over tasks): the depthwise kernel of the
    path, bit for bit."""
    if seed % 3 == 0:
        case = conv_case(seed, depthwise=True)
        model = weighted_model("conv", case["fmt"], case["inputs"], case["attrs"], case["constant"])
        (y,) = run_single(model, case["inputs"], case["constant"], threads=1 + seed % 2)
        assert_bitwise_equal(y, reference_conv(case), f"depthwise conv case {seed} ({case['fmt']}, {case['attrs']})")
    else:
        check_fused(fused_case(seed, depthwise=True), seed, threads=1 + seed % 2)
    (line,) = ran_paths(capfd)
    assert line.reason == "depthwise", line


# (h, w, kernel, strides, pads, dilations): a stride phase with no input row (h 1, stride 3: the
# phase planes' row range is empty), rows of 1-33 codes read a vector at a time up to the end of
# the input (the last channel's last row ends the tensor), 1x1 planes, wide odd rows at stride 2.
DEPTHWISE_EDGES = [
    (1, 7, (3, 5), (3, 2), (1, 1, 3, 1), (2, 1)),
    (2, 2, (3, 3), (3, 3), (2, 2, 2, 2), (1, 1)),
    (1, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (4, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (5, 17, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (3, 33, (5, 5), (2, 1), (2, 2, 2, 2), (1, 2)),
    (9, 31, (3, 3), (1, 2), (0, 3, 1, 0), (1, 1)),
    (6, 15, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
]


@pytest.mark.parametrize("geometry", DEPTHWISE_EDGES, ids=lambda g: f"{g[0]}x{g[1]}k{g[2][0]}{g[2][1]}s{g[3][0]}{g[3][1]}")
def test_depthwise_edge_geometries(geometry, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """The depthwise kernel where its planes are built a vector at a time: stride phases without
    input rows, rows shorter and longer than a vector, reads up to the last code of the input."""
    h, w, (kh, kw), strides, pads, dilations = geometry
    rng = np.random.default_rng(h * 100 + w)
    c, mult = 5, 2
    bits, packed = random_weights(rng, "post", 4, [c * mult, 1, kh, kw])
    inputs = {"X": random_codes(rng, (2, c, h, w), 4), "X_scale": np.array([0.03], np.float32), "W": packed,
              "W_scale": random_scales(rng, c * mult), "B": random_bias(rng, c * mult)}
    attrs = dict(bits=bits, act_bits=4, act_zero_point=3, weight_shape=[c * mult, 1, kh, kw], strides=list(strides),
                 pads=list(pads), dilations=list(dilations), group=c, relu=1)
    case = dict(fmt="post", inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"))
    for n in (1, 2):  # a single image ends the tensor with its last channel
        one = dict(case, inputs=dict(inputs, X=np.ascontiguousarray(inputs["X"][:n])))
        model = weighted_model("conv", "post", one["inputs"], attrs, case["constant"])
        (y,) = run_single(model, one["inputs"], case["constant"])
        assert_bitwise_equal(y, reference_conv(one), f"depthwise {geometry}, batch {n}")
    assert {line.reason for line in ran_paths(capfd)} == {"depthwise"}


# (kernel, act bits, zero point, weight sign): the depthwise plane kernel's sums in int16 lanes
# (simd.h DepthwiseTask::int16: taps * max |code - zp| * max |w| <= 32767) with every code at its
# largest distance from the zero point and every weight at +-64 (post): 15 * 31 * 64 = 29760 (int16
# kernel), 9 * 63 * 64 = 36288 past the bound (float32 kernel: int16 would wrap), 9 * 8 * 64 with
# the farthest code below the zero point.
DEPTHWISE_INT16_BOUND = [((3, 5), 5, 0, 1), ((3, 5), 5, 31, -1), ((5, 3), 5, 0, -1), ((3, 3), 6, 0, 1),
                         ((3, 3), 6, 63, -1), ((3, 3), 4, 8, 1)]


@pytest.mark.parametrize("bound", DEPTHWISE_INT16_BOUND, ids=lambda b: f"k{b[0][0]}{b[0][1]}a{b[1]}z{b[2]}s{b[3]}")
def test_depthwise_int16_sums_at_their_bound(bound, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """The depthwise kernel with the largest sums its int16 variant may take (and the first ones it
    may not): the reference's bits at the bound, on both sides of it."""
    (kh, kw), act_bits, zp, sign = bound
    c, mult, h, w = 3, 2, 9, 21  # two output channels per input channel: the plane kernel
    top = (1 << act_bits) - 1
    code = top if top - zp >= zp else 0  # the farthest from the zero point
    wcodes = np.full((c * mult, 1, kh, kw), 7 if sign > 0 else 15, dtype=np.uint8)  # post 4-bit +-64
    values, valid = R.weight_lut("post", 4)
    assert values[wcodes[0, 0, 0, 0]] == 64 * sign and valid[wcodes[0, 0, 0, 0]]
    inputs = {"X": np.full((1, c, h, w), code, dtype=np.uint8), "X_scale": np.array([0.01], np.float32),
              "W": R.pack_codes(wcodes, 4), "W_scale": np.full(c * mult, 0.02, np.float32),
              "B": np.zeros(c * mult, np.float32)}
    attrs = dict(bits=4, act_bits=act_bits, act_zero_point=zp, weight_shape=[c * mult, 1, kh, kw], strides=[1, 1],
                 pads=[kh // 2, kw // 2, kh // 2, kw // 2], dilations=[1, 1], group=c, relu=0)
    case = dict(fmt="post", inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"))
    (y,) = run_single(weighted_model("conv", "post", inputs, attrs, case["constant"]), inputs, case["constant"])
    want = reference_conv(case)
    assert np.abs(want).max() == pytest.approx(kh * kw * abs(code - zp) * 64 * 0.01 * 0.02, rel=1e-6)
    assert_bitwise_equal(y, want, f"depthwise at the int16 bound {bound}")
    (line,) = ran_paths(capfd)
    assert line.reason == "depthwise", line


# (h, w, kernel, strides, pads, dilations, channels) for the channel-vectorized depthwise kernel
# (simd.h depthwise_tile: one output channel per input channel, output planes of at most 256
# positions): channel counts with and without a partial last vector of channels (done by the
# plane kernel), rows shorter than a vector (w 3: read up to the tensor's last code), planes that
# are not a multiple of 8 positions (7x7, 2x2), rows of fewer than the 4 positions summed together,
# strides, dilations, asymmetric padding, the largest plane (16x16) and a 7x7 kernel. With 16 or more
# channels and sums that fit int16 the avx2 path runs its int16 channel kernel (16 channels per
# vector, the rest by the float32 kernels): planes of 1, 4, 49 and 256 positions, 16 + 11 channels.
DEPTHWISE_TILES = [
    (4, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),
    (8, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 13),
    (7, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 24),
    (2, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 9),
    (3, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
    (9, 11, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 17),
    (6, 10, (3, 5), (1, 2), (0, 2, 2, 1), (2, 1), 27),
    (16, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
    (16, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 40),
    (3, 3, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 16),
    (2, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 32),
    (8, 8, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), 10),
    (5, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 19),
    (32, 32, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 17),  # MobileNetV2 CIFAR's stride-2 layer: a 33x33 tile
    (33, 33, (3, 3), (2, 2), (1, 1, 0, 0), (1, 1), 9),   # a 34x34 tile: kDepthwiseTileMax
]


@pytest.mark.parametrize("geometry", DEPTHWISE_TILES, ids=lambda g: f"{g[0]}x{g[1]}k{g[2][0]}{g[2][1]}s{g[3][0]}{g[3][1]}c{g[6]}")
def test_depthwise_small_planes_by_channels(geometry, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """The depthwise kernel that vectorizes over channels (small planes): with and without ReLU and
    a residual, batch 1 (the last channel ends the tensor) and 2, bit for bit."""
    h, w, (kh, kw), strides, pads, dilations, c = geometry
    for variant in range(3):
        rng = np.random.default_rng(h * 1000 + w * 10 + variant)
        bits, packed = random_weights(rng, "post", 4, [c, 1, kh, kw])
        n = 1 if variant == 0 else 2
        inputs = {"X": random_codes(rng, (n, c, h, w), 4), "X_scale": np.array([0.03], np.float32), "W": packed,
                  "W_scale": random_scales(rng, c), "B": random_bias(rng, c)}
        attrs = dict(bits=bits, act_bits=4, act_zero_point=int(rng.integers(0, 16)), weight_shape=[c, 1, kh, kw],
                     strides=list(strides), pads=list(pads), dilations=list(dilations), group=c, relu=int(variant != 1))
        oh = R.conv_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
        ow = R.conv_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
        residual = (rng.normal(size=(n, c, oh, ow)) * 2).astype(np.float32) if variant else None
        case = dict(fmt="post", inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"), extra={"R": residual},
                    outputs=("Y",))
        check_fused(case, variant, threads=1 + variant % 2)
    assert {line.reason for line in ran_paths(capfd)} == {"depthwise"}


# (in channels, out channels, h, w, k, stride, pad, dilation, act bits): rows long enough for the
# re-layout's vector loops and their tails at strides 1 and 2, stride 3 (portable rows), 1x1 convs at
# stride 2 and a 2x2 kernel at stride 3 (phases no tap reads are not built), 8-bit codes (stored with
# an offset where the path needs one), channel counts that are not a multiple of 4, a 7x7 stem.
DENSE_ROWS = [
    (8, 16, 9, 41, 3, 2, 1, 1, 4), (7, 8, 8, 40, 3, 2, 0, 1, 8), (16, 16, 6, 37, 3, 1, 1, 1, 3),
    (12, 24, 10, 34, 1, 2, 0, 1, 3), (5, 8, 11, 33, 1, 2, 0, 1, 8), (4, 8, 13, 50, 2, 3, 0, 1, 4),
    (3, 8, 20, 35, 7, 2, 3, 1, 8), (8, 8, 9, 36, 3, 2, 2, 2, 4),
]


@pytest.mark.parametrize("geometry", DENSE_ROWS, ids=lambda g: f"c{g[0]}o{g[1]}_{g[2]}x{g[3]}k{g[4]}s{g[5]}p{g[6]}d{g[7]}a{g[8]}")
def test_dense_conv_relayout_rows(geometry, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """The dense conv's re-layout (the path's interleaved rows, the phases it builds): every
    geometry above, with and without a residual, batch 1 and 2, bit for bit, on the path's own
    conv kernel."""
    c, o, h, w, k, s, p, d, act_bits = geometry
    for variant in range(2):
        rng = np.random.default_rng(c * 1000 + w * 10 + variant)
        bits, packed = random_weights(rng, "post", 4, [o, c, k, k])
        n = 1 + variant
        inputs = {"X": random_codes(rng, (n, c, h, w), act_bits), "X_scale": np.array([0.03], np.float32),
                  "W": packed, "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
        attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=int(rng.integers(0, 1 << act_bits)),
                     weight_shape=[o, c, k, k], strides=[s, s], pads=[p] * 4, dilations=[d, d], group=1,
                     relu=int(variant == 0))
        oh, ow = R.conv_output_size(h, k, s, p, p, d), R.conv_output_size(w, k, s, p, p, d)
        residual = (rng.normal(size=(n, o, oh, ow)) * 2).astype(np.float32) if variant else None
        case = dict(fmt="post", inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"), extra={"R": residual},
                    outputs=("Y",))
        check_fused(case, variant, threads=1 + variant)
    assert {line.path for line in ran_paths(capfd)} == {expected_path(kernel_isa, "QConvFused")}


def add_asq_adapter(rng: np.random.Generator, attrs: dict, extra: dict, groups: int, inputs: dict,
                    fmt: str = "post") -> tuple:
    """Makes a fused conv case's quantizer ASQ with a 4-unit adapter over `groups` channel groups
    (ReLU beta map) and returns the constant inputs of such a case.

    The adapter is made to act on this case's data (the conv output's group means, from the
    reference): every hidden unit positive, z about 1 and moved by every group mean, and q_step
    such that the codes spread over their range. A random adapter's z is often negative, so that
    beta = 1e-8 whatever the means and every code saturates: such a test cannot see wrong means
    (one could: a kernel that stored each task's means one channel early passed it)."""
    a = attrs
    y, _, _ = R.qconv_fused(
        inputs["X"], inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"], extra.get("R"), fmt=fmt,
        bits=a["bits"], act_bits=a["act_bits"], act_zero_point=a["act_zero_point"], weight_shape=a["weight_shape"],
        strides=a["strides"], pads=a["pads"], dilations=a["dilations"], group=a["group"], relu=bool(a["relu"]))
    means = R.adapter_inputs(R.spatial_mean(y[:1]), groups)[0]
    spread = float(np.abs(means).max()) + 1e-3
    w1 = (rng.normal(size=(4, groups)) / (spread * groups)).astype(np.float32)
    b1 = (1.0 + rng.random(4)).astype(np.float32)  # h = relu(w1 . a + b1) with |w1 . a| <= ~1
    w2 = (0.25 * (0.5 + rng.random((1, 4)))).astype(np.float32)
    b2 = np.array([0.125], np.float32)
    attrs.update(q_beta_map="relu", q_groups=groups)
    extra.update(QW1=w1, QB1=b1, QW2=w2, QB2=b2)
    def step(x: np.ndarray, q_step: float) -> np.float32:  # the definition's step of sample 0
        return R.asq_scale(x[:1], w1, b1, w2, b2, q_step, beta_map="relu", groups=groups)[0]

    z = float(step(y, 1.0))
    assert 0.1 < z < 10, z  # every hidden unit positive, beta = z
    q_max = (1 << a["q_bits"]) - 1
    attrs["q_step"] = float(np.float32(np.percentile(np.abs(y[:1]), 95) / q_max / z + 1e-6))
    # The step must depend on the means: every group mean 1e-3 of their range larger moves it.
    assert step(y, attrs["q_step"]) != step(y + np.float32(1e-3 * spread), attrs["q_step"])
    return ("W", "W_scale", "B", "QW1", "QB1", "QW2", "QB2")


# (in channels, out channels, h, w, k, stride, pad, dilation, act bits): single images with at least
# 2^15 output values (split over threads on every path) and at most 16 output channels (each task
# takes every channel block): split into bands of output rows, each re-laid out by its own task.
# Flat vectors (50x50) and row vectors (64x64), stride 2 with an odd width, a dilated 5x5 with 8-bit
# codes and 7 channels, a 1x1 (no halo rows), the 7x7 stride-2 stem.
BAND_ROWS = [
    (16, 16, 50, 50, 3, 1, 1, 1, 4), (8, 16, 64, 64, 3, 1, 1, 1, 3), (12, 16, 99, 97, 3, 2, 1, 1, 4),
    (7, 16, 60, 60, 5, 1, 4, 2, 8), (16, 16, 48, 48, 1, 1, 0, 1, 4), (3, 16, 100, 100, 7, 2, 3, 1, 8),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geometry", BAND_ROWS, ids=lambda g: f"c{g[0]}o{g[1]}_{g[2]}x{g[3]}k{g[4]}s{g[5]}p{g[6]}d{g[7]}a{g[8]}")
def test_single_image_bands_of_rows(geometry, threads: int, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """One image split into bands of output rows, each task re-laying out the rows its vectors read
    (qconv.cc, conv_bands): with 2 threads the bands land on both threads, with 1 every band after
    the first reuses the rows the previous one re-laid out. Y (with a residual) and the ASQ codes
    and step, bit for bit, on the path's own conv kernel."""
    c, o, h, w, k, s, p, d, act_bits = geometry
    rng = np.random.default_rng(c * 1000 + w * 10 + threads)
    bits, packed = random_weights(rng, "post", 4, [o, c, k, k])
    inputs = {"X": random_codes(rng, (1, c, h, w), act_bits), "X_scale": np.array([0.03], np.float32),
              "W": packed, "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
    attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=int(rng.integers(0, 1 << act_bits)),
                 weight_shape=[o, c, k, k], strides=[s, s], pads=[p] * 4, dilations=[d, d], group=1, relu=1,
                 quantizer="asq", q_bits=4, q_signed=0, q_step=0.05)
    oh, ow = R.conv_output_size(h, k, s, p, p, d), R.conv_output_size(w, k, s, p, p, d)
    assert o * oh * ow >= 1 << 15
    extra = {"R": (rng.normal(size=(1, o, oh, ow)) * 2).astype(np.float32)}
    constant = add_asq_adapter(rng, attrs, extra, 4, inputs)
    case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=("Y", "Q", "Q_scale"), constant=constant)
    check_fused(case, threads, threads=threads)
    assert {line.path for line in ran_paths(capfd)} == {expected_path(kernel_isa, "QConvFused")}


# (out channels, h, w, kernel, strides, pads, dilations, act bits): one-channel inputs with kernels of
# 2-4 columns, which the SIMD paths run in the folded layout (simd.h ConvGeometry::fold: a kernel
# row's columns in one cell): the Fashion-MNIST stem, stride 2 with odd sizes and 8-bit codes (an
# offset path), 4 columns with asymmetric padding, column stride 3 (rows cell by cell), dilation 2,
# padding wider than the kernel, a row narrower than the kernel's reach, and a large single image
# split into bands of rows (2 threads).
FOLDED_STEMS = [
    (32, 28, 28, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
    (16, 29, 31, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 8),
    (8, 20, 37, (4, 4), (1, 1), (2, 1, 1, 2), (1, 1), 4),
    (8, 17, 40, (3, 2), (1, 3), (0, 0, 0, 0), (1, 1), 3),
    (8, 15, 45, (3, 3), (2, 1), (2, 2, 2, 2), (2, 2), 4),
    (8, 6, 6, (2, 2), (1, 1), (3, 3, 3, 3), (1, 1), 4),
    (8, 5, 3, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 4),
    (16, 64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
]


@pytest.mark.parametrize("geometry", FOLDED_STEMS, ids=lambda g: f"o{g[0]}_{g[1]}x{g[2]}k{g[3][0]}{g[3][1]}s{g[4][0]}{g[4][1]}d{g[6][0]}a{g[7]}")
def test_one_channel_stems_folded(geometry, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """Convs of a one-channel input (a grayscale stem) on the path's conv kernel, batch 1 on 1 and 2
    threads and batch 2, with a residual and an ASQ quantizer (Y, codes and step) and without
    (Y alone, ReLU off): bit for bit."""
    o, h, w, (kh, kw), strides, pads, dilations, act_bits = geometry
    oh = R.conv_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = R.conv_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    for variant, (n, threads) in enumerate([(1, 1), (1, 2), (2, 2)]):
        rng = np.random.default_rng(o * 1000 + h * 10 + w + variant)
        bits, packed = random_weights(rng, "post", 4, [o, 1, kh, kw])
        inputs = {"X": random_codes(rng, (n, 1, h, w), act_bits), "X_scale": np.array([0.03], np.float32),
                  "W": packed, "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
        attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=int(rng.integers(0, 1 << act_bits)),
                     weight_shape=[o, 1, kh, kw], strides=list(strides), pads=list(pads), dilations=list(dilations),
                     group=1, relu=int(variant != 2))
        if variant == 2:
            case = dict(fmt="post", inputs=inputs, attrs=attrs, extra={"R": None}, outputs=("Y",),
                        constant=("W", "W_scale", "B"))
        else:
            attrs.update(quantizer="asq", q_bits=4, q_signed=0, q_step=0.05)
            extra = {"R": (rng.normal(size=(n, o, oh, ow)) * 2).astype(np.float32)}
            constant = add_asq_adapter(rng, attrs, extra, 4, inputs)
            case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=("Y", "Q", "Q_scale"),
                        constant=constant)
        check_fused(case, variant, threads=threads)
    assert {line.path for line in ran_paths(capfd)} == {expected_path(kernel_isa, "QConvFused")}


# (in channels, out channels, h, w, k, stride, quantizer): single images whose conv is split over
# threads by channel blocks, with a re-layout buffer large enough to be filled by parallel bands of
# rows (qconv.cc, relayout_image): no quantizer, ASQ with the means block by block (2^18 outputs),
# stride 2 (four phase planes).
BLOCK_SPLIT = [(64, 64, 64, 64, 3, 1, "none"), (64, 64, 64, 64, 3, 1, "asq"), (32, 128, 97, 97, 3, 2, "lsq")]


@pytest.mark.parametrize("geometry", BLOCK_SPLIT, ids=lambda g: f"c{g[0]}o{g[1]}_{g[2]}x{g[3]}k{g[4]}s{g[5]}_{g[6]}")
def test_single_image_relayout_in_parallel_bands(geometry, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """A single image's re-layout filled by bands of rows on 2 threads, then its conv split by
    channel blocks: Y and the codes bit for bit."""
    c, o, h, w, k, s, quantizer = geometry
    rng = np.random.default_rng(c + o + h + s)
    bits, packed = random_weights(rng, "post", 4, [o, c, k, k])
    inputs = {"X": random_codes(rng, (1, c, h, w), 4), "X_scale": np.array([0.03], np.float32), "W": packed,
              "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
    attrs = dict(bits=bits, act_bits=4, act_zero_point=int(rng.integers(0, 16)), weight_shape=[o, c, k, k],
                 strides=[s, s], pads=[1] * 4, dilations=[1, 1], group=1, relu=1)
    extra = {"R": None}
    outputs, constant = ("Y",), ("W", "W_scale", "B")
    if quantizer != "none":
        attrs.update(quantizer=quantizer, q_bits=4, q_signed=0, q_step=0.05)
        outputs = ("Y", "Q", "Q_scale")
    if quantizer == "asq":
        constant = add_asq_adapter(rng, attrs, extra, 16, inputs)
    case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=outputs, constant=constant)
    check_fused(case, 0, threads=2)
    assert {line.path for line in ran_paths(capfd)} == {expected_path(kernel_isa, "QConvFused")}


@pytest.mark.parametrize("quantizer,depthwise", [("asq", False), ("lsq", False), ("asq", True)])
def test_large_single_image_split_over_threads(quantizer: str, depthwise: bool) -> None:
    """One image whose output has over 2^16 values (a MobileNet-sized 1x1 or depthwise conv): with
    2 threads its conv epilogue and its quantizer (means by channels, codes by ranges) are split
    over tasks; every value as the reference."""
    rng = np.random.default_rng(21)
    c, o, hw = (96, 96, 40) if depthwise else (16, 96, 48)
    k = 3 if depthwise else 1
    bits, packed = random_weights(rng, "post", 4, [o, 1 if depthwise else c, k, k])
    inputs = {"X": random_codes(rng, (1, c, hw, hw), 4), "X_scale": np.array([0.03], np.float32), "W": packed,
              "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
    attrs = dict(bits=bits, act_bits=4, act_zero_point=0, weight_shape=[o, 1 if depthwise else c, k, k],
                 strides=[1, 1], pads=[k // 2] * 4, dilations=[1, 1], group=c if depthwise else 1, relu=1,
                 quantizer=quantizer, q_bits=4, q_signed=0, q_step=0.05)
    extra = {"R": None}
    constant = add_asq_adapter(rng, attrs, extra, 16, inputs) if quantizer == "asq" else ("W", "W_scale", "B")
    case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=("Y", "Q", "Q_scale"), constant=constant)
    check_fused(case, 0, threads=2)


# (channels, h, w, stride, act bits): single-image depthwise convs split into tasks of whole vectors
# of channels (qconv.cc compute_depthwise, even_split), each task taking its channels' ASQ means:
# MobileNetV2's 8x8 stage and its stride-2 32x32 -> 16x16 conv (the channel kernel), 200 channels
# on 16x16 (12 vectors of 16 and 8 channels left to the plane kernel), a 20x20 plane (the plane
# kernel; 100 channels in tasks of a few), 8-bit codes past the int16 bound.
DEPTHWISE_TASKS = [(384, 8, 8, 1, 4), (144, 32, 32, 2, 4), (200, 16, 16, 1, 3), (100, 20, 20, 1, 4), (64, 12, 12, 1, 8)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geometry", DEPTHWISE_TASKS, ids=lambda g: f"c{g[0]}_{g[1]}x{g[2]}s{g[3]}a{g[4]}")
def test_depthwise_single_image_tasks(geometry, threads: int, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """A single image's depthwise conv split over tasks of channels, with a residual and an ASQ
    quantizer whose step moves with every channel's mean: Y, codes and step bit for bit, on 1
    thread (one task) and 2."""
    c, h, w, s, act_bits = geometry
    rng = np.random.default_rng(c * 100 + h + s + threads)
    bits, packed = random_weights(rng, "post", 4, [c, 1, 3, 3])
    inputs = {"X": random_codes(rng, (1, c, h, w), act_bits), "X_scale": np.array([0.03], np.float32), "W": packed,
              "W_scale": random_scales(rng, c), "B": random_bias(rng, c)}
    attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=int(rng.integers(0, 1 << act_bits)),
                 weight_shape=[c, 1, 3, 3], strides=[s, s], pads=[1] * 4, dilations=[1, 1], group=c, relu=1,
                 quantizer="asq", q_bits=4, q_signed=0, q_step=0.05)
    oh, ow = R.conv_output_size(h, 3, s, 1, 1, 1), R.conv_output_size(w, 3, s, 1, 1, 1)
    extra = {"R": (rng.normal(size=(1, c, oh, ow)) * 2).astype(np.float32)}
    constant = add_asq_adapter(rng, attrs, extra, min(c, 64), inputs)
    case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=("Y", "Q", "Q_scale"), constant=constant)
    check_fused(case, threads, threads=threads)
    (line,) = ran_paths(capfd)
    assert line.reason == "depthwise", line


# (in channels, out channels, h, w): single-image 1x1 convs on small planes, split over tasks of
# channel blocks that take every vector of their blocks and then their ASQ means (qconv.cc,
# compute_fast, task_means; planes of at most 4 vector groups: on avx512vnni all four, on avx2
# the 4x4 one, the others split as before): MobileNetV2's 8x8 and 4x4 expansions, 200 channels (a
# last block of 8 on the 16-channel path), a 10x10 plane (100 positions: a partial last vector).
POINTWISE_TASKS = [(96, 384, 8, 8), (160, 960, 4, 4), (64, 200, 8, 8), (96, 384, 10, 10)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geometry", POINTWISE_TASKS, ids=lambda g: f"c{g[0]}o{g[1]}_{g[2]}x{g[3]}")
def test_pointwise_single_image_task_means(geometry, threads: int, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """A single image's 1x1 conv on a small plane with a residual and an ASQ quantizer whose step
    moves with every channel's mean, split over tasks of channel blocks that take their means:
    Y, codes and step bit for bit, on the path's conv kernel."""
    c, o, h, w = geometry
    rng = np.random.default_rng(c + o + h + threads)
    bits, packed = random_weights(rng, "post", 4, [o, c, 1, 1])
    inputs = {"X": random_codes(rng, (1, c, h, w), 4), "X_scale": np.array([0.03], np.float32), "W": packed,
              "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
    attrs = dict(bits=bits, act_bits=4, act_zero_point=int(rng.integers(0, 16)), weight_shape=[o, c, 1, 1],
                 strides=[1, 1], pads=[0] * 4, dilations=[1, 1], group=1, relu=1, quantizer="asq", q_bits=4,
                 q_signed=0, q_step=0.05)
    extra = {"R": (rng.normal(size=(1, o, h, w)) * 2).astype(np.float32)}
    constant = add_asq_adapter(rng, attrs, extra, min(o, 64), inputs)
    case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=("Y", "Q", "Q_scale"), constant=constant)
    check_fused(case, threads, threads=threads)
    assert {line.path for line in ran_paths(capfd)} == {expected_path(kernel_isa, "QConvFused")}


@pytest.mark.parametrize("n,threads,outputs,residual", [(1, 1, ("Q", "Q_scale"), False), (1, 2, ("Y", "Q", "Q_scale"), True),
                                                      (2, 2, ("Q", "Q_scale"), True), (2, 1, ("Y", "Q", "Q_scale"), False)])
def test_asq_means_block_by_block(n: int, threads: int, outputs: tuple, residual: bool) -> None:
    """An ASQ conv with an output too large for the cache (over 2^18 values a sample): its conv
    runs block by block with each block's plane means taken right after it (a last block of 4
    channels), one image split over threads or one task per sample; codes, step and Y as the
    reference."""
    rng = np.random.default_rng(22 + n * 10 + threads)
    c, o, hw = 8, 36, 88
    bits, packed = random_weights(rng, "post", 3, [o, c, 3, 3])
    inputs = {"X": random_codes(rng, (n, c, hw, hw), 3), "X_scale": np.array([0.03], np.float32), "W": packed,
              "W_scale": random_scales(rng, o), "B": random_bias(rng, o)}
    attrs = dict(bits=bits, act_bits=3, act_zero_point=0, weight_shape=[o, c, 3, 3], strides=[1, 1], pads=[1] * 4,
                 dilations=[1, 1], group=1, relu=1, quantizer="asq", q_bits=3, q_signed=0, q_step=0.05,
                 q_beta_map="relu", q_groups=12)
    extra = {"R": (rng.normal(size=(n, o, hw, hw)) * 2).astype(np.float32) if residual else None,
             "QW1": rng.normal(size=(4, 12)).astype(np.float32), "QB1": rng.normal(size=4).astype(np.float32),
             "QW2": rng.normal(size=(1, 4)).astype(np.float32), "QB2": np.array([1.5], np.float32)}
    case = dict(fmt="post", inputs=inputs, attrs=attrs, extra=extra, outputs=outputs,
                constant=("W", "W_scale", "B", "QW1", "QB1", "QW2", "QB2"))
    check_fused(case, 0, threads=threads)


def test_depthwise_beyond_float_exactness_runs_the_dense_conv(kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    """A depthwise conv whose sums could reach 2^24 (23x23 taps of 8-bit weights: 529 * 255 * 128)
    is not computed in float32: it runs the path's grouped conv, still exact."""
    rng = np.random.default_rng(3)
    c, k = 3, 23
    wcodes = rng.integers(0, 256, size=(c, 1, k, k), dtype=np.uint8)
    wcodes[:, :, :, :2] = 0  # the extreme weight -128 is present
    inputs = {"X": rng.integers(0, 256, size=(1, c, 30, 30), dtype=np.uint8),
              "X_scale": np.array([0.5], dtype=np.float32), "W": R.pack_codes(wcodes, 8),
              "W_scale": np.full(c, 0.25, dtype=np.float32), "B": np.zeros(c, dtype=np.float32)}
    attrs = dict(bits=8, act_bits=8, act_zero_point=0, weight_shape=[c, 1, k, k], strides=[1, 1],
                 pads=[11, 11, 11, 11], dilations=[1, 1], group=c, relu=0)
    case = dict(fmt="uniform", inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"))
    (y,) = run_single(weighted_model("conv", "uniform", inputs, attrs, case["constant"]), inputs, case["constant"])
    assert_bitwise_equal(y, reference_conv(case), "23x23 depthwise conv, 8-bit weights")
    (line,) = ran_paths(capfd)
    assert line.reason != "depthwise", line


def test_fused_conv_equals_the_unfused_ops() -> None:
    """conv -> Add -> Relu -> AsqQuantize as four nodes and as one QConvFused: identical bits."""
    case = fused_case(3)
    o = case["attrs"]["weight_shape"][0]
    g = max(1, (2 * o) // 3)  # groups that (mostly) do not divide O
    case["attrs"].update(quantizer="asq", q_bits=4, q_signed=0, q_step=0.05, relu=1, q_beta_map="relu", q_groups=g)
    rng = np.random.default_rng(5)
    case["extra"].update(QW1=rng.normal(size=(2, g)).astype(np.float32), QB1=rng.normal(size=2).astype(np.float32),
                         QW2=rng.normal(size=(1, 2)).astype(np.float32), QB2=np.array([1.5], np.float32))
    y_conv = reference_conv(dict(case, attrs=dict(case["attrs"], relu=0)))
    case["extra"]["R"] = rng.normal(size=y_conv.shape).astype(np.float32)
    case["outputs"] = ("Y", "Q", "Q_scale")
    model, everything = fused_model(case)
    y, q, scale = run_single(model, everything, case["constant"])
    conv_attrs = {k: v for k, v in case["attrs"].items() if not k.startswith("q") or k == "quantizer"}
    conv_attrs.pop("quantizer")
    (y0,) = run_single(weighted_model("conv", case["fmt"], case["inputs"], dict(conv_attrs, relu=0), case["constant"]),
                       case["inputs"], case["constant"])
    y1 = np.maximum(y0 + case["extra"]["R"], np.float32(0))
    e = case["extra"]
    adapter = {"X": y1, "W1": e["QW1"], "B1": e["QB1"], "W2": e["QW2"], "B2": e["QB2"]}
    q1, s1 = run_single(quantize_model("AsqQuantize", adapter, dict(bits=4, signed=0, step=0.05, beta_map="relu",
                                                                    groups=g)), adapter, ())
    assert_bitwise_equal(y, y1, "fused Y vs conv + Add + Relu")
    assert_bitwise_equal(scale, s1, "fused scale vs AsqQuantize")
    assert_bitwise_equal(q, q1, "fused codes vs AsqQuantize")


# --------------------------------------------------------------------------- gemm
def gemm_case(seed: int) -> dict:
    rng = np.random.default_rng(5000 + seed)
    fmt, bits = random_format(rng)
    act_bits, zp = random_act(rng)
    if rng.random() < 0.15:  # several row blocks and output-channel blocks
        n, k, o = int(rng.integers(17, 70)), int(rng.integers(200, 2000)), int(rng.integers(60, 300))
    else:
        n = int(rng.integers(1, 40)) if rng.random() < 0.3 else int(rng.integers(1, 5))
        k, o = int(rng.integers(1, 400)), int(rng.integers(1, 70))
    bits, packed = random_weights(rng, fmt, bits, [o, k])
    inputs = {
        "X": random_codes(rng, (n, k), act_bits),
        "X_scale": random_scales(rng, n if rng.random() < 0.7 else 1),
        "W": packed,
        "W_scale": random_scales(rng, o),
        "B": random_bias(rng, o),
    }
    attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=zp, weight_shape=[o, k], relu=int(rng.integers(0, 2)))
    return dict(fmt=fmt, inputs=inputs, attrs=attrs, constant=constant_set(rng))


def reference_gemm(case: dict) -> np.ndarray:
    a, i = case["attrs"], case["inputs"]
    return R.qgemm(i["X"], i["X_scale"], i["W"], i["W_scale"], i["B"], fmt=case["fmt"], bits=a["bits"],
                   act_bits=a["act_bits"], act_zero_point=a["act_zero_point"], weight_shape=a["weight_shape"],
                   relu=bool(a["relu"]))


@pytest.mark.parametrize("seed", range(N_GEMM_CASES))
def test_gemm_matches_reference(seed: int) -> None:
    case = gemm_case(seed)
    model = weighted_model("gemm", case["fmt"], case["inputs"], case["attrs"], case["constant"])
    (y,) = run_single(model, case["inputs"], case["constant"])
    assert_bitwise_equal(y, reference_gemm(case), f"gemm case {seed} ({case['fmt']}, {case['attrs']})")


# --------------------------------------------------------------------------- version-1 ops
@pytest.mark.parametrize("seed", range(12))
def test_version1_ops_equal_the_codec_ops(seed: int) -> None:
    """Files made before the codec ops (PostConv, PotGemm, UniformConvFused, ...: the format in the
    name, one INT bits) still load and compute exactly what QConv / QGemm / QConvFused compute."""
    for kind, case in (("conv", conv_case(seed)), ("gemm", gemm_case(seed)), ("conv_fused", fused_case(seed))):
        if case["fmt"] not in ("post", "pot", "uniform"):  # formats added since have no version-1 op
            continue
        if not isinstance(case["attrs"]["bits"], int):
            case["attrs"]["bits"] = R.WEIGHT_BITS[case["fmt"]].start  # version 1 has one bit-width ...
            o, k = case["attrs"]["weight_shape"][0], int(np.prod(case["attrs"]["weight_shape"][1:]))
            codes = np.stack([random_weight_codes(np.random.default_rng(seed), case["fmt"], case["attrs"]["bits"], k)
                              for _ in range(o)])
            case["inputs"]["W"] = R.pack_codes(codes, case["attrs"]["bits"])  # ... and its stream
        outs = []
        for v1 in (False, True):
            if kind == "conv_fused":
                model, everything = fused_model(dict(case, v1=v1))
            else:
                model, everything = weighted_model(kind, case["fmt"], case["inputs"], case["attrs"], case["constant"],
                                                   v1=v1), case["inputs"]
            outs.append(run_single(model, everything, case["constant"]))
        assert model.graph.node[0].op_type.startswith(case["fmt"].capitalize())
        for new, old in zip(*outs):
            assert_bitwise_equal(old, new, f"{kind} case {seed}: version-1 op vs codec op")


# --------------------------------------------------------------------------- accumulator width
# 8-bit uniform weights (Wmax = 128) x 8-bit signed codes (zp = 128, A = 128): the bound
# K * 16384 fits int32 up to K = 131071. All-extreme operands reach the bound exactly.
INT32_LIMIT_K = (2**31 - 1) // (128 * 128)
# 8-bit perparam weights are sign-magnitude (Wmax = 127): int32 up to K = 132104.
PERPARAM_INT32_LIMIT_K = (2**31 - 1) // (128 * 127)


def _extreme_gemm_case(k: int, o: int, n: int, rng: np.random.Generator, fmt: str = "uniform") -> dict:
    x = np.zeros((n, k), dtype=np.uint8)                      # a = -128 everywhere ...
    x[1:] = rng.integers(0, 256, size=(n - 1, k), dtype=np.uint8)  # ... except in later rows
    values, valid = R.weight_lut(fmt, 8)
    w = np.full((o, k), values[valid].min())                  # w = -Wmax ...
    w[1:] = rng.choice(values[valid], size=(o - 1, k))        # ... except in later rows
    inputs = {"X": x, "X_scale": np.array([1.0], dtype=np.float32), "W": R.pack_weights(w, fmt, 8),
              "W_scale": np.ones(o, dtype=np.float32), "B": np.zeros(o, dtype=np.float32)}
    attrs = dict(bits=8, act_bits=8, act_zero_point=128, weight_shape=[o, k], relu=0)
    return dict(fmt=fmt, inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"))


def portable_for_int64(selected: str, op: str) -> tuple[str, str | None]:
    """(path, reason) a kernel whose bound needs int64 accumulators reports: the portable code,
    and why, unless the portable code is what was selected (or the path has no kernel of its own
    for the op anyway: neon's gemm)."""
    if selected == "scalar":
        return "scalar", None
    return "scalar", "not_in_path" if expected_path(selected, op) == "scalar" else "int64_accumulator"


@pytest.mark.parametrize("act_bits", range(2, 9))
@pytest.mark.parametrize("c,k", [(20, 1), (4, 3)])
def test_conv_int16_sums_at_their_bound(act_bits: int, c: int, k: int, kernel_isa: str) -> None:
    """Every code at its largest with every weight at -128 (channel 0) or +127 (channel 1): the
    avx2 conv's int16 pair sums, and the 2 or 4 of them it adds before widening (ConvTask::sum16:
    4 up to 5-bit codes, 2 for 6-bit, 1 for 7-bit, the nibble split for 8-bit), at their largest
    magnitude; K = 20 and 36 (5 and 9 steps of 4: whole groups of steps and the rest)."""
    rng = np.random.default_rng(act_bits * 10 + c)
    o = 9  # a second block of output channels with one channel
    x = np.full((1, c, 5, 5), (1 << act_bits) - 1, dtype=np.uint8)
    w = rng.integers(-128, 128, size=(o, c, k, k))
    w[0], w[1] = -128, 127
    inputs = {"X": x, "X_scale": np.array([1.0], np.float32), "W": R.pack_weights(w, "uniform", 8),
              "W_scale": np.ones(o, np.float32), "B": np.zeros(o, np.float32)}
    attrs = dict(bits=8, act_bits=act_bits, act_zero_point=0, weight_shape=[o, c, k, k], strides=[1, 1],
                 pads=[k // 2] * 4, dilations=[1, 1], group=1, relu=0)
    case = dict(fmt="uniform", inputs=inputs, attrs=attrs, constant=("W", "W_scale", "B"))
    (y,) = run_single(weighted_model("conv", "uniform", inputs, attrs, case["constant"]), inputs, case["constant"])
    expected = reference_conv(case)
    assert expected[0, 0, 2, 2] == -128 * c * k * k * ((1 << act_bits) - 1)  # the extreme sums are there
    assert_bitwise_equal(y, expected, f"{act_bits}-bit codes, all at the maximum, K={c * k * k}")


@pytest.mark.parametrize("fmt,k", [("uniform", INT32_LIMIT_K), ("uniform", INT32_LIMIT_K + 1), ("uniform", 140_000),
                                   ("perparam", PERPARAM_INT32_LIMIT_K), ("perparam", PERPARAM_INT32_LIMIT_K + 1)])
def test_gemm_accumulator_width(fmt: str, k: int, kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    case = _extreme_gemm_case(k, o=3, n=2, rng=np.random.default_rng(k), fmt=fmt)
    wmax, limit = (128, INT32_LIMIT_K) if fmt == "uniform" else (127, PERPARAM_INT32_LIMIT_K)
    bound = R.accumulator_bound(fmt, 8, 8, 128, k)
    assert R.weight_max(fmt, 8) == wmax and (bound > 2**31 - 1) == (k > limit)
    model = weighted_model("gemm", fmt, case["inputs"], case["attrs"], case["constant"])
    (y,) = run_single(model, case["inputs"], case["constant"])
    expected, acc = R.qgemm(*(case["inputs"][n] for n in ("X", "X_scale", "W", "W_scale", "B")), fmt=fmt,
                            bits=8, act_bits=8, act_zero_point=128, weight_shape=[3, k], return_acc=True)
    assert int(acc[0, 0]) == k * 128 * wmax  # the extreme product actually reaches the bound
    assert_bitwise_equal(y, expected, f"{fmt} gemm K={k}")
    # up to the int32 bound the forced path's own gemm; beyond it the portable int64 code, said so
    (line,) = ran_paths(capfd)
    if k > limit:
        assert (line.path, line.reason) == portable_for_int64(kernel_isa, "QGemm"), line
    else:
        assert line.path == expected_path(kernel_isa, "QGemm") and line.reason != "int64_accumulator", line


@pytest.mark.parametrize("constant", [("W", "W_scale", "B"), ()])
def test_conv_int64_accumulator(constant: tuple[str, ...], kernel_isa: str, capfd: pytest.CaptureFixture) -> None:
    # K = 15000 * 3 * 3 = 135000 > 131071: int64 path; the centre pixel sums all K extreme products.
    rng = np.random.default_rng(7)
    c, o = 15000, 2
    x = np.zeros((1, c, 3, 3), dtype=np.uint8)
    wcodes = np.full((o, c, 3, 3), 128, dtype=np.uint8)
    wcodes[1] = rng.integers(0, 256, size=(c, 3, 3), dtype=np.uint8)
    inputs = {"X": x, "X_scale": np.array([0.5], dtype=np.float32), "W": R.pack_codes(wcodes, 8),
              "W_scale": np.array([1.0, 0.25], dtype=np.float32), "B": np.array([0.0, 1.0], dtype=np.float32)}
    attrs = dict(bits=8, act_bits=8, act_zero_point=128, weight_shape=[o, c, 3, 3], strides=[1, 1],
                 pads=[1, 1, 1, 1], dilations=[1, 1], group=1, relu=0)
    case = dict(fmt="uniform", inputs=inputs, attrs=attrs, constant=constant)
    model = weighted_model("conv", "uniform", inputs, attrs, constant)
    (y,) = run_single(model, inputs, constant)
    expected = reference_conv(case)
    _, acc = R.qconv(x, inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"], fmt="uniform", bits=8,
                     act_bits=8, act_zero_point=128, weight_shape=attrs["weight_shape"], pads=attrs["pads"],
                     return_acc=True)
    assert int(acc[0, 0, 1, 1]) == 9 * c * 128 * 128 > 2**31 - 1
    assert_bitwise_equal(y, expected, "conv int64 accumulator")
    (line,) = ran_paths(capfd)  # the portable int64 code, and the forced path says so
    assert (line.op, line.selected, line.path, line.reason) == ("QConv", kernel_isa,
                                                                *portable_for_int64(kernel_isa, "QConv")), line


# --------------------------------------------------------------------------- threads
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_thread_count_does_not_change_results(threads: int) -> None:
    case = conv_case(3)
    case["inputs"]["X"] = np.random.default_rng(0).integers(
        0, 2 ** case["attrs"]["act_bits"], size=(4,) + case["inputs"]["X"].shape[1:], dtype=np.uint8)
    case["inputs"]["X_scale"] = np.array([0.125], dtype=np.float32)
    model = weighted_model("conv", case["fmt"], case["inputs"], case["attrs"], case["constant"])
    (y,) = run_single(model, case["inputs"], case["constant"], threads=threads)
    assert_bitwise_equal(y, reference_conv(case), f"conv with {threads} threads")


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_input_size_changes_between_runs(threads: int, kernel_isa: str) -> None:
    """One session fed images of other sizes in turn (the SIMD path keeps its vector and step
    tables for the last size): every run as the reference, back to the first size included."""
    rng = np.random.default_rng(31 + threads)
    c, o, k = 8, 16, 3
    bits, packed = random_weights(rng, "post", 4, [o, c, k, k])
    attrs = dict(bits=bits, act_bits=4, act_zero_point=3, weight_shape=[o, c, k, k], strides=[1, 1], pads=[1] * 4,
                 dilations=[1, 1], group=1, relu=1)
    base = {"X_scale": np.array([0.03], np.float32), "W": packed, "W_scale": random_scales(rng, o),
            "B": random_bias(rng, o)}
    model = weighted_model("conv", "post", {"X": random_codes(rng, (1, c, 8, 8), 4), **base}, attrs,
                           free_shapes=True)
    sess = make_session(serialize(model), threads=threads)
    for n, h, w in ((1, 40, 56), (1, 33, 17), (2, 9, 70), (1, 40, 56)):
        case = dict(fmt="post", inputs={"X": random_codes(rng, (n, c, h, w), 4), **base}, attrs=attrs)
        (y,) = sess.run(None, feeds(case["inputs"], ("W", "W_scale", "B")))
        assert_bitwise_equal(y, reference_conv(case), f"{n}x{c}x{h}x{w} after other sizes")


# --------------------------------------------------------------------------- quantize ops
def random_activations(rng: np.random.Generator, shape, special: bool) -> np.ndarray:
    x = (rng.normal(size=shape) * 10.0 ** rng.uniform(-2, 1)).astype(np.float32)
    if rng.random() < 0.2:  # a shifted distribution, as after a ReLU
        x = np.abs(x)
    if special and x.size:
        flat = x.reshape(-1)
        idx = rng.choice(flat.size, size=min(flat.size, 3), replace=False)
        flat[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=np.float32), size=idx.size)
    return x


def random_adapter_attrs(rng: np.random.Generator, c: int, prefix: str = "") -> tuple[dict, int]:
    """AsqQuantize's optional attributes (prefix "q_" in a fused conv) and the adapter's input
    count G: beta_map absent (= sigmoid2), relu or sigmoid2; groups absent, 0 (both G = C) or 1..C."""
    attrs = {}
    beta_map = (None, "relu", "sigmoid2")[int(rng.integers(0, 3))]
    if beta_map is not None:
        attrs[prefix + "beta_map"] = beta_map
    r = rng.random()
    g = c if r < 0.4 else int(rng.integers(1, c + 1))
    if r >= 0.2:  # 0.2..0.4: groups=0
        attrs[prefix + "groups"] = 0 if r < 0.4 else g
    return attrs, g


def asq_case(seed: int) -> dict:
    rng = np.random.default_rng(9000 + seed)
    rank = [2, 3, 4, 4, 4, 5][int(rng.integers(0, 6))]
    n, c = int(rng.integers(1, 5)), int(rng.integers(1, 17))
    spatial = tuple(int(v) for v in rng.integers(1, 10, size=rank - 2))
    hidden = int(rng.integers(1, 21))  # the C++ adapter sums 8 hidden units at a time: blocks and tails
    adapter_attrs, g = random_adapter_attrs(np.random.default_rng(19000 + seed), c)
    x = random_activations(rng, (n, c) + spatial, special=rng.random() < 0.2)
    scale = 10.0 ** rng.uniform(-2, 1)
    zero_adapter = rng.random() < 0.1  # z = 0: beta = 1 (sigmoid2, as at its initialisation) or 1e-8 (relu)
    w1 = (rng.normal(size=(hidden, g)) * scale * (0 if zero_adapter else 1)).astype(np.float32)
    b1 = (rng.normal(size=(hidden,)) * (0 if zero_adapter else 1)).astype(np.float32)
    w2 = (rng.normal(size=(1, hidden)) * (0 if zero_adapter else 1)).astype(np.float32)
    b2 = (rng.normal(size=(1,)) * (0 if zero_adapter else 1)).astype(np.float32)
    if adapter_attrs.get("beta_map") == "relu" and not zero_adapter and rng.random() < 0.5:
        b2 = np.abs(b2) + np.float32(1)  # mostly z > 1e-8 (beta = z), as the authors' bias-1 initialisation
    step = float(np.float32(10.0 ** rng.uniform(-3, 0)))
    attrs = dict(bits=int(rng.integers(2, 9)), signed=int(rng.integers(0, 2)), step=step, **adapter_attrs)
    inputs = {"X": x, "W1": w1, "B1": b1, "W2": w2, "B2": b2}
    constant = ("W1", "B1", "W2", "B2") if rng.random() < 0.7 else ()
    return dict(inputs=inputs, attrs=attrs, constant=constant)


def reference_asq(inputs: dict, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """R.asq_quantize with the node's attributes; absent beta_map / groups take the op's defaults."""
    i, a = inputs, attrs
    return R.asq_quantize(i["X"], i["W1"], i["B1"], i["W2"], i["B2"], a["step"], a["bits"], bool(a["signed"]),
                          a.get("beta_map", "sigmoid2"), a.get("groups", 0))


@pytest.mark.parametrize("seed", range(N_ASQ_CASES))
def test_asq_quantize_matches_reference(seed: int) -> None:
    case = asq_case(seed)
    i, a = case["inputs"], case["attrs"]
    model = quantize_model("AsqQuantize", i, a, case["constant"])
    codes, scale = run_single(model, i, case["constant"])
    ref_codes, ref_scale = reference_asq(i, a)
    what = f"asq case {seed} (C={i['X'].shape[1]}, W1 {i['W1'].shape}, {a})"
    assert_bitwise_equal(scale, ref_scale, what + " scale")
    assert_bitwise_equal(codes, ref_codes, what + " codes")


def lsq_case(seed: int) -> dict:
    rng = np.random.default_rng(13000 + seed)
    rank = int(rng.integers(1, 5))
    shape = tuple(int(v) for v in rng.integers(1, 9, size=rank))
    x = random_activations(rng, shape, special=rng.random() < 0.3)
    if rng.random() < 0.3:  # exact ties k + 1/2 with a power-of-two step: half to even
        step = float(2.0 ** int(rng.integers(-6, 2)))
        x = ((rng.integers(-300, 300, size=shape) + 0.5) * step).astype(np.float32)
    else:
        step = float(np.float32(10.0 ** rng.uniform(-3, 0)))
    attrs = dict(bits=int(rng.integers(2, 9)), signed=int(rng.integers(0, 2)), step=step)
    return dict(inputs={"X": x}, attrs=attrs, constant=())


@pytest.mark.parametrize("seed", range(N_LSQ_CASES))
def test_lsq_quantize_matches_reference(seed: int) -> None:
    case = lsq_case(seed)
    a = case["attrs"]
    model = quantize_model("LsqQuantize", case["inputs"], a)
    codes, scale = run_single(model, case["inputs"], ())
    ref_codes, ref_scale = R.lsq_quantize(case["inputs"]["X"], a["step"], a["bits"], bool(a["signed"]))
    assert_bitwise_equal(scale, ref_scale, f"lsq case {seed} scale")
    assert_bitwise_equal(codes, ref_codes, f"lsq case {seed} codes")


@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_dense_grid_and_specials(bits: int, signed: int) -> None:
    """Every quarter step over the whole code range and beyond, signed zeros, NaN, +-inf, extremes."""
    step = 0.0625
    grid = np.arange(-1200, 1200, dtype=np.float32) * np.float32(step / 4)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(np.float32).max,
                         -np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -1e-45], dtype=np.float32)
    x = np.concatenate([grid, specials]).reshape(1, -1)
    model = quantize_model("LsqQuantize", {"X": x}, dict(bits=bits, signed=signed, step=step))
    codes, _ = run_single(model, {"X": x}, ())
    ref_codes, _ = R.lsq_quantize(x, step, bits, bool(signed))
    assert_bitwise_equal(codes, ref_codes, "lsq grid")


def reciprocal_disagreements(step: float, lo: int, hi: int) -> np.ndarray:
    """float32 x with codes in [lo, hi] for which rint(x * (1/step)) != rint(x / step) in float32:
    values next to a half-integer multiple of the step, where only the division rounds right."""
    s = np.float32(step)
    base = ((np.arange(lo, hi, dtype=np.float32) + np.float32(0.5)) * s).astype(np.float32)
    cands = [base]
    for direction in (np.float32(np.inf), np.float32(-np.inf)):
        x = base
        for _ in range(4):
            x = np.nextafter(x, direction)
            cands.append(x)
    x = np.concatenate(cands).astype(np.float32)
    return x[np.rint(x * (np.float32(1) / s)) != np.rint(x / s)]


@pytest.mark.parametrize("signed", [0, 1])
def test_lsq_quantize_where_reciprocal_rounds_wrong(signed: int) -> None:
    """Codes that a multiplication by 1/step would get wrong, in every lane position: alone in the
    first or the second vector of a pair of 16, in both, and in a tail (the SIMD quantizers test
    pairs of vectors once for the rare division)."""
    step = 0.3
    lo, hi = (-128, 127) if signed else (0, 255)
    bad = reciprocal_disagreements(step, lo, hi)
    assert bad.size >= 16
    rng = np.random.default_rng(11)
    plain = ((rng.integers(lo, hi, size=2000) + np.float32(0.25)) * np.float32(step)).astype(np.float32)
    pieces, b = [], 0
    for lane in range(32):
        for partner in (False, True):  # alone in its pair of vectors, or with one in the other vector
            block = plain[(64 * lane + 32 * partner) % 1900:][:32].copy()
            block[lane] = bad[b % bad.size]
            if partner:
                block[(lane + 16) % 32] = bad[(b + 1) % bad.size]
            b += 2
            pieces.append(block)
    tail = plain[:7].copy()
    tail[5] = bad[b % bad.size]
    x = np.concatenate(pieces + [tail]).reshape(1, -1)
    model = quantize_model("LsqQuantize", {"X": x}, dict(bits=8, signed=signed, step=step))
    codes, _ = run_single(model, {"X": x}, ())
    ref_codes, _ = R.lsq_quantize(x, step, 8, bool(signed))
    assert_bitwise_equal(codes, ref_codes, "lsq codes where x * (1/step) rounds wrong")


def test_asq_quantize_nan_inf_inputs() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan          # pooled mean NaN -> relu(h) = 0 for that channel's paths
    x[1, 1, 2, 2] = np.inf
    x[2, 2, 1, 1] = -np.inf
    x[3, :, :, :] = np.nan           # a whole sample of NaN quantizes to the zero point
    w1 = rng.normal(size=(4, 3)).astype(np.float32)
    b1, w2, b2 = (rng.normal(size=s).astype(np.float32) for s in ((4,), (1, 4), (1,)))
    inputs = {"X": x, "W1": w1, "B1": b1, "W2": w2, "B2": b2}
    for signed in (0, 1):
        attrs = dict(bits=4, signed=signed, step=0.1)
        codes, scale = run_single(quantize_model("AsqQuantize", inputs, attrs, ("W1", "B1", "W2", "B2")), inputs,
                                  ("W1", "B1", "W2", "B2"))
        ref_codes, ref_scale = R.asq_quantize(x, w1, b1, w2, b2, 0.1, 4, bool(signed))
        assert_bitwise_equal(scale, ref_scale, "asq nan/inf scale")
        assert_bitwise_equal(codes, ref_codes, "asq nan/inf codes")
        assert (codes[3] == R.act_zero_point(4, bool(signed))).all()


def _adapter_with_z(z: float, c: int) -> dict:
    """W1, B1, W2, B2 whose output is exactly the float64 ``z`` for any finite X: W1 = 0, so
    h = relu(B1), and z = ((0 + W2[0] B1[0]) + W2[1] B1[1]) + B2 with three float32 parts of z."""
    a = np.float32(z)
    b = np.float32(z - np.float64(a))
    r = np.float32(z - np.float64(a) - np.float64(b))
    assert (np.float64(a) + np.float64(b)) + np.float64(r) == z  # the kernel's order, exactly z
    return {"W1": np.zeros((2, c), np.float32), "B1": np.abs(np.array([a, b], np.float32)),
            "W2": np.array([[1.0 if a >= 0 else -1.0, 1.0 if b >= 0 else -1.0]], np.float32),
            "B2": np.array([r], np.float32)}


_BELOW_FLOOR = float(np.nextafter(1e-8, 0.0))
_ABOVE_FLOOR = float(np.nextafter(1e-8, 1.0))


@pytest.mark.parametrize("z", [1e-8, _BELOW_FLOOR, _ABOVE_FLOOR, 5e-9, 2.5e-8, 0.0, -3.0, 0.75])
def test_asq_relu_map_floor(z: float) -> None:
    """beta_map='relu': beta = z > 1e-8 ? z : 1e-8, z exactly at, just below and just above the floor
    (which give the same float32 scale), and clearly below (5e-9: the floor, not z) or above it."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 4, 2, 3)).astype(np.float32)
    inputs = {"X": x, **_adapter_with_z(z, 4)}
    step = 0.3
    attrs = dict(bits=4, signed=1, step=step, beta_map="relu")
    codes, scale = run_single(quantize_model("AsqQuantize", inputs, attrs), inputs, ())
    beta = z if z > 1e-8 else 1e-8
    want = np.full(3, np.float32(np.float64(np.float32(step)) * beta), np.float32)
    assert_bitwise_equal(scale, want, f"relu map scale at z={z!r}")
    ref_codes, ref_scale = reference_asq(inputs, attrs)
    assert_bitwise_equal(ref_scale, want, f"reference relu map scale at z={z!r}")
    assert_bitwise_equal(codes, ref_codes, f"relu map codes at z={z!r}")


@pytest.mark.parametrize("z_kind", ["nan", "+inf", "-inf"])
@pytest.mark.parametrize("beta_map", ["relu", "sigmoid2", None])
def test_asq_beta_map_of_nonfinite_z(z_kind: str, beta_map: str | None) -> None:
    """A +inf mean through W1 = 1 makes h = inf: z = inf - inf (NaN), inf or -inf. relu: NaN and
    -inf give the floor, scale = float32(step * 1e-8); sigmoid2 (also when absent): NaN, 2 step, 0."""
    x = np.ones((2, 1, 3), np.float32)
    x[0, 0, 1] = np.inf  # sample 0: non-finite z; sample 1: z finite
    w2 = {"nan": [[1.0, -1.0]], "+inf": [[1.0, 0.5]], "-inf": [[-1.0, -0.5]]}[z_kind]
    inputs = {"X": x, "W1": np.ones((2, 1), np.float32), "B1": np.zeros(2, np.float32),
              "W2": np.array(w2, np.float32), "B2": np.zeros(1, np.float32)}
    step = np.float32(0.2)
    attrs = dict(bits=3, signed=0, step=float(step), beta_map=beta_map)
    codes, scale = run_single(quantize_model("AsqQuantize", inputs, attrs), inputs, ())
    ref_codes, ref_scale = reference_asq(inputs, {k: v for k, v in attrs.items() if v is not None})
    assert_bitwise_equal(scale, ref_scale, f"{beta_map} map, z {z_kind}: scale")
    assert_bitwise_equal(codes, ref_codes, f"{beta_map} map, z {z_kind}: codes")
    floor = np.float32(np.float64(step) * 1e-8)
    expected = {("relu", "nan"): floor, ("relu", "-inf"): floor, ("relu", "+inf"): np.float32(np.inf)}.get(
        (beta_map, z_kind), {"nan": np.float32(np.nan), "+inf": np.float32(2 * step), "-inf": np.float32(0)}[z_kind])
    got = scale[0]
    assert (np.isnan(got) and np.isnan(expected)) or got == expected, f"{beta_map}, z {z_kind}: {got!r} != {expected!r}"


def test_asq_groups_not_dividing_channels() -> None:
    """C = 7, G = 3: groups [0, 2), [2, 4), [4, 7). Group 2's channel means 1e20, 1, -1e20 sum to 0
    in the defined order (channels in order from +0.0), to 1 in others: the scale pins the order."""
    assert R.adapter_group_bounds(7, 3).tolist() == [0, 2, 4, 7]
    rng = np.random.default_rng(21)
    x = rng.normal(size=(2, 7, 3, 3)).astype(np.float32)
    big = np.float32(1e20)
    x[0, 4], x[0, 5], x[0, 6] = big, 1.0, -big  # constant planes: p = 1e20, 1, -1e20 exactly
    inputs = {"X": x, "W1": np.array([[0, 0, 1], [0.5, -2, 0.25]], np.float32), "B1": np.array([0.5, 0.1], np.float32),
              "W2": np.array([[1, 0.125]], np.float32), "B2": np.zeros(1, np.float32)}
    for constant in ((), ("W1", "B1", "W2", "B2")):
        for beta_map in ("relu", "sigmoid2"):
            attrs = dict(bits=5, signed=1, step=0.25, beta_map=beta_map, groups=3)
            codes, scale = run_single(quantize_model("AsqQuantize", inputs, attrs, constant), inputs, constant)
            ref_codes, ref_scale = reference_asq(inputs, attrs)
            assert_bitwise_equal(scale, ref_scale, f"C=7, G=3, {beta_map}: scale")
            assert_bitwise_equal(codes, ref_codes, f"C=7, G=3, {beta_map}: codes")
    # Pinned directly: W1 = [[0, 0, 1]], so z = h[0] = group 2's mean + 0.5 = 0.5 exactly (1/3 + 0.5
    # in another order) and the relu map's scale is step * 0.5.
    only = {"X": x, "W1": np.array([[0, 0, 1]], np.float32), "B1": np.array([0.5], np.float32),
            "W2": np.ones((1, 1), np.float32), "B2": np.zeros(1, np.float32)}
    attrs = dict(bits=5, signed=1, step=0.25, beta_map="relu", groups=3)
    _, scale = run_single(quantize_model("AsqQuantize", only, attrs), only, ())
    assert scale[0] == np.float32(0.125), f"group mean of 1e20, 1, -1e20 in another order: scale {scale[0]!r}"


@pytest.mark.parametrize("constant", [(), ("W1", "B1", "W2", "B2")])
def test_asq_groups_out_of_range_and_wrong_w1_are_refused(constant: tuple[str, ...]) -> None:
    x = np.ones((2, 3, 4), np.float32)
    adapter = {"B1": np.zeros(2, np.float32), "W2": np.ones((1, 2), np.float32), "B2": np.zeros(1, np.float32)}
    attrs = dict(bits=4, signed=0, step=0.1)
    cases = [  # (groups, W1 columns, fragments of the message)
        (4, 4, ("attribute 'groups'=4", "exceeds the 3 channels")),
        (5, 3, ("attribute 'groups'=5",)),
        (2, 3, ("input 'W1' must be (H, G) = (H, 2)", "got (2, 3)")),
        (0, 2, ("input 'W1' must be (H, C) = (H, 3)", "got (2, 2)")),
        (None, 1, ("input 'W1' must be (H, C) = (H, 3)", "got (2, 1)")),
        (-1, 3, ("attribute 'groups'=-1 must be >= 0",)),
    ]
    for groups, cols, fragments in cases:
        inputs = {"X": x, "W1": np.ones((2, cols), np.float32), **adapter}
        model = quantize_model("AsqQuantize", inputs, dict(attrs, groups=groups), constant)
        with pytest.raises(Exception) as info:
            run_single(model, inputs, constant)
        for fragment in ("AsqQuantize: ",) + fragments:
            assert fragment in str(info.value), f"groups={groups}, W1 (2, {cols}): {fragment!r} not in {info.value}"
        with pytest.raises(ValueError):  # the reference refuses the same node
            reference_asq(inputs, dict(attrs, groups=groups) if groups is not None else attrs)


@pytest.mark.parametrize("beta_map", ["", "RELU", "sigmoid", "relu ", "none"])
def test_asq_unknown_beta_map_is_refused(beta_map: str) -> None:
    inputs = {"X": np.ones((1, 2, 3), np.float32), "W1": np.ones((1, 2), np.float32), "B1": np.zeros(1, np.float32),
              "W2": np.ones((1, 1), np.float32), "B2": np.zeros(1, np.float32)}
    attrs = dict(bits=4, signed=0, step=0.1, beta_map=beta_map)
    with pytest.raises(Exception, match=f"AsqQuantize: attribute 'beta_map'='{beta_map}' must be relu or sigmoid2"):
        run_single(quantize_model("AsqQuantize", inputs, attrs), inputs, ())
    with pytest.raises(ValueError, match="beta_map"):
        reference_asq(inputs, attrs)


def test_asq_no_channels_is_refused() -> None:
    """C = 0 has no group (1 <= G <= C): refused, as by the reference, even with W1 (H, 0)."""
    inputs = {"X": np.ones((2, 0, 3), np.float32), "W1": np.ones((1, 0), np.float32), "B1": np.ones(1, np.float32),
              "W2": np.ones((1, 1), np.float32), "B2": np.zeros(1, np.float32)}
    attrs = dict(bits=4, signed=0, step=0.1)
    with pytest.raises(Exception, match="AsqQuantize: input 'X' has no channels"):
        run_single(quantize_model("AsqQuantize", inputs, attrs), inputs, ())
    with pytest.raises(ValueError, match="no channels"):
        reference_asq(inputs, attrs)


def test_fused_asq_attributes_are_checked() -> None:
    """q_groups > O, a QW1 of the wrong width and an unknown q_beta_map are refused, naming q_*."""
    base = next(c for c in map(fused_case, range(40)) if c["attrs"].get("quantizer") == "asq")
    o = base["attrs"]["weight_shape"][0]
    hidden = base["extra"]["QB1"].shape[0]
    cases = [  # (attrs, QW1 columns, fragments)
        (dict(q_groups=o + 1), o + 1, ("attribute 'q_groups'=", "exceeds the")),
        (dict(q_groups=1), 2, ("input 'QW1' must be (H, G) = (H, 1)", "'q_groups'=1")),
        (dict(q_groups=0), o + 1, (f"input 'QW1' must be (H, C) = (H, {o})",)),
        (dict(q_groups=-2), o, ("attribute 'q_groups'=-2 must be >= 0",)),
        (dict(q_beta_map="sigmoid"), o, ("attribute 'q_beta_map'='sigmoid' must be relu or sigmoid2",)),
    ]
    for extra_attrs, cols, fragments in cases:
        for constant_adapter in (False, True):
            case = dict(base, attrs={k: v for k, v in base["attrs"].items() if k not in ("q_groups", "q_beta_map")})
            case["attrs"].update(extra_attrs)
            case["extra"] = dict(base["extra"], QW1=np.ones((hidden, cols), np.float32))
            adapter = ("QW1", "QB1", "QW2", "QB2")
            case["constant"] = tuple(k for k in base["constant"] if k not in adapter) + (adapter if constant_adapter else ())
            model, everything = fused_model(case)
            with pytest.raises(Exception) as info:
                run_single(model, everything, case["constant"])
            for fragment in ("QConvFused: ",) + fragments:
                assert fragment in str(info.value), f"{extra_attrs}, QW1 (H, {cols}): {fragment!r} not in {info.value}"


def test_post_levels_follow_the_shift_and_table_identity() -> None:
    """A one-hot QGemm (post) recovers every POST level, equal to Eq. 18's shift/table product."""
    for bits in (2, 3, 4):
        values, valid = R.weight_lut("post", bits)
        codes = np.nonzero(valid)[0].astype(np.uint8)
        o = codes.size
        wcodes = np.zeros((o, o), dtype=np.uint8)
        wcodes[np.arange(o), np.arange(o)] = codes
        x = np.eye(o, dtype=np.uint8) * 3  # a = 3 on the diagonal
        inputs = {"X": x, "X_scale": np.ones(1, np.float32), "W": R.pack_codes(wcodes, bits),
                  "W_scale": np.ones(o, np.float32), "B": np.zeros(o, np.float32)}
        attrs = dict(bits=bits, act_bits=2, act_zero_point=0, weight_shape=[o, o], relu=0)
        (y,) = run_single(weighted_model("gemm", "post", inputs, attrs), inputs, ("W", "W_scale", "B"))
        shift_table = R.post_product_shift_table(np.full(o, 3), codes, bits)
        np.testing.assert_array_equal(np.diag(y), shift_table.astype(np.float32))
        np.testing.assert_array_equal(np.diag(y), 3.0 * values[codes])


# --------------------------------------------------------------------------- edge shapes
def test_empty_batch_and_empty_input_planes() -> None:
    """N = 0 gives an empty output; H = 0 with enough padding convolves the zero point only."""
    ws = [2, 3, 3, 3]
    packed = R.pack_codes(np.full(int(np.prod(ws)), 5, np.uint8), 4)
    for x, pads in ((np.zeros((0, 3, 5, 5), np.uint8), [1, 1, 1, 1]), (np.zeros((2, 3, 0, 5), np.uint8), [2, 1, 2, 1])):
        inputs = {"X": x, "X_scale": np.ones(1, np.float32), "W": packed, "W_scale": np.ones(2, np.float32),
                  "B": np.array([0.5, -1.0], np.float32)}
        attrs = dict(bits=4, act_bits=4, act_zero_point=3, weight_shape=ws, pads=pads, relu=0)
        (y,) = run_single(weighted_model("conv", "post", inputs, attrs), inputs, ("W", "W_scale", "B"))
        expected = R.qconv(x, inputs["X_scale"], packed, inputs["W_scale"], inputs["B"], fmt="post", bits=4,
                           act_bits=4, act_zero_point=3, weight_shape=ws, pads=pads)
        assert_bitwise_equal(y, expected, f"conv on {x.shape}")
    inputs = {"X": np.zeros((0, 7), np.uint8), "X_scale": np.ones(1, np.float32),
              "W": R.pack_codes(np.ones(14, np.uint8), 3), "W_scale": np.ones(2, np.float32), "B": np.ones(2, np.float32)}
    attrs = dict(bits=3, act_bits=4, act_zero_point=0, weight_shape=[2, 7], relu=0)
    (y,) = run_single(weighted_model("gemm", "pot", inputs, attrs), inputs, ("W", "W_scale", "B"))
    assert y.shape == (0, 2)
    x = np.zeros((0, 4), np.float32)
    codes, scale = run_single(quantize_model("LsqQuantize", {"X": x}, dict(bits=4, signed=1, step=0.5)), {"X": x}, ())
    assert codes.shape == (0, 4) and codes.dtype == np.uint8 and scale.shape == (0,)


@pytest.mark.parametrize("seed", range(40))
def test_global_avg_pool_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(9000 + seed)
    rank = int(rng.integers(3, 6))
    shape = [int(rng.integers(1, 5)), int(rng.integers(1, 9))] + [int(rng.integers(1, 12)) for _ in range(rank - 2)]
    x = random_activations(rng, shape, special=seed % 5 == 0)
    model = single_node_model("GlobalAvgPool", {"X": x}, [("Y", TensorProto.FLOAT)], {})
    (y,) = run_single(model, {"X": x}, ())
    assert_bitwise_equal(y, R.global_avg_pool(x), f"GlobalAvgPool case {seed} shape {shape}")


def test_global_avg_pool_rejects_rank_2() -> None:
    x = np.ones((2, 3), np.float32)
    model = single_node_model("GlobalAvgPool", {"X": x}, [("Y", TensorProto.FLOAT)], {}, free_shapes=True)
    with pytest.raises(Exception, match="GlobalAvgPool: input 'X' must have rank >= 3"):
        run_single(model, {"X": x}, ())


@pytest.mark.parametrize("plane", [1, 3, 7, 8, 9, 15, 16, 17, 49, 64, 100])
def test_mean_lane_order_is_the_defined_one(plane: int) -> None:
    # Cancelling magnitudes make every summation order give different bits, so this pins the
    # 8-lane order (docs/ops.md) on every path, for 1..9 channels (the SIMD paths' groups of 4
    # and their remainders) and plane sizes around multiples of 8.
    rng = np.random.default_rng(plane)
    channels = 9
    x = np.zeros((1, channels, plane, 1), np.float32)
    for c in range(channels):
        x[0, c, :, 0] = rng.standard_normal(plane).astype(np.float32)
        big = rng.choice(plane, size=min(plane, 3), replace=False)
        x[0, c, big, 0] = (np.float32(1e20) * np.sign(rng.standard_normal(len(big)))).astype(np.float32)
    model = single_node_model("GlobalAvgPool", {"X": x}, [("Y", TensorProto.FLOAT)], {})
    (y,) = run_single(model, {"X": x}, ())
    assert_bitwise_equal(y, R.global_avg_pool(x), f"GlobalAvgPool lane order, plane {plane}")


@pytest.mark.parametrize("fmt", R.WEIGHT_FORMATS)
def test_every_codec_decodes_to_the_reference_levels(fmt: str) -> None:
    """A one-hot QGemm per codec and bit-width returns every canonical level: the C++ codec of each
    name (src/codecs/) has exactly the Python codec's table (qexport/spec/codecs/)."""
    for bits in R.WEIGHT_BITS[fmt]:
        values, valid = R.weight_lut(fmt, bits)
        codes = np.nonzero(valid)[0].astype(np.uint8)
        o = codes.size
        wcodes = np.zeros((o, o), dtype=np.uint8)
        wcodes[np.arange(o), np.arange(o)] = codes
        wcodes[~np.eye(o, dtype=bool)] = codes[np.argmin(np.abs(values[codes]))]  # the level 0 (or nearest)
        x = np.eye(o, dtype=np.uint8)
        inputs = {"X": x, "X_scale": np.ones(1, np.float32), "W": R.pack_weights(values[wcodes], fmt, bits),
                  "W_scale": np.ones(o, np.float32), "B": np.zeros(o, np.float32)}
        attrs = dict(bits=bits, act_bits=2, act_zero_point=0, weight_shape=[o, o], relu=0)
        (y,) = run_single(weighted_model("gemm", fmt, inputs, attrs), inputs, ("W", "W_scale", "B"))
        np.testing.assert_array_equal(np.diag(y), values[codes].astype(np.float32), f"{fmt} {bits}-bit")


@pytest.mark.parametrize("op", ["Sigmoid", "Silu"])
@pytest.mark.parametrize("seed", range(6))
def test_activations_match_reference(op: str, seed: int) -> None:
    """ai.qexport.Sigmoid / Silu: the defined float64 computation, bit for bit (ONNX Runtime's own
    Sigmoid differs from PyTorch's in the last bits of most values), special values included."""
    rng = np.random.default_rng(9500 + seed)
    shape = [int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.integers(1, 40))]
    x = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 2.2, size=shape)).astype(np.float32)
    if seed == 0:
        x.reshape(-1)[:15] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38, 100, -100,
                                       110, -110, 120, -120], np.float32)[: x.size]
    model = single_node_model(op, {"X": x}, [("Y", TensorProto.FLOAT)], {})
    (y,) = run_single(model, {"X": x}, ())
    want = R.sigmoid(x) if op == "Sigmoid" else R.silu(x)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"{op} case {seed}: " \
        f"{int((y.view(np.uint32) != want.view(np.uint32)).sum())} values differ"


def test_exp64_is_exp() -> None:
    t = np.linspace(-110, 110, 200001)
    assert np.max(np.abs(R.exp64(t) / np.exp(t) - 1)) < 1e-15
    assert R.exp64(np.array([1e9]))[0] == R.exp64(np.array([110.0]))[0] and np.isnan(R.exp64(np.array([np.nan]))[0])
