"""qexport.export.passes.fuse_conv_blocks: the fused graph computes the same bits as the unfused one.

A small ResNet (BasicBlocks with an identity and a projection shortcut; the tiny_resnet fixture of
tests/conftest.py) is exported fused (the exporter's default) and unfused; both run in ONNX Runtime
on every kernel path, and every output and every layer's activation codes must be bit-identical.
(tests/validate/test_parity.py: qexport.validate finds the codes of quantizers folded into fused
convs.)
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qexport.export.passes import FUSED_QUANTIZE_KEY, fuse_conv_blocks, quantize_codes_tensor
from qexport.nn.deploy import deploy_layers, to_deploy
from qexport.runtime import KERNEL_ISA_ENV, KERNEL_TRACE_ENV, kernel_isas, make_session, parse_kernel_trace
from qexport.spec import reference as R

from kernel_graphs import check_trace


def _with_code_outputs(proto: onnx.ModelProto, layers) -> tuple[bytes, list[str]]:
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    names = []
    for layer in layers:
        codes = quantize_codes_tensor(model.graph, f"{layer}/quantize")
        assert codes is not None, layer
        names.append(codes)
        if codes not in {o.name for o in model.graph.output}:
            model.graph.output.append(helper.make_tensor_value_info(codes, TensorProto.UINT8, None))
    return model.SerializeToString(), names


def test_fused_graph_structure(tiny_resnet):
    q, _, fused, unfused = tiny_resnet
    ops = [n.op_type for n in fused.graph.node]
    assert "Relu" not in ops and "Add" not in ops  # every ReLU and residual Add went into a conv
    assert ops.count("QConvFused") >= 3
    assert len(fused.graph.node) < len(unfused.graph.node)
    layers = deploy_layers(to_deploy(q))
    folded = {p.value for n in fused.graph.node for p in n.metadata_props if p.key == FUSED_QUANTIZE_KEY}
    present = {n.name for n in fused.graph.node if n.op_type.endswith("Quantize")}
    assert folded | present == {f"{name}/quantize" for name in layers}
    assert not folded & present
    assert {f"{name}/op" for name in layers} <= {n.name for n in fused.graph.node}
    onnx.checker.check_model(fused, full_check=True)
    again = onnx.ModelProto()
    again.CopyFrom(fused)
    assert fuse_conv_blocks(again) == 0  # nothing left to fuse


@pytest.mark.parametrize("isa", kernel_isas())
def test_fused_and_unfused_give_identical_bits(tiny_resnet, isa, monkeypatch, capfd):
    q, x, fused, unfused = tiny_resnet
    monkeypatch.setenv(KERNEL_ISA_ENV, isa)
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    layers = list(deploy_layers(to_deploy(q)))
    results = []
    for proto in (fused, unfused):
        data, code_names = _with_code_outputs(proto, layers)
        sess = make_session(data, threads=2)
        names = [o.name for o in sess.get_outputs()]
        for batch in (x[:5], x[5:6]):  # several samples, and the single-image split
            out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: batch})))
            results.append([out[proto.graph.output[0].name]] + [out[c] for c in code_names])
    n = len(results) // 2
    for a, b in zip(results[:n], results[n:]):
        for i, (u, v) in enumerate(zip(a, b)):
            assert u.dtype == v.dtype and np.array_equal(u.view(np.uint8), v.view(np.uint8)), f"output {i} differs"
    lines = parse_kernel_trace(capfd.readouterr().err)  # every node of both graphs ran the forced path
    assert {line.node for line in lines} == {node.name for g in (fused, unfused) for node in g.graph.node
                                             if node.domain == R.DOMAIN}
    check_trace(lines, isa)


def _graph(nodes, inputs, outputs, value_info=(), initializers=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers), value_info=list(value_info))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(R.DOMAIN, 1)])
    m.ir_version = 10
    return m


def test_add_with_broadcasting_is_not_fused():
    """The fused op adds a residual of the conv's exact shape: a broadcasting Add stays an Add."""
    f, u = TensorProto.FLOAT, TensorProto.UINT8
    conv = helper.make_node("PostConv", ["x", "xs", "w", "ws", "b"], ["y"], domain=R.DOMAIN, name="c/op",
                            bits=4, act_bits=4, act_zero_point=0, weight_shape=[2, 1, 1, 1])
    add = helper.make_node("Add", ["y", "r"], ["z"])
    relu = helper.make_node("Relu", ["z"], ["out"])
    m = _graph([conv, add, relu],
               [helper.make_tensor_value_info("x", u, [1, 1, 3, 3]), helper.make_tensor_value_info("xs", f, [1]),
                helper.make_tensor_value_info("w", u, [1]), helper.make_tensor_value_info("ws", f, [2]),
                helper.make_tensor_value_info("b", f, [2]), helper.make_tensor_value_info("r", f, [1, 2, 1, 1])],
               [helper.make_tensor_value_info("out", f, [1, 2, 3, 3])],
               [helper.make_tensor_value_info("y", f, [1, 2, 3, 3]), helper.make_tensor_value_info("z", f, [1, 2, 3, 3])])
    assert fuse_conv_blocks(m) == 0
    assert [n.op_type for n in m.graph.node] == ["PostConv", "Add", "Relu"]


def test_relu_only_becomes_the_conv_attribute():
    f, u = TensorProto.FLOAT, TensorProto.UINT8
    conv = helper.make_node("PotConv", ["x", "xs", "w", "ws", "b"], ["y"], domain=R.DOMAIN, name="c/op",
                            bits=3, act_bits=4, act_zero_point=0, weight_shape=[2, 1, 1, 1], relu=0)
    relu = helper.make_node("Relu", ["y"], ["out"])
    m = _graph([conv, relu],
               [helper.make_tensor_value_info(n, t, None) for n, t in (("x", u), ("xs", f), ("w", u), ("ws", f), ("b", f))],
               [helper.make_tensor_value_info("out", f, None)])
    assert fuse_conv_blocks(m) == 1
    (node,) = m.graph.node
    assert node.op_type == "PotConv" and list(node.output) == ["out"]
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute}["relu"] == 1
