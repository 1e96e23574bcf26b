"""--format qdq: uniform LSQ models as standard ONNX that a plain ONNX Runtime session runs
without the qexport library, bit-identical to the deploy model; every other method is refused."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from qexport.convert import quantize_model
from qexport.data import load_dataset
from qexport.export.qdq import (WEIGHT_ZERO_POINT, QdqError, _Builder, _global_avg_pool, check_qdq_parity,
                                export_qdq, layer_codes_tensors, weight_tensor)
from qexport.models.common import ConvBNReLU
from qexport.models.resnet import ResNet
from qexport.nn import quantize_
from qexport.nn.deploy import deploy_layers, to_deploy
from qexport.quant import QuantConfig
from qexport.spec import reference as R
from shared import HAVE_FASHION_MNIST, SAMPLE_MODEL, run_cli

STANDARD = {"", "ai.onnx"}


def _float_model():
    from qexport.checkpoint import load_model

    return load_model(SAMPLE_MODEL).model


@pytest.fixture(scope="module")
def test_images(samples):
    """300 Fashion-MNIST test images: the installed test set's (when there), else the shipped ones."""
    x, y = load_dataset("fashion-mnist") if HAVE_FASHION_MNIST else samples
    return np.ascontiguousarray(x[:300]), y[:300]


@pytest.fixture(scope="module")
def lsq4(samples, tmp_path_factory):
    """The shipped float model, LSQ 4-bit (8-bit first/last layers), calibrated on 256 shipped
    samples; and its qdq export written to disk."""
    torch.manual_seed(0)
    model = quantize_model(_float_model(), QuantConfig("lsq", 4), samples[0], 256)
    path = tmp_path_factory.mktemp("qdq") / "lsq4_qdq.onnx"
    export_qdq(model, path, torch.from_numpy(samples[0][:2]), meta={"qexport.method": "lsq"})
    return model, path


def test_plain_session_no_library_agrees_with_pytorch(lsq4, test_images):
    model, path = lsq4
    proto = onnx.load(str(path))
    assert {n.domain for n in proto.graph.node} <= STANDARD
    assert {o.domain for o in proto.opset_import} <= STANDARD
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "Clip", "ConvInteger", "MatMulInteger"} <= ops
    assert not ops & {"DequantizeLinear", "Conv", "Gemm", "MatMul"}  # no float conv of dequantized values
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["qexport.format"] == "qdq" and meta["qexport.method"] == "lsq"
    assert json.loads(meta["qexport.bits"])["features.1.0"]["op"] == "ConvInteger"

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # no custom library registered
    x, _ = test_images
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        trained = model(torch.from_numpy(x)).numpy()  # fake quantization, BatchNorm separate
        deploy = to_deploy(model)(torch.from_numpy(x)).numpy()  # the integer reference
    assert (logits.argmax(1) == trained.argmax(1)).all()  # top-1 agreement 100%
    np.testing.assert_array_equal(logits, deploy)  # bit for bit


def test_parity_report_every_code_identical(lsq4, test_images):
    model, path = lsq4
    proto = onnx.load(str(path))
    x, y = test_images
    report = check_qdq_parity(model, proto, x, y)
    assert report.passed, report.failures
    assert [r.name for r in report.layers] == list(deploy_layers(to_deploy(model)))
    for row in report.layers:
        assert row.codes > 0 and row.mismatches == 0 and row.weight_mismatches == 0, row
    assert report.vs_deploy["sqnr_db"] == float("inf")
    assert report.vs_trained["top1_agreement"] == 1.0 and report.vs_trained["sqnr_db"] > 40
    assert report.accuracy["onnx"] == report.accuracy["deploy"]


def test_8bit_weights_and_clip_ranges(lsq4):
    model, path = lsq4
    proto = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name, layer in deploy_layers(to_deploy(model)).items():
        stored = inits[weight_tensor(name)]
        assert stored.dtype == np.uint8 and int(inits[f"{name}.w_zero_point"]) == WEIGHT_ZERO_POINT
        w = stored.astype(np.int64) - WEIGHT_ZERO_POINT  # u8 x u8 products: exact on every CPU
        ours = R.decode_weights(layer.packed.numpy(), layer.fmt, layer.bits, layer.weight_shape)
        np.testing.assert_array_equal(w if layer.kind == "conv" else w.T, ours)
        lo, hi = R.act_range(layer.quant.bits, bool(layer.quant.signed))
        if layer.quant.bits < 8:  # QuantizeLinear saturates to 0..255: the codes are clipped to the layer's range
            zp = layer.quant.zero_point
            assert (int(inits[f"{name}.code_min"]), int(inits[f"{name}.code_max"])) == (lo + zp, hi + zp)
        else:
            assert f"{name}.code_min" not in inits
    assert set(layer_codes_tensors(proto)) == set(deploy_layers(to_deploy(model)))


