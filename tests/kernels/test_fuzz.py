"""Differential fuzzing of the kernels with malformed nodes.

Each case builds a valid single-node model of a random ai.qexport op, then applies 0..3 random
mutations: attributes changed to odd values, deleted or of the wrong type; inputs of another
rank, channel count or length; packed weights truncated, extended, bit-flipped (which makes
non-canonical codes) or with a byte overwritten (mostly near the start: the code table and coder
state of an entropy-coded stream); the weight format swapped for another (a fixed-width stream
read as an entropy-coded one and back); activation codes above act_bits; weights as graph inputs
instead of initializers. The only acceptable outcomes are:

* ONNX Runtime refuses cleanly (an exception, at session creation or in run()), or
* it succeeds and its outputs are bit-identical to the numpy reference, which must accept the
  same inputs.

An unmutated case must succeed, and so must a case whose mutations left the node unchanged: a
mutation that changes nothing (codes_range on float inputs, w_* without W, deleting an optional
attribute that holds its default, a value replaced by itself) is drawn again, and mutations that
undo each other do not count (node_key, apply_mutations). A crash (or a sanitizer report, under
the ASan/UBSan build of .ci/sanitize.sh) kills the process and fails the run. QEXPORT_FUZZ_CASES sets the number of
cases (default 300; the sanitizer job runs more), QEXPORT_FUZZ_SEED the first seed. Case i runs
on kernel path i mod len(kernel_isas()) (QEXPORT_KERNEL_ISA), so every path is fuzzed, and a case
that runs must report that path (QEXPORT_KERNEL_TRACE, kernel_graphs.check_trace).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto

from qexport.runtime import KERNEL_ISA_ENV, KERNEL_TRACE_ENV, kernel_isas, make_session, parse_kernel_trace
from qexport.spec import codecs
from qexport.spec import reference as R

from kernel_graphs import assert_bitwise_equal, check_trace, feeds, serialize, single_node_model

N_CASES = int(os.environ.get("QEXPORT_FUZZ_CASES", "300"))
KERNEL_ISAS = kernel_isas()
FIRST_SEED = int(os.environ.get("QEXPORT_FUZZ_SEED", "0"))
OPTIONAL = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "relu": 0}
# AsqQuantize's optional attributes (q_-prefixed in a fused conv) and their values when absent.
ADAPTER_DEFAULTS = {"beta_map": "sigmoid2", "groups": 0}
FORMAT_OF = {fmt.capitalize(): fmt for fmt in ("post", "pot", "uniform")}  # version-1 op name prefix -> format


class Malformed(Exception):
    """The reference cannot even be asked (an attribute of the wrong type, a missing one)."""


# --------------------------------------------------------------------------- valid cases
def weighted_case(rng, kind: str) -> tuple[str, dict, dict]:
    """QConv / QGemm (format attribute, bits for every channel or per channel -- one width for an
    entropy-coded format, whose weights are often pruned or one level); one case in five the
    version-1 <Fmt>Conv / <Fmt>Gemm (one INT bits)."""
    fmt = R.WEIGHT_FORMATS[int(rng.integers(0, len(R.WEIGHT_FORMATS)))]
    v1 = fmt in FORMAT_OF.values() and rng.random() < 0.2
    bits = int(rng.integers(R.WEIGHT_BITS[fmt].start, R.WEIGHT_BITS[fmt].stop))
    act_bits = int(rng.integers(2, 9))
    zp = int(rng.choice([0, 2 ** (act_bits - 1)]))
    n = int(rng.integers(1, 4))
    if kind == "Conv":
        group = int(rng.choice([1, 2]))
        cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        wshape = [group * og, cg, kh, kw]
        dil = [int(v) for v in rng.integers(1, 3, 2)]
        h = max(int(rng.integers(3, 8)), (kh - 1) * dil[0] + 1)  # never an empty output
        w = max(int(rng.integers(3, 8)), (kw - 1) * dil[1] + 1)
        x = rng.integers(0, 2**act_bits, size=(n, group * cg, h, w), dtype=np.uint8)
        attrs = dict(strides=[int(v) for v in rng.integers(1, 3, 2)], pads=[int(v) for v in rng.integers(0, 3, 4)],
                     dilations=dil, group=group)
    else:
        wshape = [int(rng.integers(1, 6)), int(rng.integers(1, 20))]
        x = rng.integers(0, 2**act_bits, size=(n, wshape[1]), dtype=np.uint8)
        attrs = {}
    o = wshape[0]
    per_channel = [bits] * o
    variable = codecs.get(fmt).variable_length
    if not v1 and not variable and rng.random() < 0.4:
        per_channel = [int(b) for b in rng.integers(R.WEIGHT_BITS[fmt].start, R.WEIGHT_BITS[fmt].stop, size=o)]
    levels = {b: R.weight_lut(fmt, b)[0][R.weight_lut(fmt, b)[1]] for b in set(per_channel)}  # the canonical ones
    w_int = np.stack([rng.choice(levels[b], size=int(np.prod(wshape[1:]))) for b in per_channel])
    if variable and rng.random() < 0.5:  # pruned, or a single level
        w_int[rng.random(w_int.shape) < (0.9 if rng.random() < 0.7 else 1.0)] = 0
    inputs = {"X": x, "X_scale": rng.uniform(0.01, 1, size=n).astype(np.float32), "W": R.pack_weights(w_int, fmt, per_channel),
              "W_scale": rng.uniform(0.001, 0.1, size=o).astype(np.float32),
              "B": rng.normal(size=o).astype(np.float32)}
    attrs.update(act_bits=act_bits, act_zero_point=zp, weight_shape=wshape, relu=int(rng.integers(0, 2)))
    if v1:
        return fmt.capitalize() + kind, inputs, dict(attrs, bits=bits)
    bits_attr = per_channel if len(set(per_channel)) > 1 or rng.random() < 0.3 else per_channel[:1]
    return "Q" + kind, inputs, dict(attrs, format=fmt, bits=bits_attr)


def weight_format(op: str, attrs: dict, need=None) -> tuple[str, object]:
    """(format, bits) of a weighted node: attributes of QConv/QGemm/QConvFused, the name of a
    version-1 op."""
    get = need or (lambda name, kind: attrs[name])
    if op.startswith("Q"):
        fmt = get("format", str)
        if fmt not in R.WEIGHT_FORMATS:
            raise ValueError(f"format={fmt!r}")
        return fmt, get("bits", list)
    return FORMAT_OF[op[: -len(next(k for k in ("ConvFused", "Conv", "Gemm") if op.endswith(k)))]], get("bits", int)


def quantize_case(rng, op: str) -> tuple[str, dict, dict]:
    rank = int(rng.integers(2, 5))
    shape = [int(rng.integers(1, 4)), int(rng.integers(1, 6))] + [int(rng.integers(1, 5)) for _ in range(rank - 2)]
    x = (rng.normal(size=shape) * 3).astype(np.float32)
    attrs = dict(bits=int(rng.integers(2, 9)), signed=int(rng.integers(0, 2)), step=float(rng.uniform(0.05, 1.0)))
    if op == "LsqQuantize":
        return op, {"X": x}, attrs
    hidden = int(rng.integers(1, 4))
    adapter_attrs, g = adapter_case(rng, shape[1])
    attrs.update(adapter_attrs)
    return op, {"X": x, "W1": rng.normal(size=(hidden, g)).astype(np.float32), "B1": rng.normal(size=hidden).astype(np.float32),
                "W2": rng.normal(size=(1, hidden)).astype(np.float32), "B2": rng.normal(size=1).astype(np.float32)}, attrs


def adapter_case(rng, c: int, prefix: str = "") -> tuple[dict, int]:
    """beta_map absent, relu or sigmoid2; groups absent, 0 or 1..C (G = C when absent or 0)."""
    attrs = {}
    beta_map = [None, "relu", "sigmoid2"][int(rng.integers(0, 3))]
    if beta_map is not None:
        attrs[prefix + "beta_map"] = beta_map
    r = int(rng.integers(0, 3))
    g = int(rng.integers(1, c + 1)) if r == 2 else c
    if r:
        attrs[prefix + "groups"] = g if r == 2 else 0
    return attrs, g


def pool_case(rng) -> tuple[str, dict, dict]:
    shape = [int(rng.integers(1, 4)), int(rng.integers(1, 6))] + [int(rng.integers(1, 6)) for _ in range(int(rng.integers(1, 3)))]
    return "GlobalAvgPool", {"X": rng.normal(size=shape).astype(np.float32)}, {}


def fused_case(rng) -> tuple[str, dict, dict]:
    """QConvFused (or a version-1 <Fmt>ConvFused): a valid conv case plus a residual (R) and/or an output quantizer."""
    op, inputs, attrs = weighted_case(rng, "Conv")
    a = dict(attrs)
    fmt, bits = weight_format(op, a)
    y = R.qconv(inputs["X"], inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"],
                fmt=fmt, bits=bits, act_bits=a["act_bits"],
                act_zero_point=a["act_zero_point"], weight_shape=a["weight_shape"], strides=a["strides"],
                pads=a["pads"], dilations=a["dilations"], group=a["group"])
    quantizer = str(rng.choice(["none", "lsq", "asq"]))
    if quantizer == "none" or quantizer == "asq" or rng.random() < 0.5:
        inputs["R"] = rng.normal(size=y.shape).astype(np.float32)  # asq's adapter inputs follow R
    if quantizer != "none":
        attrs.update(quantizer=quantizer, q_bits=int(rng.integers(2, 9)), q_signed=int(rng.integers(0, 2)),
                     q_step=float(rng.uniform(0.05, 1.0)))
    if quantizer == "asq":
        hidden = int(rng.integers(1, 4))
        adapter_attrs, g = adapter_case(rng, y.shape[1], prefix="q_")
        attrs.update(adapter_attrs)
        inputs.update(QW1=rng.normal(size=(hidden, g)).astype(np.float32), QB1=rng.normal(size=hidden).astype(np.float32),
                      QW2=rng.normal(size=(1, hidden)).astype(np.float32), QB2=rng.normal(size=1).astype(np.float32))
    return op + "Fused", inputs, attrs


def make_case(rng) -> tuple[str, dict, dict]:
    r = int(rng.integers(0, 7))
    if r < 2:
        return weighted_case(rng, "Conv")
    if r < 4:
        return weighted_case(rng, "Gemm")
    if r == 4:
        return quantize_case(rng, str(rng.choice(["AsqQuantize", "LsqQuantize"])))
    if r == 5:
        return fused_case(rng)
    return pool_case(rng)


# --------------------------------------------------------------------------- mutations
ODD_INTS = [-(2**40), -7, -1, 0, 1, 2, 3, 5, 8, 9, 16, 255, 256, 1000]
# Strings for the string attributes (quantizer, beta_map): valid ones of either, near misses.
ODD_STRINGS = ["", "none", "lsq", "asq", "relu", "sigmoid2", "RELU", "sigmoid", "relu ", "relu\x00", "sigmoid2x"]
# ... and for the weight format: every format (another one reads W as its own stream) and near misses.
ODD_FORMATS = list(R.WEIGHT_FORMATS) + ["", "perparam ", "PERPARAM", "perparam_pot"]


def mutate(rng, op: str, inputs: dict, attrs: dict) -> str:
    kinds = ["attr_value", "attr_delete", "attr_type", "x_shape", "vector_len", "codes_range",
             "w_truncate", "w_extend", "w_flip", "w_byte", "w_scale_special"]
    kind = str(rng.choice(kinds))
    keys = list(attrs)
    if kind.startswith("attr") and not keys:
        kind = "x_shape"
    if kind == "attr_value":
        key = str(rng.choice(keys))
        value = attrs[key]
        if isinstance(value, list):
            value = list(value)
            if value and rng.random() < 0.7:
                value[int(rng.integers(0, len(value)))] = int(rng.choice(ODD_INTS))
            else:
                value = value[:-1] if value and rng.random() < 0.5 else value + [1]
        elif isinstance(value, float):
            value = float(rng.choice([0.0, -1.0, np.inf, np.nan, 1e-30, 1e30]))
        elif isinstance(value, str):
            value = str(rng.choice(ODD_FORMATS if key == "format" else ODD_STRINGS))
        else:
            value = int(rng.choice(ODD_INTS))
        attrs[key] = value
    elif kind == "attr_delete":
        del attrs[str(rng.choice(keys))]
    elif kind == "attr_type":
        key = str(rng.choice(keys))
        attrs[key] = [1, 2] if not isinstance(attrs[key], list) else 1.5
    elif kind == "x_shape":
        x = inputs["X"]
        shape = list(x.shape)
        if rng.random() < 0.4 and len(shape) > 1:
            shape = shape[:-1]
        elif rng.random() < 0.5:
            shape = shape + [int(rng.integers(1, 3))]
        else:
            i = int(rng.integers(0, len(shape)))
            shape[i] = int(rng.integers(0, 4))
        inputs["X"] = (rng.integers(0, 4, size=shape).astype(x.dtype) if x.dtype == np.uint8
                       else rng.normal(size=shape).astype(x.dtype))
    elif kind == "vector_len":
        name = str(rng.choice([k for k in inputs if k != "X"] or ["X"]))
        v = inputs[name]
        new_len = max(0, v.shape[0] + int(rng.choice([-1, 1, 2]))) if v.ndim else 2
        inputs[name] = np.resize(v, (new_len,) + v.shape[1:]) if v.ndim else np.resize(v, (2,))
    elif kind == "codes_range" and inputs["X"].dtype == np.uint8 and inputs["X"].size:
        inputs["X"] = inputs["X"].copy()
        inputs["X"].reshape(-1)[int(rng.integers(0, inputs["X"].size))] = int(rng.integers(1, 256))
    elif kind.startswith("w_") and "W" in inputs and inputs["W"].dtype == np.uint8:
        w = inputs["W"].copy()
        if kind == "w_truncate":
            w = w[: int(rng.integers(0, max(1, len(w))))]
        elif kind == "w_extend":
            w = np.concatenate([w, rng.integers(0, 256, size=int(rng.integers(1, 4))).astype(np.uint8)])
        elif kind == "w_flip" and len(w):
            w[int(rng.integers(0, len(w)))] ^= np.uint8(1 << int(rng.integers(0, 8)))
        elif kind == "w_byte" and len(w):  # mostly in the first 12 bytes (an entropy-coded stream's head)
            w[int(rng.integers(0, min(len(w), 12) if rng.random() < 0.7 else len(w)))] = int(rng.integers(0, 256))
        elif kind == "w_scale_special":
            s = inputs["W_scale"].copy()
            if len(s):
                s[0] = rng.choice(np.array([np.nan, np.inf, 0.0, -1.0], np.float32))
            inputs["W_scale"] = s
        inputs["W"] = w
    return kind


def node_key(op: str, inputs: dict, attrs: dict) -> tuple:
    """What a node computes, to tell a mutation that changed it from one that did not: its inputs
    (dtype, shape, bytes), its attributes as ONNX stores them (floats as float32), optional ones
    that hold their default treated as absent, and groups = C (O in a fused conv) as groups = 0
    (both mean one group per channel)."""
    defaults = dict(OPTIONAL, quantizer="none", **ADAPTER_DEFAULTS,
                    **{"q_" + k: v for k, v in ADAPTER_DEFAULTS.items()})
    x = np.asarray(inputs.get("X"))
    channels = {"groups": x.shape[1] if x.ndim >= 2 else None}
    ws = attrs.get("weight_shape")
    if isinstance(ws, list) and ws and isinstance(ws[0], int):
        channels["q_groups"] = ws[0]

    def canon(name, v):
        if isinstance(v, float):
            return ("float", np.float32(v).tobytes())
        if isinstance(v, list):
            return ("list",) + tuple(canon(name, e) for e in v)
        if isinstance(v, int) and not isinstance(v, bool) and name in channels and v == channels[name]:
            return ("int", 0)
        return (type(v).__name__, v)

    key_attrs = tuple(sorted((k, canon(k, v)) for k, v in attrs.items()
                             if k not in defaults or canon(k, v) != canon(k, defaults[k])))
    key_inputs = tuple(sorted((k, np.asarray(v).dtype.str, np.asarray(v).shape, np.asarray(v).tobytes())
                              for k, v in inputs.items()))
    return op, key_attrs, key_inputs


def apply_mutations(rng, op: str, inputs: dict, attrs: dict, count: int, attempts: int = 20) -> list[str]:
    """``count`` mutations, each drawn again (up to ``attempts`` times) while it leaves the node as
    it was; returns the kinds of those that changed it, or [] if together they changed nothing."""
    original = node_key(op, inputs, attrs)
    kinds = []
    for _ in range(count):
        for _attempt in range(attempts):
            before = node_key(op, inputs, attrs)
            kind = mutate(rng, op, inputs, attrs)
            if node_key(op, inputs, attrs) != before:
                kinds.append(kind)
                break
    if node_key(op, inputs, attrs) == original:  # e.g. a value changed and changed back
        return []
    return kinds


# --------------------------------------------------------------------------- the reference
def reference(op: str, inputs: dict, attrs: dict) -> list[np.ndarray]:
    def need(name, kind):
        if name not in attrs:
            if name in OPTIONAL:
                return OPTIONAL[name]
            raise Malformed(f"missing {name}")
        v = attrs[name]
        if kind is int and (isinstance(v, (list, float)) or isinstance(v, bool)):
            raise Malformed(f"{name} is not an int")
        if kind is list and not isinstance(v, list):
            raise Malformed(f"{name} is not a list")
        if kind is float and isinstance(v, list):
            raise Malformed(f"{name} is not a float")
        if (kind is str) != isinstance(v, str):
            raise Malformed(f"{name} has the wrong type")
        return v

    def adapter(prefix):
        """beta_map and groups (absent: the defaults), refused as read_quant_params refuses them
        (wrong type, an unknown map, groups < 0; groups > C is the reference's own check)."""
        beta_map = need(prefix + "beta_map", str) if prefix + "beta_map" in attrs else ADAPTER_DEFAULTS["beta_map"]
        groups = need(prefix + "groups", int) if prefix + "groups" in attrs else ADAPTER_DEFAULTS["groups"]
        if beta_map not in R.BETA_MAPS:
            raise ValueError(f"{prefix}beta_map={beta_map!r}")
        if groups < 0:
            raise ValueError(f"{prefix}groups={groups}")
        return beta_map, groups

    if op == "GlobalAvgPool":
        if inputs["X"].ndim < 3:
            raise ValueError("rank")
        return [R.global_avg_pool(inputs["X"])]
    if op.endswith("Quantize"):
        bits, signed, step = need("bits", int), need("signed", int), need("step", float)
        if signed not in (0, 1):
            raise ValueError("signed")
        beta_map, groups = adapter("")  # the kernels read them for both ops
        if op == "LsqQuantize":
            return list(R.lsq_quantize(inputs["X"], step, bits, bool(signed)))
        return list(R.asq_quantize(inputs["X"], inputs["W1"], inputs["B1"], inputs["W2"], inputs["B2"], step, bits,
                                   bool(signed), beta_map, groups))
    fused = op.endswith("ConvFused")
    kind = "ConvFused" if fused else "Conv" if op.endswith("Conv") else "Gemm"
    fmt, bits = weight_format(op, attrs, need)
    common = dict(fmt=fmt, bits=bits, act_bits=need("act_bits", int), act_zero_point=need("act_zero_point", int),
                  weight_shape=need("weight_shape", list), relu=need("relu", int))
    if common["relu"] not in (0, 1):
        raise ValueError("relu")
    args = (inputs["X"], inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"])
    if kind == "Gemm":
        return [R.qgemm(*args, **common)]
    conv = dict(strides=need("strides", list), pads=need("pads", list), dilations=need("dilations", list),
                group=need("group", int))
    if not fused:
        return [R.qconv(*args, **common, **conv)]
    quantizer = need("quantizer", str) if "quantizer" in attrs else "none"
    q = {}
    if quantizer != "none":
        q = dict(q_bits=need("q_bits", int), q_signed=need("q_signed", int), q_step=need("q_step", float))
        if q["q_signed"] not in (0, 1):
            raise ValueError("q_signed")
        q["q_beta_map"], q["q_groups"] = adapter("q_")  # read (and checked) for lsq too, used by asq
    extra = [inputs.get(n) for n in ("R", "QW1", "QB1", "QW2", "QB2")]
    y, codes, scale = R.qconv_fused(*args, *extra, **common, **conv, quantizer=quantizer, **q)
    return [y] if codes is None else [y, codes, scale]


def _outputs(op: str, attrs: dict):
    if op.endswith("Quantize"):
        return [("Y", TensorProto.UINT8), ("scale", TensorProto.FLOAT)]
    if op.endswith("ConvFused") and attrs.get("quantizer", "none") != "none":
        return [("Y", TensorProto.FLOAT), ("Q", TensorProto.UINT8), ("Q_scale", TensorProto.FLOAT)]
    return [("Y", TensorProto.FLOAT)]


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + N_CASES))
def test_fuzz_case(seed: int, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    isa = KERNEL_ISAS[seed % len(KERNEL_ISAS)]
    monkeypatch.setenv(KERNEL_ISA_ENV, isa)
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    rng = np.random.default_rng(seed)
    op, inputs, attrs = make_case(rng)
    outputs = _outputs(op, attrs)
    mutations = apply_mutations(rng, op, inputs, attrs, int(rng.choice([0, 1, 1, 2, 3])))
    constant = tuple(n for n in ("W", "W_scale", "B", "W1", "B1", "W2", "B2", "QW1", "QB1", "QW2", "QB2")
                     if n in inputs and rng.random() < 0.7)
    model = single_node_model(op, inputs, outputs, attrs, constant, free_shapes=True)
    try:
        outs = make_session(serialize(model)).run(None, feeds(inputs, constant))
    except Exception as exc:  # noqa: BLE001 - a clean refusal is an acceptable outcome
        assert mutations, f"case {seed} ({op}, {attrs}) is valid (or its mutations changed nothing) but was refused: {exc}"
        return
    try:
        expected = reference(op, {k: np.asarray(v) for k, v in inputs.items()}, attrs)
    except (ValueError, Malformed) as exc:
        pytest.fail(f"case {seed} ({op}, mutations {mutations}): ONNX Runtime accepted what the reference refuses: {exc}")
    for i, (got, want) in enumerate(zip(outs, expected)):
        assert_bitwise_equal(got, want, f"case {seed} ({op}, mutations {mutations}) output {i}")
    lines = parse_kernel_trace(capfd.readouterr().err)
    assert len(lines) <= 1 and [line.op for line in lines] == [op][: len(lines)], lines  # none: an empty batch
    check_trace(lines, isa)


def test_node_key_sees_through_no_op_mutations() -> None:
    """node_key (which decides whether a mutation counts) equates what the kernels cannot tell apart."""
    x = np.zeros((2, 3, 4), np.float32)
    adapter = {"X": x, "W1": np.ones((1, 3), np.float32), "B1": np.zeros(1, np.float32),
               "W2": np.ones((1, 1), np.float32), "B2": np.zeros(1, np.float32)}
    base = dict(bits=4, signed=0, step=0.1)
    key = node_key("AsqQuantize", adapter, base)
    for same in (dict(base, groups=0), dict(base, groups=3), dict(base, beta_map="sigmoid2"),
                 dict(base, step=float(np.float32(0.1)))):
        assert node_key("AsqQuantize", adapter, same) == key, same
    for other in (dict(base, groups=1), dict(base, beta_map="relu"), dict(base, beta_map=""), dict(base, groups=[3]),
                  dict(base, bits=5)):
        assert node_key("AsqQuantize", adapter, other) != key, other
    assert node_key("AsqQuantize", dict(adapter, X=x + 1), base) != key
    op, inputs, attrs = weighted_case(np.random.default_rng(0), "Conv")
    assert node_key(op, inputs, dict(attrs, strides=[1, 1], relu=0)) == node_key(
        op, inputs, {k: v for k, v in attrs.items() if k not in ("strides", "relu")})
    # A mutation that cannot apply (codes_range on float32 X, w_* without W) changes nothing and is redrawn.
    rng = np.random.default_rng(1)
    before = node_key("AsqQuantize", adapter, base)
    for _ in range(50):
        inputs, attrs = dict(adapter), dict(base)
        kinds = apply_mutations(rng, "AsqQuantize", inputs, attrs, 1)
        assert kinds and node_key("AsqQuantize", inputs, attrs) != before
        assert kinds[0] not in ("codes_range", "w_truncate", "w_extend", "w_flip", "w_byte", "w_scale_special")
