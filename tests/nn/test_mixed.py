"""Mixed precision (qexport.nn.mixed): the budget, the greedy allocation, the post-training
allocation and the differentiable search, each checked by what a user would see."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qexport.models import build_model
from qexport.nn.mixed import Budget, allocate, code_bytes, greedy, parse_budget
from qexport.quant.config import QuantConfig


def test_parse_budget():
    assert parse_budget("40KB") == Budget(code_bytes=40_000)
    assert parse_budget("40 KiB") == Budget(code_bytes=40_960)
    assert parse_budget("0.5MB") == Budget(code_bytes=500_000)
    assert parse_budget("40960") == Budget(code_bytes=40_960)
    assert parse_budget("2.5bits") == Budget(bits_per_weight=2.5)
    for bad in ("", "-3KB", "40 parsecs", "0bits", "KB"):
        with pytest.raises(ValueError, match="size budget"):
            parse_budget(bad)


def test_greedy_spends_bits_where_they_save_most_and_never_exceeds_the_limit():
    # group 0 gains a lot from 4 bits, group 1 nothing: with room for one upgrade, group 0 gets it
    costs = [{2: 10.0, 3: 5.0, 4: 1.0}, {2: 1.0, 3: 0.99, 4: 0.98}]
    assert greedy(costs, [10, 10], limit_bits=10 * 2 + 10 * 2 + 20) == [4, 2]
    assert greedy(costs, [10, 10], limit_bits=80) == [4, 4]
    assert greedy(costs, [10, 10], limit_bits=50) == [3, 2]  # 4 would not fit
    assert greedy(costs, [10, 10], limit_bits=49) == [2, 2]  # nor 3
    with pytest.raises(ValueError, match="below the smallest possible"):
        greedy(costs, [10, 10], limit_bits=39)
    # fill: upgrades that save nothing still use the budget (least loss first)
    flat = [{2: 0.0, 3: 1.0}, {2: 0.0, 3: 5.0}]
    assert greedy(flat, [1, 1], 5) == [2, 2] and greedy(flat, [1, 1], 5, fill=True) == [3, 2]


@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_allocation_fits_the_budget_and_differs_between_groups(samples, granularity):
    from qexport.checkpoint import load_model
    from qexport.nn import quantize_

    x = torch.from_numpy(samples[0][:128])
    model = load_model("samples/small_cnn_float.pt").model
    config = QuantConfig("asq+post", 3)
    budget = Budget(code_bytes=45_000)  # between uniform 2-bit (36,128) and 3-bit (53,408)
    found = allocate(model, config, x, budget, choices=(2, 3, 4), granularity=granularity)
    quantized = quantize_(model, QuantConfig("asq+post", 3, overrides=found))
    used = code_bytes(quantized)
    # the budget moves weight widths only: every allocated layer keeps its 3-bit activations
    assert all(quantized.get_submodule(name).act_quant.bits == 3 for name, _ in found)
    # per channel the budget is filled to within a few channels; per layer within one layer's bit
    slack = 0.03 * budget.code_bytes if granularity == "channel" else 73_728 / 8
    assert budget.code_bytes - slack <= used <= budget.code_bytes
    widths = [b for _, o in found for b in (o["bits"] if isinstance(o["bits"], list) else [o["bits"]])]
    assert len(set(widths)) > 1  # sensitivity separates the groups: not one width everywhere
    if granularity == "layer":
        assert all(isinstance(o["bits"], int) for _, o in found)


@pytest.mark.slow
def test_search_trains_converts_and_runs_bit_exact(tmp_path, samples):
    """qexport train --size-budget (Cheng et al.'s search) on a few hundred images: the found
    widths fit the budget, vary between channels, survive the checkpoint, and the exported model
    runs bit-exact in ONNX Runtime."""
    from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
    from qexport.export import export_onnx
    from qexport.train import TrainConfig, train
    from qexport.validate import check_parity

    out = tmp_path / "searched.pt"
    metrics = train(TrainConfig(method="asq+post", bits=3, from_checkpoint="samples/small_cnn_float.pt",
                                data="samples", epochs=1, batch_size=64, output=str(out), progress=False,
                                size_budget="2.5bits", bit_choices=(2, 3, 4), search_steps=15, calib_batches=2,
                                calib_refine_samples=0, limit_train=256))
    search = metrics["bit_search"]
    assert search["code_bytes"] <= search["limit_bytes"] + 1568 + 1  # + the fixed 8-bit first/last layers
    assert search["code_bytes"] >= 0.97 * (search["limit_bytes"] + 1568)
    assert search["expected_code_bytes"][-1] < search["expected_code_bytes"][0]  # drawn from 3 bits towards 2.5
    model = build_model_from_checkpoint(load_checkpoint(out)).eval()
    bits = model.get_submodule("features.2.0").weight_quant.channel_bits
    assert len(set(bits)) > 1
    assert all(model.get_submodule(f"features.{i}.0").act_quant.bits == 3 for i in range(1, 5))
    x = samples[0][:32]
    proto = export_onnx(model, torch.from_numpy(x[:2]))
    report = check_parity(model, proto, x)
    assert report.passed, report.failures
    assert np.isfinite(metrics["final_test_acc"]) and metrics["final_test_acc"] > 50


def test_search_per_layer_gives_one_width_per_layer(samples):
    from qexport.nn import calibrate, quantize_
    from qexport.nn.mixed import search

    x, y = torch.from_numpy(samples[0][:64]), torch.from_numpy(samples[1][:64]).long()
    config = QuantConfig("asq+post", 3)
    model = quantize_(build_model("small_cnn"), config)
    calibrate(model, [x])
    found, summary = search(model, config, x, y, parse_budget("2.5bits"), choices=(2, 3, 4), granularity="layer",
                            steps=3, batch_size=32)
    assert found and all(isinstance(o["bits"], int) and o["act_bits"] == 3 for _, o in found)
    assert summary["limit_bytes"] > 0
