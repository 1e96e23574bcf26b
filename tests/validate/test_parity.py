"""qexport.validate.check_parity, called directly (the CLI's validate: tests/cli/): it passes on a
faithful export, finds the codes of quantizers folded into fused convs, and refuses no samples."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
from qexport.validate import check_parity


@pytest.fixture(scope="module")
def sample_w3(converted_sample):
    path, _ = converted_sample(3)
    return build_model_from_checkpoint(load_checkpoint(path.with_suffix(".pt"))), onnx.load(str(path))


def test_parity_of_the_converted_sample(sample_w3, samples):
    model, proto = sample_w3
    x, y = samples
    report = check_parity(model, proto, x[:64], y[:64])
    assert report.passed, report.failures
    assert report.layers and all(row.mismatches == 0 and row.codes > 0 for row in report.layers)


def test_check_parity_refuses_zero_samples(sample_w3):
    model, proto = sample_w3
    with pytest.raises(ValueError, match="no samples"):
        check_parity(model, proto, np.zeros((0, 1, 28, 28), np.float32))


def test_validate_finds_the_codes_of_fused_quantizers(tiny_resnet):
    q, x, fused, _ = tiny_resnet
    report = check_parity(q, fused, x[:16])
    assert report.passed, report.failures
    assert all(row.mismatches == 0 and row.codes > 0 for row in report.layers)
