"""Single-node ONNX models of the ``ai.qexport`` ops, built with onnx.helper, for kernel tests;
the bitwise comparison of their outputs; what QEXPORT_KERNEL_TRACE must report for each op and
path (docs/ops.md, "Kernel paths").

No onnx.checker: the op schemas are registered elsewhere (qexport.export), and these tests must
also build deliberately invalid nodes. Constant inputs become initializers (which the kernels
decode at session creation); the others become graph inputs, fed at run time.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "ai.qexport"
OPSET_IMPORTS = (("", 20), (DOMAIN, 1))
IR_VERSION = 10

_DTYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
           np.dtype(np.int64): TensorProto.INT64, np.dtype(np.float64): TensorProto.DOUBLE,
           np.dtype(np.int8): TensorProto.INT8}

WEIGHTED_INPUTS = ("X", "X_scale", "W", "W_scale", "B")
ASQ_INPUTS = ("X", "W1", "B1", "W2", "B2")


def _value_info(name: str, array: np.ndarray, free_shape: bool = False) -> onnx.ValueInfoProto:
    """A graph input of the array's dtype; its shape, or no shape at all (any rank) if free_shape."""
    return helper.make_tensor_value_info(name, _DTYPES[array.dtype], None if free_shape else list(array.shape))


def _empty_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 0


def single_node_model(op_type: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[tuple[str, int]],
                      attrs: Mapping[str, Any], constant: Sequence[str] = (), node_name: str = "node",
                      free_shapes: bool = False) -> onnx.ModelProto:
    """A model with one ``ai.qexport`` node.

    Args:
        inputs: name -> example array, in the node's input order (defines dtype and shape).
        outputs: (name, TensorProto dtype) of each output; shapes left unknown.
        attrs: node attributes (None values are left out).
        constant: names of inputs that become initializers instead of graph inputs.
        free_shapes: declare graph inputs without a shape, so that any rank can be fed.
    """
    graph_inputs, initializers = [], []
    for name, arr in inputs.items():
        arr = np.asarray(arr)
        if name in constant:
            initializers.append(numpy_helper.from_array(arr, name=name))
        else:
            graph_inputs.append(_value_info(name, arr, free_shapes))
    graph_outputs = [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs]
    node = helper.make_node(op_type, list(inputs), [name for name, _ in outputs], name=node_name, domain=DOMAIN,
                            **{k: v for k, v in attrs.items() if v is not None and not _empty_list(v)})
    for k, v in attrs.items():  # an empty list has no element to infer its type from: INTS
        if _empty_list(v):
            node.attribute.append(helper.make_attribute(k, [], attr_type=onnx.AttributeProto.INTS))
    graph = helper.make_graph([node], f"{op_type}_test", graph_inputs, graph_outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSET_IMPORTS])
    model.ir_version = IR_VERSION
    return model


