"""Per-parameter precision (Khoram and Li; qexport.nn.perparam): the widths act (they follow the
loss sensitivity and beat a random placement of the same widths), the rounds keep what holds and
undo what does not, and a trained model exports to a smaller file that runs bit-exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qexport.nn import calibrate, quantize_
from qexport.nn.perparam import adapt, assign, eps_for_mean_width, layer_stats, perparam_layers, sensitivities
from qexport.quant.config import QuantConfig
from qexport.spec import codecs


def _model(fmt: str = "perparam", bits: int = 8, samples=None):
    from qexport.checkpoint import load_model

    model = load_model("samples/small_cnn_float.pt").model
    quantize_(model, QuantConfig(f"lsq+{fmt}", bits, act_bits=8, first_last_bits=None))
    calibrate(model, [torch.from_numpy(samples[0][:128])])
    return model.eval()


def _loss(model, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


@pytest.mark.parametrize("fmt,bits", [("perparam", 8), ("perparam_post", 4)])
def test_widths_follow_sensitivity_and_beat_a_random_placement(samples, fmt, bits):
    x, y = torch.from_numpy(samples[0]), torch.from_numpy(samples[1]).long()
    model = _model(fmt, bits, samples)
    base = _loss(model, x, y)
    sens = sensitivities(model, x[:256], y[:256], batches=4, batch_size=64)
    target = 3.0 if fmt == "perparam" else 2.0
    widths = assign(model, sens, eps_for_mean_width(model, sens, target))
    n = sum(w.numel() for w in widths.values())
    mean = sum(float(w.float().sum()) for w in widths.values()) / n
    assert abs(mean - target) < 0.1
    every = torch.cat([w.flatten() for w in widths.values()])
    assert len(torch.unique(every)) >= (6 if fmt == "perparam" else 4)  # a real spread, pruned to widest
    assert 0.05 < float((every == 0).float().mean()) < 0.95
    # the closed form gives the pruned weights the smallest first-order loss change g|w|
    layer = "features.3.0"
    w = model.get_submodule(layer).weight.detach()
    saliency = sens[layer] * w.abs()
    assert float(saliency[widths[layer] == 0].mean()) < 0.2 * float(saliency[widths[layer] == bits].mean())
    adaptive = _loss(model, x, y) - base
    # the same histogram of widths, placed at random within each layer: a much larger loss increase
    gen = torch.Generator().manual_seed(0)
    for m in perparam_layers(model).values():
        flat = m.weight_quant.widths.flatten()
        m.weight_quant.widths = flat[torch.randperm(flat.numel(), generator=gen)].reshape(m.weight.shape)
    shuffled = _loss(model, x, y) - base
    assert adaptive < 0.5 * shuffled, (adaptive, shuffled)


def test_a_clipped_weight_is_sensitive_not_pruned(samples):
    """A latent weight beyond the clipping range has no gradient of its own; the sensitivity is
    measured at the quantizer's output, so the largest weights are not taken for free to prune."""
    x, y = torch.from_numpy(samples[0][:128]), torch.from_numpy(samples[1][:128]).long()
    model = _model("perparam", 8, samples)
    m = model.get_submodule("features.2.0")
    with torch.no_grad():
        top = m.weight.abs().flatten().argmax()
        m.weight.view(-1)[top] *= 3  # beyond scale: clipped
    sens = sensitivities(model, x, y, batches=2, batch_size=64)
    assert float(sens["features.2.0"].flatten()[top]) > 0
    assign(model, sens, eps_for_mean_width(model, sens, 4.0))
    assert int(m.weight_quant.widths.flatten()[top]) > 0


def test_rounds_keep_what_holds_and_undo_what_breaks(samples):
    x, y = torch.from_numpy(samples[0]), torch.from_numpy(samples[1]).long()
    model = _model("perparam", 8, samples)
    # a tolerance no round can meet after the first: round 1 (mean 7 bits) holds, later ones are undone
    record = adapt(model, x[:384], y[:384], x[384:], y[384:], rounds=6, steps=4, tolerance=1.0, growth=16.0,
                   lr=0.001, batch_size=64, sens_batches=2)
    rounds = record["rounds"]
    assert rounds[0]["accepted"] and rounds[0]["mean_bits"] < 8
    assert all(r["val_acc"] >= record["reference_acc"] - 1.0 for r in rounds if r["accepted"])
    kept = [r for r in rounds if r["accepted"]]
    assert any(not r["accepted"] for r in rounds), "growth 16 should break the tolerance within 6 rounds"
    # the model is the last kept round: its accuracy and size are that round's
    assert record["val_acc"] == pytest.approx(kept[-1]["val_acc"])
    assert record["final"]["stream_bytes"] == kept[-1]["stream_bytes"]
    assert record["final"]["stream_bytes"] < record["start"]["stream_bytes"]


