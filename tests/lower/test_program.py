"""torch.export programs (.pt2) as models: layers recovered by their original names, BatchNorm
folded, global means made the defined-order GlobalAvgPool, then quantized, exported and run
bit-exact; `qexport convert model.pt2` end to end; and the refusals."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qexport.checkpoint import CheckpointError, load_model
from qexport.export import export_onnx
from qexport.lower.program import GlobalMean
from qexport.nn import calibrate, quantize_
from qexport.quant.config import QuantConfig
from qexport.validate import check_parity

from shared import SAMPLE_MODEL, run_cli


class MeanPoolNet(nn.Module):
    """Pools with x.mean((2, 3)), the pattern whose float sum order broke parity before."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _save_program(model: nn.Module, x: torch.Tensor, path) -> None:
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=({0: batch},)), str(path))


def test_small_cnn_program_quantizes_like_the_module(tmp_path, samples):
    model = load_model(SAMPLE_MODEL).model
    x, y = samples
    _save_program(model, torch.from_numpy(x[:4]), tmp_path / "cnn.pt2")
    loaded = load_model(tmp_path / "cnn.pt2")
    assert loaded.kind == "program"
    names = {n for n, m in loaded.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert names == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    with torch.no_grad():
        assert torch.equal(loaded.model(torch.from_numpy(x[:64])), model(torch.from_numpy(x[:64])))
    q = quantize_(loaded.model, QuantConfig("asq+post", 4))
    calibrate(q, [torch.from_numpy(x[:128])])
    proto = export_onnx(q, torch.from_numpy(x[:2]))
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    report = check_parity(q, proto, x[:256], y[:256])
    assert report.passed, report.failures
    assert report.accuracy["onnx"] > 0.85


def test_mean_pool_becomes_global_avg_pool_and_parity_is_exact(tmp_path):
    torch.manual_seed(0)
    model = MeanPoolNet()
    x = torch.rand(64, 3, 12, 12)
    model.train()(x)
    _save_program(model, x[:4], tmp_path / "mean.pt2")
    gm = load_model(tmp_path / "mean.pt2").model
    assert any(isinstance(m, GlobalMean) for m in gm.modules())
    q = quantize_(gm, QuantConfig("lsq", 4, first_last_bits=None))
    calibrate(q, [x])
    proto = export_onnx(q, x[:2])
    assert "GlobalAvgPool" in {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}  # folded into the conv
    report = check_parity(q, proto, x.numpy())
    assert report.passed and all(row.mismatches == 0 for row in report.layers), report.failures


def test_convert_cli_takes_a_program(tmp_path, samples):
    model = load_model(SAMPLE_MODEL).model
    _save_program(model, torch.from_numpy(samples[0][:4]), tmp_path / "cnn.pt2")
    code, text = run_cli("convert", tmp_path / "cnn.pt2", "--bits", "4", "--fit-steps", "5", "--limit", "256",
                         "-o", tmp_path / "cnn_w4.onnx")
    assert code == 0 and "parity: PASS" in text and "quantized 6 conv/linear layers" in text, text
    # the calibrated checkpoint is written beside the .onnx and rebuilds from the .pt2 (no model code):
    # validate re-checks it, and a moved pair (program + checkpoint together) still loads
    ckpt = tmp_path / "cnn_w4.pt"
    assert ckpt.is_file()
    code, text = run_cli("validate", ckpt, tmp_path / "cnn_w4.onnx", "--limit", "64")
    assert code == 0 and "parity: PASS" in text, text
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "cnn.pt2").rename(moved / "cnn.pt2")
    ckpt.rename(moved / "cnn_w4.pt")
    assert load_model(moved / "cnn_w4.pt").is_quantized
    (moved / "cnn.pt2").write_bytes((moved / "cnn.pt2").read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="changed since this checkpoint was made"):
        load_model(moved / "cnn_w4.pt")
    (moved / "cnn.pt2").unlink()
    with pytest.raises(CheckpointError, match="is no longer there"):
        load_model(moved / "cnn_w4.pt")


def test_not_a_program_is_refused(tmp_path):
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot be read as a torch.export program"):
        load_model(bad)


def test_train_from_a_program_then_convert(tmp_path, samples):
    """QAT on the user's own model with no model code: train --from model.pt2, then convert the
    checkpoint it writes (rebuilt from the program) with bit-exact parity."""
    model = load_model(SAMPLE_MODEL).model
    _save_program(model, torch.from_numpy(samples[0][:4]), tmp_path / "cnn.pt2")
    code, text = run_cli("train", "--from", tmp_path / "cnn.pt2", "--method", "lsq", "--bits", "4", "--data", "samples",
                         "--epochs", "1", "--limit-train", "128", "--batch-size", "64", "--calib-batches", "1",
                         "--calib-refine-samples", "0", "--no-progress", "-o", tmp_path / "qat.pt")
    assert code == 0 and "wrote" in text, text
    code, text = run_cli("convert", tmp_path / "qat.pt", "--limit", "64", "-o", tmp_path / "qat.onnx")
    assert code == 0 and "parity: PASS" in text, text


