"""Bit-widths per output channel (mixed precision): the quantizer, the config, the file, the kernels."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from qexport.lower import IntegerModel
from qexport.models import build_model
from qexport.nn import calibrate, quantize_
from qexport.quant.base import WEIGHT_QUANTIZERS
from qexport.quant.config import QuantConfig
from qexport.spec import reference as R


@pytest.mark.parametrize("fmt,choices", [("post", (2, 3, 4)), ("uniform", (2, 5, 8)), ("pot", (2, 4))])
def test_per_channel_bits_quantize_each_row_on_its_own_grid(fmt: str, choices) -> None:
    """A mixed quantizer equals, row by row, the single-width quantizer of that row's bits with the
    same scale; integer weights stay in each row's range; its gradients reach every row's scale."""
    torch.manual_seed(0)
    o = 7
    bits = [choices[i % len(choices)] for i in range(o)]
    w = torch.randn(o, 5, 3, 3, requires_grad=True)
    q = WEIGHT_QUANTIZERS[fmt](bits, o)
    q.init_from(w)
    assert q.mixed and q.bits == bits
    out = q(w)
    for b in set(bits):
        rows = [i for i in range(o) if bits[i] == b]
        single = WEIGHT_QUANTIZERS[fmt](b, len(rows))
        with torch.no_grad():
            single.param.copy_(q.param[rows])
        single.initialized.fill_(True)
        assert torch.equal(out[rows], single(w[rows]))
    w_int, w_scale = q.integer_weights(w)
    for i, b in enumerate(bits):
        values = np.unique(np.asarray(w_int[i]))
        lut, valid = R.weight_lut(fmt, b)
        assert set(values.tolist()) <= set(lut[valid].tolist())
    np.testing.assert_allclose(w_int * w_scale[:, None, None, None], out.detach().numpy(), rtol=1e-6, atol=1e-7)
    out.pow(2).sum().backward()
    assert q.param.grad is not None and (q.param.grad != 0).all()


def test_per_channel_bits_override_validation() -> None:
    cfg = QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": [2, 3] * 32})])
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bits must be an integer in 2..8 or a list"):
        QuantConfig(overrides=[("fc", {"bits": [2, 9]})])
    with pytest.raises(ValueError, match="post weights support 2..4 bits, got 5"):
        quantize_(build_model("small_cnn"), QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": [5] * 64})]))
    with pytest.raises(ValueError, match="one integer or 64"):
        quantize_(build_model("small_cnn"), QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": [2, 3]})]))


def test_per_channel_model_checkpoints_exports_and_runs_bit_exact(tmp_path) -> None:
    """Per-channel bit-widths through calibration, checkpoint, export (one bits entry per channel,
    the stream at the sum of the channels' code bits) and ONNX Runtime, bit for bit."""
    from qexport.data import load_samples
    from qexport.export import export_onnx
    from qexport.validate import check_parity

    x = load_samples()[0][:64]
    rng = np.random.default_rng(0)
    per_channel = [int(b) for b in rng.integers(2, 5, size=64)]
    cfg = QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": per_channel}),
                                                 ("features.4.0", {"bits": [4] * 64 + [2] * 64})])
    model = quantize_(build_model("small_cnn"), cfg)
    calibrate(model, [torch.from_numpy(x)])
    path = save_checkpoint(tmp_path / "mixed.pt", model=model, arch="small_cnn", quant=cfg)
    model = build_model_from_checkpoint(load_checkpoint(path)).eval()
    assert model.get_submodule("features.2.0").weight_quant.bits == per_channel
    proto = export_onnx(model, torch.from_numpy(x[:2]), tmp_path / "mixed.onnx")
    description = IntegerModel.from_onnx(proto)
    spec = description.layers["features.2.0"]
    assert spec.bits == tuple(per_channel)
    node = next(n for n in proto.graph.node if n.name == spec.onnx.node)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["bits"] == per_channel
    packed = next(i for i in proto.graph.initializer if i.name == spec.onnx.weights)
    k = int(np.prod(attrs["weight_shape"][1:]))
    assert onnx.numpy_helper.to_array(packed).size == (k * sum(per_channel) + 7) // 8
    report = check_parity(model, proto, x)
    assert report.passed, report.failures
    assert all(row.codes > 0 and row.mismatches == 0 and row.weight_mismatches == 0 for row in report.layers)