def test_layer_stats_count_three_encodings(samples):
    model = _model("perparam", 8, samples)
    x, y = torch.from_numpy(samples[0][:128]), torch.from_numpy(samples[1][:128]).long()
    sens = sensitivities(model, x, y, batches=2, batch_size=64)
    assign(model, sens, eps_for_mean_width(model, sens, 2.0))
    stats = layer_stats(model)
    big = stats["features.4.0"]
    assert sum(big["bits_histogram"].values()) == big["weights"] == 73_728
    assert big["entropy_bytes"] <= big["stream_bytes"] <= 1.03 * big["entropy_bytes"] + 600  # table + rounding
    assert big["stream_bytes"] < big["fixed_width_bytes"] / 2
    # the histogram is of the values written: a pruned weight needs 0 bits, the others >= 2
    codec = codecs.get("perparam")
    w_int, _ = model.get_submodule("features.4.0").weight_quant.integer_weights(model.get_submodule("features.4.0").weight)
    needed = codec.param_bits(w_int, 8)
    assert big["bits_histogram"] == {int(b): int(c) for b, c in zip(*np.unique(needed, return_counts=True))}
    assert 1 not in big["bits_histogram"]


def test_per_channel_widths_are_refused_for_per_parameter_formats():
    with pytest.raises(ValueError, match="one bit-width"):
        quantize_(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 2, 3), torch.nn.Conv2d(2, 2, 3)),
                  QuantConfig("lsq+perparam", 8, first_last_bits=None, overrides=[("1", {"bits": [8, 4]})]))
    with pytest.raises(ValueError, match="perparam_post weights support 2..4 bits"):
        QuantConfig("lsq+perparam_post", 8)


@pytest.mark.slow
def test_train_export_inspect_and_run_bit_exact(tmp_path, samples):
    """qexport train --method lsq+perparam: the widths survive the checkpoint, the file is the
    entropy-coded stream, qexport inspect shows the histogram, ONNX Runtime runs it bit-exact."""
    from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
    from qexport.export import export_onnx
    from qexport.inspect import inspect_model
    from qexport.train import TrainConfig, train
    from qexport.validate import check_parity

    out = tmp_path / "pp.pt"
    metrics = train(TrainConfig(method="lsq+perparam", bits=8, quant_args={"act_bits": 4, "first_last_bits": None},
                                from_checkpoint="samples/small_cnn_float.pt", data="samples", epochs=1, batch_size=64,
                                output=str(out), progress=False, calib_batches=2, calib_refine_samples=0,
                                perparam_rounds=3, perparam_steps=4, perparam_tolerance=10.0, perparam_val_samples=96))
    pp = metrics["perparam"]
    assert pp["final"]["mean_bits"] < 7.5 and any(r["accepted"] for r in pp["rounds"])
    model = build_model_from_checkpoint(load_checkpoint(out)).eval()
    q = model.get_submodule("features.3.0").weight_quant
    assert q.widths.shape == model.get_submodule("features.3.0").weight.shape and len(torch.unique(q.widths)) > 2
    path = tmp_path / "pp.onnx"
    proto = export_onnx(model, torch.from_numpy(samples[0][:2]), path)
    report = check_parity(model, proto, samples[0][:64])
    assert report.passed, report.failures
    info = inspect_model(path)
    layer = next(lay for lay in info.layers if lay.name == "features.3.0")
    w_int, _ = q.integer_weights(model.get_submodule("features.3.0").weight)
    needed = codecs.get("perparam").param_bits(w_int, 8)
    assert layer.param_bits == {str(int(b)): int(c) for b, c in zip(*np.unique(needed, return_counts=True))}
    assert layer.weight_bytes < w_int.size  # below the 8-bit stream


def test_inspect_shows_the_bits_per_parameter(tmp_path, samples):
    import json

    from qexport.export import export_onnx

    from shared import run_cli

    model = _model("perparam_post", 4, samples)
    x, y = torch.from_numpy(samples[0][:128]), torch.from_numpy(samples[1][:128]).long()
    sens = sensitivities(model, x, y, batches=2, batch_size=64)
    assign(model, sens, eps_for_mean_width(model, sens, 2.0))
    path = tmp_path / "pp.onnx"
    export_onnx(model, x[:2], path)
    code, text = run_cli("inspect", path, "--json")
    assert code == 0, text
    rows = {row["name"]: row for row in json.loads(text)["layers"]}
    stats = layer_stats(model)
    for name, s in stats.items():
        assert rows[name]["param_bits"] == {str(b): c for b, c in s["bits_histogram"].items()}
        assert rows[name]["mean_bits"] == pytest.approx(s["mean_bits"])
        assert rows[name]["weight_bytes"] == s["stream_bytes"]
    code, text = run_cli("inspect", path)
    assert code == 0 and "avg per weight" in text and "0b " in text, text
