"""Models that are not image CNNs: 1-D convolutions (with BatchNorm1d, strides, 'same'/'valid'
padding, groups, dilation, a global 1-D pool) and MLPs on (N, features) inputs, quantized,
exported and run bit-exact; and the CLI converting a pickled MLP with 2-D calibration data."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from qexport.export import export_onnx
from qexport.nn import calibrate, quantize_
from qexport.quant.config import QuantConfig
from qexport.validate import check_parity

from shared import run_cli


def _conv1d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(3, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 32, 3, stride=2, padding="valid"), nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding="same", groups=4, dilation=2), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 5))


@pytest.mark.parametrize("method", ["asq+post", "lsq"])
def test_conv1d_network_runs_bit_exact(method):
    torch.manual_seed(0)
    model = _conv1d_net()
    x = torch.randn(64, 3, 50)
    model.train()(x)  # BatchNorm statistics that are not the identity
    q = quantize_(model.eval(), QuantConfig(method, 3))
    calibrate(q, [x])
    proto = export_onnx(q, x[:2])
    ops = [n.op_type for n in proto.graph.node if n.domain == "ai.qexport"]
    assert ops.count("GlobalAvgPool") == 1 and "BatchNormalization" not in [n.op_type for n in proto.graph.node]
    report = check_parity(q, proto, x.numpy())
    assert report.passed, report.failures
    assert [row.mismatches for row in report.layers] == [0, 0, 0, 0] and all(r.codes > 0 for r in report.layers)


def test_mlp_on_feature_vectors_runs_bit_exact():
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    x = torch.randn(128, 20)
    q = quantize_(mlp, QuantConfig("asq", 4))
    calibrate(q, [x])
    report = check_parity(q, export_onnx(q, x[:2]), x.numpy())
    assert report.passed and report.vs_deploy["sqnr_db"] == float("inf"), report.failures


def test_cli_converts_a_pickled_mlp_with_vector_data(tmp_path):
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))
    torch.save(mlp, tmp_path / "mlp.pt")
    x = np.random.default_rng(0).normal(size=(200, 12)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    code, text = run_cli("convert", tmp_path / "mlp.pt", "--trust-pickle", "--data", tmp_path / "x.npz",
                         "--method", "lsq", "--bits", "4", "--fit-steps", "5", "-o", tmp_path / "mlp.onnx")
    assert code == 0 and "parity: PASS" in text, text
    model = onnx.load(str(tmp_path / "mlp.onnx"))
    assert [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [12]