def _conv1d_net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(4, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Conv1d(16, 16, 3, padding=1, groups=16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Conv1d(16, 24, 1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(24, 3))


def _mobilenet() -> nn.Module:
    from qexport.models import build_model

    return build_model("mobilenet_v2_cifar", width_mult=0.25, num_classes=5)


@pytest.mark.parametrize("kind, shape, layers", [
    ("mobilenet", (3, 32, 32), 53),  # depthwise 3x3 convs, inverted residuals, pooled by a module
    ("mlp", (20,), 3),  # flat (N, features) input
    ("conv1d", (4, 40), 4),  # (N, C, L) input, a depthwise Conv1d, BatchNorm1d folded
    ("mean", (3, 12, 12), 2),  # pooled by x.mean((2, 3))
])
def test_convert_of_a_program_is_bit_exact_and_reports_coverage(tmp_path, kind, shape, layers):
    from qexport import FitOptions, convert_model

    torch.manual_seed(0)
    model = {"mobilenet": _mobilenet, "mean": MeanPoolNet, "conv1d": _conv1d_net,
             "mlp": lambda: nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))}[kind]()
    x = torch.rand(96, *shape)
    model.train()(x)  # BatchNorm statistics that are not the identity
    _save_program(model, x[:4], tmp_path / f"{kind}.pt2")
    result = convert_model(tmp_path / f"{kind}.pt2", x=x.numpy(), output=tmp_path / f"{kind}.onnx", method="asq+post",
                           bits=4, calib_samples=64, fit_options=FitOptions(steps=3, batch_size=16))
    report = result.report
    assert report.passed and report.vs_deploy["sqnr_db"] == float("inf"), report.failures
    assert len(report.layers) == layers and all(row.mismatches == 0 and row.codes > 0 for row in report.layers)
    assert result.fidelity["coverage"] == {"layers": layers, "skipped": [], "coverage": 1.0}
    if kind == "mobilenet":
        assert sum(1 for row in report.layers if row.op == "QConv") == layers - 1


class _ReshapeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).reshape(x.shape[0], -1))


def test_a_program_fixed_to_batch_one_is_refused_with_the_fix(tmp_path):
    from qexport import ConvertError, convert_model

    model = _ReshapeNet().eval()
    x = torch.rand(8, 3, 6, 6)
    torch.export.save(torch.export.export(model, (x[:1],)), str(tmp_path / "fixed.pt2"))  # no dynamic batch
    with pytest.raises(ConvertError, match="runs on one sample but not on a batch of two.*dynamic_shapes"):
        convert_model(tmp_path / "fixed.pt2", x=x.numpy(), output=tmp_path / "fixed.onnx", validate=False)


class TwoInputNet(nn.Module):
    """An image and a side vector (say, sensor readings), joined before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.side = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.head = nn.Linear(32, 5)

    def forward(self, image, extra):
        return self.head(torch.cat([self.conv(image).mean((2, 3)), self.side(extra)], 1))


def _two_inputs(n: int = 160):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((n, 1, 10, 10), dtype=np.float32), rng.standard_normal((n, 6)).astype(np.float32)


def _two_input_program(tmp_path):
    torch.manual_seed(0)
    model = TwoInputNet()
    image, extra = (torch.from_numpy(a) for a in _two_inputs())
    model.train()(image, extra)
    batch = torch.export.Dim("batch", min=1)
    path = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(model.eval(), (image[:4], extra[:4]), dynamic_shapes=({0: batch}, {0: batch})),
                      str(path))
    return model, path


def test_convert_of_a_two_input_program_is_bit_exact(tmp_path):
    """Several inputs: matched to the model's arguments by name, fed to ONNX Runtime under those
    names, every layer (both branches) bit-exact."""
    import numpy as np

    from qexport import FitOptions, convert_model
    from qexport.inputs import Inputs

    _, path = _two_input_program(tmp_path)
    image, extra = _two_inputs()
    x = Inputs([extra, image], ["extra", "image"])  # any order: bound by name
    result = convert_model(path, x=x, output=tmp_path / "two.onnx", method="asq+post", bits=3, calib_samples=128,
                           fit_options=FitOptions(steps=3, batch_size=16))
    report = result.report
    assert report.passed and report.vs_deploy["sqnr_db"] == float("inf"), report.failures
    assert {row.name for row in report.layers} == {"conv.0", "conv.3", "side.0", "head"}
    assert all(row.mismatches == 0 and row.codes > 0 for row in report.layers)
    assert result.fidelity["coverage"]["coverage"] == 1.0
    import onnx

    proto = onnx.load(str(tmp_path / "two.onnx"))
    assert [i.name for i in proto.graph.input] == ["image", "extra"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"name": "extra"' in meta["qexport.input"]
    # the file runs in ONNX Runtime on named inputs like the quantized model does in PyTorch
    from qexport.runtime import make_session

    sess = make_session(str(tmp_path / "two.onnx"))
    out = sess.run(None, {"image": image[:7], "extra": extra[:7]})[0]
    assert out.shape == (7, 5) and np.isfinite(out).all()


def test_two_input_cli_round_trip_and_refusals(tmp_path):
    """.npz with one array per input name (and y): convert, then validate re-checks; data that
    does not match the model's inputs is refused by name."""
    import numpy as np

    model, path = _two_input_program(tmp_path)
    image, extra = _two_inputs()
    with torch.no_grad():
        y = model.eval()(torch.from_numpy(image), torch.from_numpy(extra)).argmax(1).numpy()
    np.savez(tmp_path / "two.npz", image=image, extra=extra, y=y)
    code, text = run_cli("convert", path, "--bits", "4", "--data", tmp_path / "two.npz", "--fit-steps", "3",
                         "-o", tmp_path / "two_w4.onnx")
    assert code == 0 and "parity: PASS" in text and "accuracy on these samples: float 100.00%" in text, text
    code, text = run_cli("validate", tmp_path / "two_w4.pt", tmp_path / "two_w4.onnx", "--data", tmp_path / "two.npz")
    assert code == 0 and "parity: PASS" in text, text
    np.savez(tmp_path / "one.npz", x=image)
    code, text = run_cli("convert", path, "--data", tmp_path / "one.npz", "-o", tmp_path / "bad.onnx")
    assert code != 0 and "takes 2 inputs (image, extra)" in text and "one array per input" in text, text
    np.savez(tmp_path / "wrong.npz", image=image, meta=extra)
    code, text = run_cli("convert", path, "--data", tmp_path / "wrong.npz", "-o", tmp_path / "bad.onnx")
    assert code != 0 and "no array extra" in text, text
    assert not (tmp_path / "bad.onnx").exists()


