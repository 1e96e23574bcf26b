"""The post-training fit makes the quantized model closer to the float model (no labels used)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from qexport.checkpoint import load_model
from qexport.convert import fidelity, quantize_model, split_calibration
from qexport.nn.fit import FitOptions, fit
from qexport.quant.config import QuantConfig
from qexport.data import load_samples
from qexport.validate.steps import torch_step_stats

SAMPLE_MODEL = Path(__file__).resolve().parents[2] / "samples" / "small_cnn_float.pt"


@pytest.mark.slow  # a calibration and a 60-step fit of the shipped model
def test_fit_beats_calibration_on_held_out_samples() -> None:
    x = load_samples()[0]
    n_cal, held = split_calibration(len(x), 512)
    assert (n_cal, held.start, held.stop) == (448, 448, 512)
    teacher = load_model(SAMPLE_MODEL).model.eval()
    model = quantize_model(copy.deepcopy(teacher), QuantConfig("asq+post", 3), x, n_cal)
    assert min(v["cv"] for v in torch_step_stats(model, x[held]).values()) > 0.01  # calibrate fitted the adapters
    before = fidelity(model, teacher, x[held])
    torch.manual_seed(0)
    summary = fit(model, teacher, torch.from_numpy(x[:n_cal]), FitOptions(steps=60))
    after = fidelity(model, teacher, x[held])
    assert summary["loss_after"] < 0.6 * summary["loss_before"], summary
    assert after["sqnr_db"] > before["sqnr_db"] + 3.0, (before, after)
    assert after["top1_agreement"] >= before["top1_agreement"], (before, after)


def test_split_keeps_held_out_samples_apart() -> None:
    assert split_calibration(10000, 512) == (512, slice(512, 10000))
    assert split_calibration(64, 512) == (56, slice(56, 64))
    assert split_calibration(3, 512) == (2, slice(2, 3))
    n, held = split_calibration(1, 512)
    assert n == 1 and held == slice(0, 1)  # one sample: fidelity on it, reported as not held out
    assert np.arange(1)[held].size == 1
