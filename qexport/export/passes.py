"""ONNX-level passes over exported qexport graphs.

``fuse_conv_blocks`` rewrites each ai.qexport conv with what follows it into one node, so that
the runtime makes fewer passes over memory (docs/performance.md):

* ``conv -> Relu`` (the Relu the only consumer): the conv's own ``relu`` attribute;
* ``conv -> Add(., R) [-> Relu] [-> quantizer]``: a ``QConvFused`` node with the residual R;
* ``conv [-> Relu] -> quantizer`` (an AsqQuantize / LsqQuantize reading the conv's output):
  a ``QConvFused`` node whose outputs Q / Q_scale are the quantizer's codes and scale. Its
  float output Y is kept only when another node (a residual Add, a pool, a second quantizer)
  or the graph output reads it.

Every rewrite is exact: ``reference.qconv_fused`` is defined as the composition of the ops it
replaces (the ReLU is the one of docs/ops.md, ``y < 0 ? 0 : y``, which ONNX Relu equals on every
value but NaN). The fused node keeps the conv's name (``<layer>/op``); a quantizer folded into it
is recorded in the node's metadata (``qexport.quantize`` = ``<layer>/quantize``) and its codes
are the node's output 1, which is where qexport.validate finds them.
"""
from __future__ import annotations

import onnx
from onnx import helper

from ..spec import reference as R

__all__ = ["FUSED_QUANTIZE_KEY", "fuse_conv_blocks", "quantize_codes_tensor"]

#: Node metadata key naming the quantize node folded into a fused conv.
FUSED_QUANTIZE_KEY = "qexport.quantize"

#: conv op -> its fused op (the version-1 ops too, for graphs built from older files).
_CONVS = {"QConv": "QConvFused", "PostConv": "PostConvFused", "PotConv": "PotConvFused",
          "UniformConv": "UniformConvFused"}
_QUANTIZERS = {"AsqQuantize": "asq", "LsqQuantize": "lsq"}


def _shape(vi: onnx.ValueInfoProto) -> tuple | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            return None
    return tuple(dims)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Stable topological order (each node as early as its inputs allow, ties in given order)."""
    done, out, pending = set(available), [], list(nodes)
    while pending:
        rest = []
        for node in pending:
            if all(not i or i in done for i in node.input):
                out.append(node)
                done.update(o for o in node.output if o)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("fuse_conv_blocks: the graph has a cycle or a missing input")
        pending = rest
    return out


def fuse_conv_blocks(proto: onnx.ModelProto) -> int:
    """Fuse in place (see the module docstring); returns the number of nodes removed."""
    graph = proto.graph
    nodes = list(graph.node)
    graph_outputs = {o.name for o in graph.output}
    shapes = {vi.name: _shape(vi) for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)

    def sole_consumer(name: str, op_type: str, domain: str = "") -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        if name in graph_outputs or len(users) != 1:
            return None
        user = users[0]
        return user if user.op_type == op_type and user.domain == domain else None

    removed: set[int] = set()
    replaced: dict[int, onnx.NodeProto] = {}
    for conv in nodes:
        if conv.domain != R.DOMAIN or conv.op_type not in _CONVS or id(conv) in removed:
            continue
        attrs = _attrs(conv)
        t = conv.output[0]
        absorbed: list[onnx.NodeProto] = []
        residual, relu = "", int(attrs.get("relu", 0))
        add = sole_consumer(t, "Add")
        if add is not None and not relu and len(add.input) == 2:
            other = add.input[1] if add.input[0] == t else add.input[0]
            if other != t and shapes.get(t) is not None and shapes.get(t) == shapes.get(other):
                residual, t = other, add.output[0]
                absorbed.append(add)
        relu_node = sole_consumer(t, "Relu")
        if relu_node is not None:
            relu, t = 1, relu_node.output[0]
            absorbed.append(relu_node)
        quant = next((n for n in consumers.get(t, []) if n.domain == R.DOMAIN and n.op_type in _QUANTIZERS
                      and n.input[0] == t and id(n) not in removed), None)
        if not absorbed and quant is None:
            continue
        if not residual and quant is None:  # conv -> Relu: the conv's relu attribute
            _set_int_attr(conv, "relu", relu)
            conv.output[0] = t
            removed.update(id(n) for n in absorbed)
            continue
        y_needed = t in graph_outputs or any(n is not quant for n in consumers.get(t, []))
        inputs = list(conv.input[:5]) + [residual]
        if quant is not None and _QUANTIZERS[quant.op_type] == "asq":
            inputs += list(quant.input[1:5])
        while inputs and not inputs[-1]:
            inputs.pop()
        outputs = [t if y_needed else ""]
        if quant is not None:
            outputs += list(quant.output[:2])
        fused = _fused_node(conv, inputs, outputs, relu, quant)
        if quant is not None:
            absorbed.append(quant)
        removed.update(id(n) for n in absorbed)
        replaced[id(conv)] = fused
        # Later fusions see the fused node as the consumer of the tensors it reads.
        for name in inputs:
            if name:
                users = consumers.setdefault(name, [])
                users[:] = [fused if u is conv else u for u in users if id(u) not in removed]
                if fused not in users:
                    users.append(fused)

    if not removed:
        return 0
    new_nodes = [replaced.get(id(n), n) for n in nodes if id(n) not in removed]
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    new_nodes = _topological(new_nodes, available)
    del graph.node[:]
    graph.node.extend(new_nodes)
    live = {o for n in new_nodes for o in n.output if o}
    keep = [vi for vi in graph.value_info if vi.name in live]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    return len(removed)


def _fused_node(conv: onnx.NodeProto, inputs: list[str], outputs: list[str], relu: int,
                quant: onnx.NodeProto | None) -> onnx.NodeProto:
    """The fused node of ``conv`` (its attributes, ``relu``, and the quantizer's as ``q_*``)."""
    fused = helper.make_node(_CONVS[conv.op_type], inputs, outputs, name=conv.name, domain=R.DOMAIN)
    for a in conv.attribute:
        if a.name != "relu":
            fused.attribute.append(a)
    fused.attribute.append(helper.make_attribute("relu", relu))
    if quant is None:
        return fused
    qa = _attrs(quant)
    fused.attribute.extend([
        helper.make_attribute("quantizer", _QUANTIZERS[quant.op_type]),
        helper.make_attribute("q_bits", int(qa["bits"])),
        helper.make_attribute("q_signed", int(qa["signed"])),
        helper.make_attribute("q_step", float(qa["step"])),
    ])
    for name in ("beta_map", "groups"):  # AsqQuantize's optional attributes, when present
        if name in qa:
            fused.attribute.append(helper.make_attribute("q_" + name, qa[name]))
    fused.metadata_props.append(onnx.StringStringEntryProto(key=FUSED_QUANTIZE_KEY, value=quant.name))
    return fused


def _set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def quantize_codes_tensor(graph: onnx.GraphProto, quantize_node: str) -> str | None:
    """The tensor holding the codes of the quantize node named ``quantize_node``: its output 0,
    or output 1 of the fused conv it was folded into; None if neither exists."""
    for node in graph.node:
        if node.name == quantize_node and node.op_type in _QUANTIZERS:
            return node.output[0]
        for prop in node.metadata_props:
            if prop.key == FUSED_QUANTIZE_KEY and prop.value == quantize_node and len(node.output) > 1:
                return node.output[1]
    return None
