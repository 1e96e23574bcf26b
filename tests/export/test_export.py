"""Exporter: custom-domain nodes per layer, names, metadata, packing size, checker, determinism."""
import json

import numpy as np
import onnx
import pytest
import torch

from qexport.convert import quantize_model
from qexport.export import OPS, export_onnx
from qexport.models import build_model
from qexport.nn.deploy import deploy_layers, to_deploy
from qexport.quant import QuantConfig
from qexport.spec import reference as R


def _quantized(calib, method="asq+post", bits=3, width=16):
    torch.manual_seed(0)
    return quantize_model(build_model("small_cnn", width=width), QuantConfig(method, bits), calib, 32)


@pytest.mark.parametrize("method,bits", [("asq+post", 3), ("asq+post", 4), ("lsq+pot", 4), ("asq", 2), ("lsq", 8)])
def test_every_quantized_layer_is_two_custom_nodes(tmp_path, calib, method, bits):
    model = _quantized(calib, method, bits)
    # fuse=False: the exporter's own output, before qexport.export.passes folds each conv's ReLU and
    # the next quantizer into one node (tests/export/test_passes.py checks the fused form).
    proto = export_onnx(model, torch.from_numpy(calib[:2]), tmp_path / "m.onnx", meta={"qexport.method": method},
                        fuse=False)
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
    layers = deploy_layers(to_deploy(model))
    custom = {n.name: n for n in proto.graph.node if n.domain == R.DOMAIN}
    expected = {f"{name}/{role}" for name in layers for role in ("quantize", "op")}
    assert set(custom) == expected | {"pool/pool"}  # nn.AdaptiveAvgPool2d "pool" -> GlobalAvgPool
    assert custom["pool/pool"].op_type == "GlobalAvgPool"
    for name, layer in layers.items():
        op = custom[f"{name}/op"]
        assert op.op_type == OPS[op.op_type].onnx_name == layer.describe()["op"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in op.attribute}
        assert attrs["bits"] == [layer.bits] and attrs["weight_shape"] == layer.weight_shape
        assert attrs["format"].decode() == layer.fmt  # the codec by name: no op name per format
        quant = custom[f"{name}/quantize"]
        assert quant.op_type == ("AsqQuantize" if layer.quant.kind == "asq" else "LsqQuantize")
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]  # folded
    assert {(o.domain, o.version) for o in proto.opset_import} >= {(R.DOMAIN, 1)}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["qexport.method"] == method and set(json.loads(meta["qexport.bits"])) == set(layers)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_first_and_last_layers_are_8bit_uniform(tmp_path, calib):
    model = _quantized(calib)
    proto = export_onnx(model, torch.from_numpy(calib[:2]))
    bits = json.loads({p.key: p.value for p in proto.metadata_props}["qexport.bits"])
    order = [n for n, m in model.named_modules() if hasattr(m, "weight_quant")]
    for edge in (order[0], order[-1]):
        assert bits[edge]["bits"] == 8 and bits[edge]["weights"] == "uniform" and bits[edge]["act_bits"] == 8
    body = [bits[n] for n in order[1:-1]]
    assert body and all(v["weights"] == "post" and v["bits"] == 3 and v["act"] == "asq" for v in body)


def test_three_bit_file_is_about_a_tenth_of_float(tmp_path, calib):
    torch.manual_seed(0)
    float_model = build_model("small_cnn", width=32)
    float_path = tmp_path / "float.onnx"
    torch.onnx.export(float_model.eval(), (torch.from_numpy(calib[:2]),), str(float_path), dynamo=True, verbose=False,
                      external_data=False)
    q_path = tmp_path / "q.onnx"
    export_onnx(quantize_model(float_model, QuantConfig("asq+post", 3), calib, 32), torch.from_numpy(calib[:2]), q_path)
    ratio = q_path.stat().st_size / float_path.stat().st_size
    assert ratio < 0.15, ratio  # 3/32 of the weights, plus 8-bit first/last layers, scales and adapters


def test_export_is_byte_identical_across_runs(tmp_path, calib):
    model = _quantized(calib)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(model, torch.from_numpy(calib[:2]), a)
    export_onnx(model, torch.from_numpy(calib[:2]), b)
    assert a.read_bytes() == b.read_bytes()


def test_packed_weights_decode_to_the_models_integer_weights(calib):
    model = _quantized(calib, "asq+post", 4)
    proto = export_onnx(model, torch.from_numpy(calib[:2]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}
    for name, layer in model.named_modules():
        if not hasattr(layer, "weight_quant"):
            continue
        w_int, _ = layer.weight_quant.integer_weights(layer.weight)
        packed = inits[nodes[f"{name}/op"].input[2]]
        assert packed.dtype == np.uint8
        assert np.array_equal(R.decode_weights(packed, layer.weight_quant.fmt, layer.weight_quant.bits, w_int.shape), w_int)


def test_layers_sharing_one_quantizer_export_and_validate():
    """A residual block's first conv and its projection shortcut read the same tensor; with equal
    LSQ steps (calibration alone gives them the same) the exporter merges their two identical
    quantize nodes into one. Both layers then read the same codes: export and validate accept it
    (they find each layer's codes through the layer description, not through node names)."""
    import torch

    from qexport.models.common import ConvBNReLU
    from qexport.models.resnet import ResNet
    from qexport.lower import IntegerModel
    from qexport.nn import calibrate, quantize_
    from qexport.quant import QuantConfig
    from qexport.validate import check_parity

    torch.manual_seed(0)
    model = ResNet(ConvBNReLU(3, 8, 3), (8, 16), (1, 1), 8, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(24, 3, 12, 12)
    q = quantize_(model, QuantConfig("lsq", 4))
    calibrate(q, [x])
    proto = export_onnx(q, x[:2])
    description = IntegerModel.from_onnx(proto)
    codes = [spec.onnx.codes for spec in description.layers.values()]
    assert len(set(codes)) < len(codes), "expected two layers to share one quantizer's codes"
    report = check_parity(q, proto, x.numpy())
    assert report.passed, report.failures
    assert all(row.codes > 0 and row.mismatches == 0 for row in report.layers)


def test_file_holds_no_exporter_bookkeeping(calib, tmp_path):
    """No graph-level metadata (the torch exporter's graph_signature) and no node metadata: the
    file is the model and qexport's own description, nothing else."""
    import torch

    from qexport.models import build_model
    from qexport.nn import calibrate, quantize_
    from qexport.quant import QuantConfig

    model = quantize_(build_model("small_cnn"), QuantConfig("asq+post", 3))
    calibrate(model, [torch.from_numpy(calib[:32])])
    proto = export_onnx(model, torch.from_numpy(calib[:2]))
    assert not proto.graph.metadata_props and not any(n.metadata_props and n.op_type != "QConvFused"
                                                      for n in proto.graph.node)