@pytest.mark.parametrize("method,why", [("asq", "ASQ activations"), ("lsq+post", "POST weights"),
                                        ("asq+pot", "ASQ activations and POT weights")])
def test_other_methods_refused_naming_the_layer(tmp_path, samples, method, why):
    model = quantize_(_float_model(), QuantConfig(method, 3))  # refused before any calibration is needed
    with pytest.raises(QdqError) as info:
        export_qdq(model, tmp_path / "m.onnx", torch.from_numpy(samples[0][:2]))
    msg = str(info.value)
    assert "'features.1.0'" in msg and why in msg and "--format qexport" in msg
    assert "'features.0.0'" not in msg and "'fc'" not in msg  # the 8-bit LSQ first and last layers qualify
    assert not (tmp_path / "m.onnx").exists()


def test_resnet_shared_quantizer_and_residuals():
    """A projection shortcut's quantizer and its block's first conv's have the same input and (after
    calibration) the same step: the exporter merges them into one node, which both layers read."""
    torch.manual_seed(0)
    model = ResNet(ConvBNReLU(3, 8, 3), (8, 16), (1, 1), 8, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(40, 3, 12, 12).numpy()
    q = quantize_model(model, QuantConfig("lsq", 3), x, 32)
    proto = export_qdq(q, None, torch.from_numpy(x[:2]))
    codes = layer_codes_tensors(proto)
    assert codes["layers.1.0.conv1"] == codes["layers.1.0.downsample.0"]
    report = check_qdq_parity(q, proto, x)
    assert report.passed, report.failures
    assert report.vs_deploy["sqnr_db"] == float("inf")


@pytest.mark.parametrize("shape", [(3, 5, 7, 7), (2, 4, 4, 4), (2, 3, 5, 3), (2, 2, 1, 1), (2, 3, 64, 64)])
def test_global_avg_pool_lowering_is_the_reference(shape, monkeypatch):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-8, 8, shape))).astype(np.float32)
    b = _Builder({"x"})
    _global_avg_pool(b, "pool/pool", "x", [None, *shape[1:]], "y")
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(b.nodes, "g", [info("x", onnx.TensorProto.FLOAT, [None, *shape[1:]])],
                                   [info("y", onnx.TensorProto.FLOAT, [None] * len(shape))], b.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, R.global_avg_pool(x))  # 64x64: 512 blocks, the ReduceSum form


def test_cli_convert_qdq_and_refusal(tmp_path):
    path = tmp_path / "w4_qdq.onnx"
    code, text = run_cli("convert", SAMPLE_MODEL, "--bits", 4, "--format", "qdq", "--fit-steps", 0, "--limit", 160,
                         "--calib-samples", 128, "-o", path)
    assert code == 0, text
    assert "lsq, 4-bit weights; standard ONNX (qdq)" in text and "parity: PASS" in text
    assert "parity (plain ONNX Runtime)" in text
    report = json.loads(path.with_suffix(".parity.json").read_text())
    assert report["passed"] and report["vs_deploy"]["sqnr_infinite"] and report["method"] == "lsq"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((1, 1, 28, 28), np.float32)})[0].shape == (1, 10)

    # the checkpoint convert wrote beside it: export it as it is
    code, text = run_cli("export", path.with_suffix(".pt"), "--format", "qdq", "--limit", 32, "-o", tmp_path / "again.onnx")
    assert code == 0 and "parity: PASS" in text, text
    assert onnx.load(str(tmp_path / "again.onnx")).graph == onnx.load(str(path)).graph  # deterministic
    code, text = run_cli("validate", path.with_suffix(".pt"), tmp_path / "again.onnx", "--limit", 32)
    assert code == 0 and "parity (plain ONNX Runtime)" in text and "parity: PASS" in text, text

    code, text = run_cli("convert", SAMPLE_MODEL, "--method", "asq+post", "--format", "qdq", "-o", tmp_path / "no.onnx")
    assert code == 2 and "--format qexport" in text and "ASQ activations and POST weights" in text, text
    assert not (tmp_path / "no.onnx").exists()
    code, text = run_cli("export", SAMPLE_MODEL, "--format", "qdq", "-o", tmp_path / "no.onnx")
    assert code == 2 and "float model" in text, text
    code, text = run_cli("export", "--help")
    assert code == 0 and "--format" in text
