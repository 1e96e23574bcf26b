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


def test_the_first_diverging_layer_is_named(sample_w3, samples):
    """A layer whose step differs between PyTorch and the file: every later layer inherits the
    difference, and the report names the first one in forward order (not just a list)."""
    import copy

    import torch

    model, proto = sample_w3
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.get_submodule("features.2.0").act_quant.step.mul_(1.03)
    report = check_parity(model, proto, samples[0][:32])
    assert not report.passed
    assert report.first_divergence["layer"] == "features.2.0"
    assert report.first_divergence["mismatches"] > 0
    assert report.failures[0].startswith("features.2.0: ") and "first diverging layer" in report.failures[0]
    assert {row.name for row in report.layers if row.mismatches} >= {"features.2.0", "features.3.0"}
    assert all(row.mismatches == 0 for row in report.layers if row.name in ("features.0.0", "features.1.0"))


def test_output_error_is_judged_in_output_steps(sample_w3, samples):
    """The file's output layer bias moved by 0.6 of its output step: every code still equal, but
    the output differs by more than the 0.5 steps allowed, and the report says so."""
    from qexport.lower.description import IntegerModel

    model, proto = sample_w3
    report = check_parity(model, proto, samples[0][:32])
    assert report.vs_deploy["max_err_output_steps"] == 0 and report.vs_deploy["output_layer"] == "fc"
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    node = next(n for n in tampered.graph.node if n.name == IntegerModel.from_onnx(proto).layers["fc"].onnx.node)
    inits = {i.name: i for i in tampered.graph.initializer}
    bias = inits[node.input[-1]]
    values = onnx.numpy_helper.to_array(bias).copy()
    # the smallest output step of the batch: input step (min over samples) x the channel's weight scale
    w_scale = onnx.numpy_helper.to_array(inits[node.input[-2]]).astype(np.float64)
    deploy_scale = _fc_input_steps(model, samples[0][:32])
    values[0] += np.float32(0.6 * deploy_scale.max() * w_scale.reshape(-1)[0])
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    bad = check_parity(model, tampered, samples[0][:32])
    assert all(row.mismatches == 0 for row in bad.layers)
    assert bad.vs_deploy["max_err_output_steps"] > 0.5
    assert any("output steps of layer fc" in f for f in bad.failures), bad.failures


def _fc_input_steps(model, x):
    from qexport.lower.modules import deploy_layers, to_deploy

    import torch

    deploy = to_deploy(model)
    seen = []
    h = deploy_layers(deploy)["fc"].quant.register_forward_hook(lambda m, i, o: seen.append(o[1].numpy()))
    with torch.no_grad():
        deploy(torch.from_numpy(x))
    h.remove()
    return np.concatenate(seen).reshape(-1).astype(np.float64)


def test_low_agreement_with_the_trained_model_is_explained(sample_w3, samples):
    """When ONNX agrees with the trained (fake-quantized) model on fewer than 99.9% of the
    samples, the report says why: here the trained model's step of features.2.0 is 30% larger
    than the integer model's (its adapter output scaled in PyTorch only), so ONNX still equals
    the integer model, and the note names features.2.0 as where the trained model's codes part."""
    import copy

    model, proto = sample_w3
    plain = check_parity(model, proto, samples[0][:128])
    assert plain.notes == [] and plain.vs_trained["top1_agreement"] >= 0.999
    assert all(row.trained_mismatches == -1 for row in plain.layers)  # nothing to diagnose: not compared
    model = copy.deepcopy(model)
    quant = model.get_submodule("features.2.0").act_quant
    factor = quant.factor
    quant.factor = lambda x: factor(x) * 1.3  # the trained model only: deploy reads the adapter's weights
    report = check_parity(model, proto, samples[0][:128])
    assert report.passed, report.failures  # ONNX vs the integer model: still exact
    assert report.vs_trained["top1_agreement"] < 0.999 and len(report.notes) == 1
    assert report.first_trained_divergence["layer"] == "features.2.0"
    assert "ONNX matches the integer model exactly" in report.notes[0] and "at layer features.2.0" in report.notes[0]
    rows = {row.name: row for row in report.layers}
    assert rows["features.0.0"].trained_mismatches == rows["features.1.0"].trained_mismatches == 0
    assert rows["features.2.0"].trained_mismatches > 0 and rows["features.2.0"].trained_codes > 0
