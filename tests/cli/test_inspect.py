"""qexport inspect: what a file holds, per layer, read from the file alone."""
from __future__ import annotations

import json

import onnx
import torch

from shared import run_cli


def _mixed_file(tmp_path):
    from qexport.data import load_samples
    from qexport.export import export_onnx
    from qexport.models import build_model
    from qexport.nn import calibrate, quantize_
    from qexport.quant.config import QuantConfig

    x = load_samples()[0][:32]
    bits = [2] * 40 + [4] * 24
    model = quantize_(build_model("small_cnn"), QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": bits})]))
    calibrate(model, [torch.from_numpy(x)])
    path = tmp_path / "mixed.onnx"
    export_onnx(model, torch.from_numpy(x[:2]), path)
    return path


def test_inspect_reports_each_layer_and_the_totals(tmp_path):
    path = _mixed_file(tmp_path)
    code, text = run_cli("inspect", path)
    assert code == 0, text
    for fragment in ("features.0.0", "features.2.0", "fc", "2.75 avg (40x2, 24x4)", "QConv", "post",
                     "the installed library registers every op of this file"):
        assert fragment in text, (fragment, text)
    code, text = run_cli("inspect", path, "--json")
    assert code == 0, text
    info = json.loads(text)
    layers = {row["name"]: row for row in info["layers"]}
    assert [row["name"] for row in info["layers"]][0] == "features.0.0"  # graph order
    assert layers["features.2.0"]["bits"] == {"2": 40, "4": 24} and layers["features.2.0"]["mean_bits"] == 2.75
    assert layers["features.3.0"]["bits"] == {"3": 64} and layers["features.3.0"]["adapter_params"] > 0
    proto = onnx.load(str(path))
    packed = sum(onnx.numpy_helper.to_array(i).size for i in proto.graph.initializer
                 if i.data_type == onnx.TensorProto.UINT8)
    assert info["totals"]["weight_bytes"] == packed
    assert layers["features.2.0"]["weight_bytes"] == (32 * 9 * (40 * 2 + 24 * 4) + 7) // 8
    assert info["totals"]["ratio_to_float"] > 5
    assert info["missing_ops"] == [] and info["ops"]["QConvFused"] >= 3


def test_inspect_refuses_what_it_cannot_read(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    code, text = run_cli("inspect", bad)
    assert code == 2 and "is not a readable ONNX model" in text
    code, text = run_cli("inspect", tmp_path / "missing.onnx")
    assert code == 2 and "not found" in text
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(plain))
    code, text = run_cli("inspect", plain)
    assert code == 2 and "not exported by qexport" in text
