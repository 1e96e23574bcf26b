"""benchmarks/ablation.py: the bright data, the ASQ step statistics read from an ONNX model, record keys."""
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ablation  # noqa: E402

from qexport.export import export_onnx  # noqa: E402
from qexport.models import build_model  # noqa: E402
from qexport.nn import calibrate, quantize_  # noqa: E402
from qexport.quant import QuantConfig  # noqa: E402
from qexport.runtime import make_session  # noqa: E402


def test_brightness_factors_are_fixed_per_split_and_index():
    f = ablation.brightness_factors("test", 1000)
    assert f.dtype == np.float32 and f.min() >= 0.5 and f.max() <= 1.5
    np.testing.assert_array_equal(ablation.brightness_factors("test", 10), f[:10])  # --limit-test keeps the factors
    np.testing.assert_array_equal(
        f, np.random.default_rng(2000).uniform(0.5, 1.5, 1000).astype(np.float32))
    assert not np.array_equal(ablation.brightness_factors("train", 10), f[:10])
    x = np.full((4, 1, 2, 2), 0.9, np.float32)
    xb, fb = ablation.brighten(x, "train")
    assert xb.dtype == np.float32 and xb.shape == x.shape
    np.testing.assert_allclose(xb[:, 0, 0, 0], 0.9 * fb, rtol=1e-6)  # no clipping at 1
    assert fb.max() * 0.9 == pytest.approx(xb.max())


def test_cell_names_and_record_keys():
    assert ablation.cell_name("asq+post", 3, 0) == "asq-post_w3_s0"
    assert ablation.cell_name("float", None, 0) == "float_s0"
    assert ablation.cell_name("asq+post", 3, 1, "bright") == "bright_asq-post_w3_s1"
    assert ablation.cell_name("float", None, 0, "bright") == "bright_float_s0"
    old = {"method": "lsq", "bits": 4, "seed": 1}
    assert ablation.record_key(old) == ("plain", "lsq", 4, 1)
    assert ablation.record_key({**old, "setting": "bright"}) == ("bright", "lsq", 4, 1)
    assert ablation._command_args(["--setting", "bright", "--max-cells", "2", "--rescore", "--seeds", "0,1,2"]) == [
        "--setting", "bright", "--seeds", "0,1,2"]


def test_a_run_with_another_recipe_is_refused():
    base = {"dataset": "fashion-mnist", "arch": "small_cnn", "arch_args": {"width": 32}, "float": {"epochs": 8},
            "qat": {"epochs": 3}, "limit_train": None, "limit_test": None, "seeds": {"3-4 bits": [0], "2 bits": [0]},
            "command": "python benchmarks/ablation.py", "commands": ["python benchmarks/ablation.py"],
            "grid": [["float", None, 0], ["lsq", 4, 0]]}
    more = {**base, "seeds": {"3-4 bits": [2], "2 bits": []}, "commands": ["python benchmarks/ablation.py --seeds 2"],
            "grid": [["float", None, 0], ["lsq", 4, 2]]}
    merged = ablation.merge_settings(base, more, "plain")
    assert merged["grid"] == [["float", None, 0], ["lsq", 4, 0], ["lsq", 4, 2]]
    assert merged["seeds"]["3-4 bits"] == [0, 2] and len(merged["commands"]) == 2
    with pytest.raises(SystemExit, match="qat"):
        ablation.merge_settings(base, {**more, "qat": {"epochs": 1}}, "plain")


def _exported(tmp_path, calib, config: QuantConfig) -> Path:
    torch.manual_seed(0)
    model = build_model("small_cnn", width=8)
    quantize_(model, config)
    calibrate(model, [torch.from_numpy(calib)], refine_samples=0)  # no output-aware refinement: seconds, not 15 s
    model.eval()
    with torch.no_grad():  # make every ASQ adapter's output depend on its input
        for m in model.modules():
            if hasattr(m, "fc1") and hasattr(m, "fc2"):
                m.fc2.weight.normal_(0.0, 0.5)
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.from_numpy(calib[:2]), path)
    return path


def test_asq_step_stats_reads_every_asq_quantizer(tmp_path, calib):
    # first_last_bits=None: an ASQ quantizer before the first conv and the classifier (standalone
    # AsqQuantize nodes) besides the ones fused into the convs.
    path = _exported(tmp_path, calib, QuantConfig("asq", 4, first_last_bits=None))
    model = onnx.load(str(path))
    outs = ablation.asq_scale_outputs(model)
    kinds = {v["op_type"] for v in outs.values()}
    assert "AsqQuantize" in kinds and any(k.endswith("ConvFused") for k in kinds), kinds
    assert all(v["output"] for v in outs.values())
    x = calib * ablation.brightness_factors("test", len(calib))[:, None, None, None]
    factors = ablation.brightness_factors("test", len(calib))
    logits, stats = ablation.onnx_eval(path, x, factors)
    assert stats == ablation.asq_step_stats(path, x, brightness=factors)
    assert stats["samples"] == len(x) and set(stats["quantizers"]) == set(outs)
    for q in stats["quantizers"].values():
        assert 0 < q["min"] <= q["mean"] <= q["max"]
        assert q["cv"] == pytest.approx(q["std"] / q["mean"])
        assert -1.0 <= q["corr_brightness"] <= 1.0
    assert stats["cv_median"] > 0
    assert len(model.graph.output) == 1  # the file's model is not changed
    sess = make_session(str(path))  # the extra outputs do not change the logits
    np.testing.assert_array_equal(logits, sess.run(None, {sess.get_inputs()[0].name: x})[0])


def test_asq_step_stats_without_asq_quantizers():
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 2, 2])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 2, 2])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    stats = ablation.asq_step_stats(model, np.ones((3, 1, 2, 2), np.float32))
    assert stats == {"samples": 3, "quantizers": {}, "cv_median": None}
