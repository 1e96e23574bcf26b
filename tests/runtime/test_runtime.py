"""qexport.runtime: finding and loading libqexport_ops, and running models with it."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qexport.runtime as runtime
from qexport.export import OPS
from qexport.spec import reference as R
from shared import REPO


def test_library_path_exists_and_loads() -> None:
    path = runtime.library_path()
    assert path.is_file() and path.name == runtime.library_name()
    lib = ctypes.CDLL(str(path))
    assert hasattr(lib, "RegisterCustomOps") and hasattr(lib, "qexport_op_names")


def test_library_registers_exactly_what_the_exporter_emits() -> None:
    """The library's op list (QEXPORT_OP_LIST) is the op table's (qexport.export.OPS), once each."""
    names = runtime.op_names()
    assert len(names) == len(set(names)) and sorted(names) == sorted(OPS)


def test_op_names_match_docs() -> None:
    """Every op named in the table of docs/ops.md is registered, and no other."""
    docs = (REPO / "docs" / "ops.md").read_text(encoding="utf-8")
    table = docs.split("## Common rules")[0]
    documented = set(re.findall(r"`([A-Z][A-Za-z]*(?:Quantize|Conv|Gemm|Pool|ConvFused)|Sigmoid|Silu)`", table))
    assert documented == set(OPS)


def test_library_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = runtime.library_path()
    monkeypatch.setenv(runtime.LIBRARY_ENV, str(real))
    assert runtime.library_path() == real.resolve()
    monkeypatch.setenv(runtime.LIBRARY_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(FileNotFoundError, match="QEXPORT_OPS_LIBRARY"):
        runtime.library_path()


def test_library_missing_says_how_to_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(runtime.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(runtime, "_from_distribution", lambda name: None)
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "qexport" / "runtime" / "__init__.py"))
    with pytest.raises(FileNotFoundError, match=r"pip install \."):
        runtime.library_path()


def _small_model() -> onnx.ModelProto:
    """LsqQuantize (4-bit unsigned) -> PostGemm (3-bit weights, relu): float (N, 6) -> float (N, 4)."""
    rng = np.random.default_rng(0)
    values, valid = R.weight_lut("post", 3)
    codes = rng.choice(np.nonzero(valid)[0], size=4 * 6).astype(np.uint8)
    inits = [numpy_helper.from_array(R.pack_codes(codes, 3), "W"),
             numpy_helper.from_array(np.full(4, 0.5, np.float32), "W_scale"),
             numpy_helper.from_array(np.array([0.0, -1.0, 1.0, 2.0], np.float32), "B")]
    nodes = [
        helper.make_node("LsqQuantize", ["x"], ["codes", "scale"], domain="ai.qexport", name="fc/quantize",
                         bits=4, signed=0, step=0.25),
        helper.make_node("PostGemm", ["codes", "scale", "W", "W_scale", "B"], ["y"], domain="ai.qexport",
                         name="fc/op", bits=3, act_bits=4, act_zero_point=0, weight_shape=[4, 6], relu=1),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("ai.qexport", 1)])
    model.ir_version = 10
    return model


def _expected(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    codes, scale = R.lsq_quantize(x, 0.25, 4, False)
    return R.qgemm(codes, scale, inits["W"], inits["W_scale"], inits["B"], fmt="post", bits=3, act_bits=4,
                   act_zero_point=0, weight_shape=[4, 6], relu=True)


@pytest.mark.parametrize("source", ["bytes", "path"])
@pytest.mark.parametrize("threads", [None, 1, 2])
def test_make_session_runs_a_model(source: str, threads: int | None, tmp_path: Path) -> None:
    model = _small_model()
    if source == "bytes":
        arg: object = model.SerializeToString()
    else:
        arg = tmp_path / "small.onnx"
        onnx.save(model, arg)
    sess = runtime.make_session(arg, threads=threads)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    (y,) = sess.run(None, {"x": x})
    np.testing.assert_array_equal(y, _expected(model, x))


def test_session_options_threads() -> None:
    assert runtime.session_options(threads=3).intra_op_num_threads == 3
    with pytest.raises(ValueError):
        runtime.session_options(threads=0)


def test_library_registers_in_many_sessions() -> None:
    """The domain and op objects are static: many sessions, created and dropped, share them."""
    model = _small_model().SerializeToString()
    x = np.ones((2, 6), dtype=np.float32)
    outs = []
    for _ in range(5):
        sess = runtime.make_session(model)
        outs.append(sess.run(None, {"x": x})[0])
        del sess
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_concurrent_runs_of_one_session() -> None:
    """Kernels keep no per-call state: runs from several Python threads give the same results."""
    from concurrent.futures import ThreadPoolExecutor

    model = _small_model()
    sess = runtime.make_session(model.SerializeToString(), threads=2)
    xs = [np.random.default_rng(i).normal(size=(8, 6)).astype(np.float32) for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        ys = list(pool.map(lambda x: sess.run(None, {"x": x})[0], xs))
    for x, y in zip(xs, ys):
        np.testing.assert_array_equal(y, _expected(model, x))
