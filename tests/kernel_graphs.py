"""Single-node ONNX models of the ``ai.qexport`` ops, built with onnx.helper, for kernel tests.

No onnx.checker: the op schemas are registered elsewhere (qexport.export), and these tests must
also build deliberately invalid nodes. Constant inputs become initializers (which the kernels
decode at session creation); the others become graph inputs, fed at run time.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
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
                            **{k: v for k, v in attrs.items() if v is not None})
    graph = helper.make_graph([node], f"{op_type}_test", graph_inputs, graph_outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSET_IMPORTS])
    model.ir_version = IR_VERSION
    return model


def feeds(inputs: Mapping[str, np.ndarray], constant: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The run-time feeds of a model built by single_node_model (the non-constant inputs)."""
    return {name: np.asarray(arr) for name, arr in inputs.items() if name not in constant}


def weighted_model(kind: str, fmt: str, inputs: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                   constant: Sequence[str] = ("W", "W_scale", "B"), **kw: Any) -> onnx.ModelProto:
    """A PostConv/PotConv/UniformConv (kind="conv") or *Gemm (kind="gemm") model; output Y."""
    op_type = fmt.capitalize() + ("Conv" if kind == "conv" else "Gemm")
    return single_node_model(op_type, inputs, [("Y", TensorProto.FLOAT)], attrs, constant, **kw)


def quantize_model(op_type: str, inputs: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                   constant: Sequence[str] = (), **kw: Any) -> onnx.ModelProto:
    """An AsqQuantize/LsqQuantize model; outputs Y (uint8 codes) and scale (float32)."""
    return single_node_model(op_type, inputs, [("Y", TensorProto.UINT8), ("scale", TensorProto.FLOAT)], attrs,
                             constant, **kw)


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()