def feeds(inputs: Mapping[str, np.ndarray], constant: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The run-time feeds of a model built by single_node_model (the non-constant inputs)."""
    return {name: np.asarray(arr) for name, arr in inputs.items() if name not in constant}


_KIND_SUFFIX = {"conv": "Conv", "gemm": "Gemm", "conv_fused": "ConvFused"}


def weighted_op(kind: str, fmt: str, attrs: Mapping[str, Any], v1: bool = False) -> tuple[str, dict]:
    """(op_type, node attributes) of a weighted node: QConv / QGemm / QConvFused with ``format``
    and ``bits`` as a list (an int becomes [bits]); with v1=True the version-1 <Fmt>Conv /
    <Fmt>Gemm / <Fmt>ConvFused, whose ``bits`` is one int."""
    attrs = dict(attrs)
    if v1:
        return fmt.capitalize() + _KIND_SUFFIX[kind], attrs
    bits = attrs.get("bits")
    if bits is not None and not isinstance(bits, (list, tuple, np.ndarray)):
        attrs["bits"] = [int(bits)]
    attrs.setdefault("format", fmt)
    return "Q" + _KIND_SUFFIX[kind], attrs


def weighted_model(kind: str, fmt: str, inputs: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                   constant: Sequence[str] = ("W", "W_scale", "B"), v1: bool = False, **kw: Any) -> onnx.ModelProto:
    """A QConv (kind="conv") or QGemm (kind="gemm") model of weight format ``fmt``; output Y.
    v1=True: the version-1 op of the format instead (PostConv, UniformGemm, ...)."""
    op_type, attrs = weighted_op(kind, fmt, attrs, v1)
    return single_node_model(op_type, inputs, [("Y", TensorProto.FLOAT)], attrs, constant, **kw)


def quantize_model(op_type: str, inputs: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                   constant: Sequence[str] = (), **kw: Any) -> onnx.ModelProto:
    """An AsqQuantize/LsqQuantize model; outputs Y (uint8 codes) and scale (float32)."""
    return single_node_model(op_type, inputs, [("Y", TensorProto.UINT8), ("scale", TensorProto.FLOAT)], attrs,
                             constant, **kw)


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def assert_bitwise_equal(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Same shape, dtype and bits: stronger than np.array_equal (it also tells -0.0 from +0.0).

    Only NaN payloads are not compared (a NaN is a NaN; its sign bit depends on the CPU).
    """
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if actual.dtype == np.float32:
        both_nan = np.isnan(actual) & np.isnan(expected)
        differ = (actual.view(np.uint32) != expected.view(np.uint32)) & ~both_nan
    else:
        differ = actual != expected
    if differ.any():
        first = tuple(np.argwhere(differ)[0])
        pytest.fail(f"{what}: {int(differ.sum())} elements differ, first at {first}: got {actual[first]!r}, "
                    f"expected {expected[first]!r}")


# --------------------------------------------------------------------------- kernel paths
#: The code each part of an op runs when a path is selected (docs/ops.md, "Kernel paths"):
#: (conv, gemm, means and quantizer). A part run by another path's code reports reason=not_in_path.
PATH_PARTS = {  # conv, gemm, means and quantizer, activations (Sigmoid, Silu: portable everywhere)
    "scalar": ("scalar", "scalar", "scalar", "scalar"),
    "avx2": ("avx2", "avx2", "avx2", "scalar"),
    "avx512vnni": ("avx512vnni", "avx512vnni", "avx512vnni", "scalar"),
    "amx": ("amx", "avx512vnni", "avx512vnni", "scalar"),
    "neon": ("neon", "scalar", "neon", "scalar"),
    "dotprod": ("dotprod", "dotprod", "dotprod", "scalar"),
}
#: Why a node runs the portable code whatever the path: these depend on the node, not on the path.
PORTABLE_REASONS = ("int64_accumulator", "input_too_large")
#: The depthwise conv kernel each path runs (a conv with one input channel per group reports it
#: with reason=depthwise; docs/ops.md, "Kernel paths").
DEPTHWISE_PATH = {"scalar": "scalar", "avx2": "avx2", "avx512vnni": "avx512vnni", "amx": "avx512vnni",
                  "neon": "neon", "dotprod": "dotprod"}


def op_part(op_type: str) -> int:
    """The part of PATH_PARTS an op's kernel reports: 0 conv (QConv, QConvFused, <Fmt>Conv...), 1 gemm,
    2 means and quantizer (the quantize ops, GlobalAvgPool), 3 activations (Sigmoid, Silu)."""
    if op_type.endswith(("Conv", "ConvFused")):
        return 0
    if op_type.endswith("Gemm"):
        return 1
    if op_type.endswith(("Quantize", "Pool")):
        return 2
    if op_type in ("Sigmoid", "Silu"):
        return 3  # one portable float64 loop on every path (PATH_PARTS' last column: scalar)
    raise ValueError(f"not an ai.qexport op: {op_type}")


def expected_path(selected: str, op_type: str) -> str:
    """The path whose code a kernel of ``op_type`` runs when ``selected`` is forced (or chosen)."""
    return PATH_PARTS[selected][op_part(op_type)]


def check_trace(lines: Sequence[Any], selected: str) -> None:
    """Every kernel-path line (qexport.runtime.parse_kernel_trace) says that its kernel ran the
    selected path's code for its part, or the portable code for a reason of its node, and says why
    whenever the path it ran is not the selected one."""
    for line in lines:
        assert line.selected == selected, f"{line}: forced {selected}"
        want = expected_path(selected, line.op)
        if line.reason == "depthwise":
            assert op_part(line.op) == 0 and line.path == DEPTHWISE_PATH[selected], f"{line}: forced {selected}"
        elif line.path == want:
            assert line.reason == (None if want == selected else "not_in_path"), line
        else:
            assert line.path == "scalar" and line.reason in PORTABLE_REASONS, f"{line}: expected path={want}"
