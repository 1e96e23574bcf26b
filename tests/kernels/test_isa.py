"""Kernel paths: what the library reports, QEXPORT_KERNEL_ISA, and QEXPORT_KERNEL_TRACE, which
makes every kernel say which path's code it ran (docs/ops.md, "Kernel paths")."""
from __future__ import annotations

import platform

import numpy as np
import pytest
from onnx import TensorProto

from qexport.export import OPS
from qexport.runtime import KERNEL_ISA_ENV, KERNEL_TRACE_ENV, KernelPath, kernel_isas, make_session, parse_kernel_trace
from qexport.spec import reference as R

from kernel_graphs import PATH_PARTS, expected_path, feeds, op_part, serialize, single_node_model, weighted_model

X86 = ["scalar", "avx2", "avx512vnni", "amx"]
ARM = ["scalar", "neon", "dotprod"]
WEIGHTS = ("W", "W_scale", "B")


def _model():
    rng = np.random.default_rng(0)
    inputs = {"X": rng.integers(0, 16, size=(2, 3, 9, 9), dtype=np.uint8), "X_scale": np.ones(2, np.float32),
              "W": R.pack_codes(rng.integers(0, 8, size=4 * 3 * 9).astype(np.uint8), 4),
              "W_scale": np.ones(4, np.float32), "B": np.zeros(4, np.float32)}
    attrs = dict(bits=4, act_bits=4, act_zero_point=0, weight_shape=[4, 3, 3, 3], pads=[1, 1, 1, 1])
    return weighted_model("conv", "post", inputs, attrs), inputs


def _op_case(op: str) -> tuple[dict, dict, list, tuple]:
    """A small valid node of any op of the table: inputs, attributes, outputs, constant inputs."""
    rng = np.random.default_rng(1)
    floats = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    quantized = [("Y", TensorProto.UINT8), ("scale", TensorProto.FLOAT)]
    if op in ("GlobalAvgPool", "Sigmoid", "Silu"):
        return {"X": floats}, {}, [("Y", TensorProto.FLOAT)], ()
    if op == "LsqQuantize":
        return {"X": floats}, dict(bits=4, signed=0, step=0.1), quantized, ()
    if op == "AsqQuantize":
        adapter = {"W1": rng.normal(size=(2, 4)).astype(np.float32), "B1": np.zeros(2, np.float32),
                   "W2": rng.normal(size=(1, 2)).astype(np.float32), "B2": np.ones(1, np.float32)}
        return {"X": floats, **adapter}, dict(bits=4, signed=0, step=0.1), quantized, tuple(adapter)
    kind = next(k for k in ("ConvFused", "Conv", "Gemm") if op.endswith(k))
    fmt = "post" if op.startswith("Q") else op[: -len(kind)].lower()  # QConv ... or version-1 PostConv ...
    values, valid = R.weight_lut(fmt, 3)
    wshape = [4, 4, 3, 3] if kind != "Gemm" else [5, 12]
    codes = rng.choice(np.nonzero(valid)[0], size=int(np.prod(wshape))).astype(np.uint8)
    x = rng.integers(0, 16, size=(2, 4, 5, 5) if kind != "Gemm" else (2, 12), dtype=np.uint8)
    inputs = {"X": x, "X_scale": np.ones(2, np.float32), "W": R.pack_codes(codes, 3),
              "W_scale": np.full(wshape[0], 0.5, np.float32), "B": np.zeros(wshape[0], np.float32)}
    attrs = dict(bits=[3], format=fmt) if op.startswith("Q") else dict(bits=3)
    attrs.update(act_bits=4, act_zero_point=0, weight_shape=wshape)
    outputs = [("Y", TensorProto.FLOAT)]
    if kind != "Gemm":
        attrs.update(pads=[1, 1, 1, 1])
    if kind == "ConvFused":
        attrs.update(quantizer="lsq", q_bits=4, q_signed=0, q_step=0.1)
        outputs += [("Q", TensorProto.UINT8), ("Q_scale", TensorProto.FLOAT)]
    return inputs, attrs, outputs, WEIGHTS


def test_kernel_isas_are_known_paths_slowest_first():
    isas = kernel_isas()
    known = X86 if platform.machine() in ("x86_64", "AMD64") else ARM
    assert isas[0] == "scalar" and len(set(isas)) == len(isas)
    assert [i for i in known if i in isas] == isas  # a subset, in the documented order
    assert set(X86 + ARM) == set(PATH_PARTS)


