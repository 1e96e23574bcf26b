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


def test_pickled_model_class_is_found_in_the_users_folder(tmp_path, monkeypatch):
    """A pickled module whose class lives in the user's own file: found beside the model file or
    with --module-path; a class from the saving script's __main__ gets a hint instead of a trace."""
    import subprocess
    import sys

    from shared import subprocess_env

    code = tmp_path / "code"
    code.mkdir()
    (code / "usernet.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class UserNet(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(6, 3)\n\n"
        "    def forward(self, x):\n        return self.fc(torch.relu(x))\n")
    saver = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from usernet import UserNet; "
             "torch.save(UserNet(), sys.argv[2])")
    subprocess.run([sys.executable, "-c", saver, str(code), str(tmp_path / "net.pt")], check=True, env=subprocess_env())
    main_saver = ("import torch; from torch import nn\n"
                  "class MainNet(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                  "        self.fc = nn.Linear(6, 3)\n    def forward(self, x):\n        return self.fc(x)\n"
                  f"torch.save(MainNet(), {str(tmp_path / 'main.pt')!r})\n")
    subprocess.run([sys.executable, "-c", main_saver], check=True, env=subprocess_env())
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    common = ["--trust-pickle", "--data", tmp_path / "x.npz", "--method", "lsq", "--bits", "4", "--fit-steps", "2"]
    code_, text = run_cli("convert", tmp_path / "net.pt", *common, "-o", tmp_path / "a.onnx")
    assert code_ == 2 and "not importable" in text and "--module-path" in text, text
    code_, text = run_cli("convert", tmp_path / "net.pt", *common, "--module-path", code, "-o", tmp_path / "a.onnx")
    assert code_ == 0 and "parity: PASS" in text, text
    code_, text = run_cli("convert", tmp_path / "main.pt", *common, "-o", tmp_path / "b.onnx")
    assert code_ == 2 and "__main__" in text and "move the class into a module file" in text, text