def test_two_input_pickled_module(tmp_path):
    """A plain nn.Module with two forward arguments converts the same way (names from forward)."""
    from qexport import FitOptions, convert_model
    from qexport.checkpoint import save_checkpoint  # noqa: F401 - the module is saved whole below
    from qexport.inputs import Inputs

    torch.manual_seed(1)
    model = TwoInputNet().eval()
    torch.save(model, tmp_path / "two_module.pt")
    image, extra = _two_inputs(96)
    result = convert_model(tmp_path / "two_module.pt", x=Inputs([image, extra], ["image", "extra"]), trust_pickle=True,
                           output=tmp_path / "two_module.onnx", bits=4, calib_samples=64,
                           fit_options=FitOptions(steps=2, batch_size=16))
    assert result.report.passed and all(row.mismatches == 0 for row in result.report.layers), result.report.failures


class _SiluSeNet(nn.Module):
    """EfficientNet's float ops between integer layers: SiLU activations and a squeeze-excitation
    gate (mean, 1x1 convs, sigmoid, multiply)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.SiLU())
        self.se_reduce, self.se_expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.dw(self.stem(x))
        gate = torch.sigmoid(self.se_expand(torch.nn.functional.silu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(self.project(x * gate).mean((2, 3)))


@pytest.mark.parametrize("source", ["program", "module"])
def test_silu_and_sigmoid_run_bit_exact(tmp_path, source):
    """SiLU and sigmoid become ai.qexport.Silu / Sigmoid (a defined float computation): every code
    of every layer after them is identical in PyTorch and ONNX Runtime. Before, ONNX Runtime's
    float Sigmoid made EfficientNet-B0's parity fail."""
    from qexport import FitOptions, convert_model

    torch.manual_seed(0)
    model = _SiluSeNet()
    x = torch.rand(96, 3, 16, 16) * 4 - 2
    model.train()(x)
    if source == "program":
        _save_program(model, x[:4], tmp_path / "se.pt2")
        path, extra = tmp_path / "se.pt2", {}
    else:
        torch.save(model.eval(), tmp_path / "se.pt")
        path, extra = tmp_path / "se.pt", {"trust_pickle": True}
    result = convert_model(path, x=x.numpy(), output=tmp_path / "se.onnx", bits=4, calib_samples=64,
                           fit_options=FitOptions(steps=2, batch_size=16), **extra)
    report = result.report
    assert report.passed and report.vs_deploy["sqnr_db"] == float("inf"), report.failures
    assert all(row.mismatches == 0 and row.codes > 0 for row in report.layers)
    import onnx

    ours = [n.op_type for n in onnx.load(str(tmp_path / "se.onnx")).graph.node if n.domain == "ai.qexport"]
    if source == "program":  # every sigmoid/silu call of the graph
        assert ours.count("Silu") == 3 and ours.count("Sigmoid") == 1, ours
    else:  # a module's nn.SiLU / nn.Sigmoid; its functional calls stay float (docs/ops.md)
        assert ours.count("Silu") == 2 and ours.count("Sigmoid") == 0, ours