def test_op_parts_follow_the_op_table():
    """kernel_graphs.op_part (torch-free, by name) agrees with the kinds of qexport.export.OPS."""
    part_of_kind = {"conv": 0, "conv_fused": 0, "gemm": 1, "quantize": 2, "pool": 2, "activation": 3}
    assert {name: op_part(name) for name in OPS} == {name: part_of_kind[d.kind] for name, d in OPS.items()}


@pytest.mark.parametrize("value", ["", "auto"])
def test_unset_or_auto_is_the_fastest(value, monkeypatch, capfd):
    monkeypatch.setenv(KERNEL_ISA_ENV, value)
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    model, inputs = _model()
    make_session(serialize(model)).run(None, feeds(inputs, WEIGHTS))
    fastest = kernel_isas()[-1]
    assert parse_kernel_trace(capfd.readouterr().err) == [KernelPath("node", "QConv", fastest, fastest, None)]


def test_unknown_path_is_refused_at_session_creation(monkeypatch):
    monkeypatch.setenv(KERNEL_ISA_ENV, "sse9")
    model, _ = _model()
    with pytest.raises(Exception, match=r"QConv: QEXPORT_KERNEL_ISA='sse9' is not a kernel path .*available here: scalar"):
        make_session(serialize(model))


def test_path_this_cpu_lacks_is_refused(monkeypatch):
    missing = [i for i in X86 + ARM if i not in kernel_isas()]
    if not missing:
        pytest.skip("this CPU has every path")
    monkeypatch.setenv(KERNEL_ISA_ENV, missing[0])
    model, _ = _model()
    with pytest.raises(Exception, match=f"QEXPORT_KERNEL_ISA='{missing[0]}' is not available on this CPU/build"):
        make_session(serialize(model))


def test_every_path_computes_the_same_bits(monkeypatch):
    model, inputs = _model()
    outs = []
    for isa in kernel_isas():
        monkeypatch.setenv(KERNEL_ISA_ENV, isa)
        (y,) = make_session(serialize(model)).run(None, feeds(inputs, WEIGHTS))
        outs.append(y)
    for y in outs[1:]:
        assert np.array_equal(y.view(np.uint32), outs[0].view(np.uint32))


@pytest.mark.parametrize("isa", kernel_isas())
@pytest.mark.parametrize("op", sorted(OPS))
def test_forced_path_runs_and_says_so(op, isa, monkeypatch, capfd):
    """Every op of the table, every path this CPU has: the kernel reports the forced path, or, for
    a part the path has no kernel of its own for, the path whose code it ran with reason=not_in_path;
    one line per kernel however often it runs."""
    monkeypatch.setenv(KERNEL_ISA_ENV, isa)
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    inputs, attrs, outputs, constant = _op_case(op)
    model = single_node_model(op, inputs, outputs, attrs, constant, node_name=f"{op.lower()}_1")
    sess = make_session(serialize(model), threads=2)
    for _ in range(2):
        sess.run(None, feeds(inputs, constant))
    path = expected_path(isa, op)
    assert parse_kernel_trace(capfd.readouterr().err) == [
        KernelPath(f"{op.lower()}_1", op, path, isa, None if path == isa else "not_in_path")]


def test_trace_is_off_unless_asked(monkeypatch, capfd):
    model, inputs = _model()
    for value in (None, "0", ""):
        if value is None:
            monkeypatch.delenv(KERNEL_TRACE_ENV, raising=False)
        else:
            monkeypatch.setenv(KERNEL_TRACE_ENV, value)
        make_session(serialize(model)).run(None, feeds(inputs, WEIGHTS))
    assert "qexport:" not in capfd.readouterr().err


def test_trace_of_an_unnamed_node_and_its_parsing(monkeypatch, capfd):
    monkeypatch.setenv(KERNEL_ISA_ENV, "scalar")
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    x = np.ones((1, 2, 3), np.float32)
    model = single_node_model("GlobalAvgPool", {"X": x}, [("Y", TensorProto.FLOAT)], {}, node_name="")
    make_session(serialize(model)).run(None, {"X": x})
    err = capfd.readouterr().err
    assert "qexport: - GlobalAvgPool path=scalar selected=scalar\n" in err
    assert parse_kernel_trace(err) == [KernelPath(None, "GlobalAvgPool", "scalar", "scalar", None)]
    assert parse_kernel_trace("noise\nqexport: n PostGemm path=scalar selected=neon reason=not_in_path\n") == [
        KernelPath("n", "PostGemm", "scalar", "neon", "not_in_path")]
