"""Per-layer configuration: a default QuantConfig plus overrides by module name or pattern."""
from __future__ import annotations

import pytest
import torch

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from qexport.models import build_model
from qexport.nn import calibrate, layer_plan, quantize_
from qexport.quant.config import QuantConfig, parse_override


def test_overrides_set_layers_in_order_and_beat_the_edge_rule() -> None:
    cfg = QuantConfig("asq+post", 3, overrides=[parse_override("features.*:bits=4"),
                                                  parse_override("features.4.0:bits=2,act_bits=3"),
                                                  parse_override("fc:method=asq+pot,bits=3"),
                                                  parse_override("features.1.0:skip")])
    plan = layer_plan(build_model("small_cnn"), cfg)
    assert "features.1.0" not in plan  # skipped: stays float
    assert plan["features.0.0"] == {"act": "lsq", "weights": "uniform", "bits": 4, "act_bits": 4}  # override > edge
    assert plan["features.2.0"] == {"act": "asq", "weights": "post", "bits": 4, "act_bits": 4}
    assert plan["features.4.0"] == {"act": "asq", "weights": "post", "bits": 2, "act_bits": 3}  # later wins
    assert plan["fc"] == {"act": "asq", "weights": "pot", "bits": 3, "act_bits": 3}


def test_overrides_round_trip_and_refuse_what_cannot_work() -> None:
    cfg = QuantConfig("asq+post", 3, overrides=[("features.4.*", {"bits": 2})])
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        QuantConfig(overrides=[("fc", {"width": 3})])
    with pytest.raises(ValueError, match="unknown method"):
        parse_override("fc:method=int8")
    with pytest.raises(ValueError, match="cannot read"):
        parse_override("fc:bits=two")
    with pytest.raises(ValueError, match="PATTERN:key=value"):
        parse_override("fc")
    with pytest.raises(ValueError, match="matches no Conv2d/Linear"):
        layer_plan(build_model("small_cnn"), QuantConfig(overrides=[("classifier", {"bits": 4})]))
    with pytest.raises(ValueError, match="'features.2.0': post weights support 2..4 bits, got 6"):
        layer_plan(build_model("small_cnn"), QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": 6})]))


def test_mixed_bits_model_exports_and_runs_bit_exact(tmp_path) -> None:
    """Each layer at its own bit-width through calibration, checkpoint, export and ONNX Runtime."""
    from qexport.data import load_samples
    from qexport.export import export_onnx
    from qexport.validate import check_parity

    x = load_samples()[0][:64]
    cfg = QuantConfig("asq+post", 3, overrides=[("features.4.0", {"bits": 2}), ("features.2.0", {"bits": 4}),
                                                 ("features.1.0", {"method": "lsq", "bits": 6})])
    model = quantize_(build_model("small_cnn"), cfg)
    calibrate(model, [torch.from_numpy(x)])
    path = save_checkpoint(tmp_path / "mixed.pt", model=model, arch="small_cnn", quant=cfg)
    model = build_model_from_checkpoint(load_checkpoint(path)).eval()
    proto = export_onnx(model, torch.from_numpy(x[:2]), tmp_path / "mixed.onnx")
    report = check_parity(model, proto, x)
    assert report.passed, report.failures
    bits = {row.name: (row.op, row.weights, row.bits, row.act_bits) for row in report.layers}
    assert bits["features.4.0"] == ("QConv", "post", 2, 2) and bits["features.2.0"] == ("QConv", "post", 4, 4)
    assert bits["features.1.0"] == ("QConv", "uniform", 6, 6) and bits["features.3.0"] == ("QConv", "post", 3, 3)
    assert all(row.mismatches == 0 for row in report.layers)
