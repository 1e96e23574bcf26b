"""Quantized PyTorch model -> ONNX with ai.qexport custom-domain nodes (dynamo exporter)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

import onnx
import torch
from torch import nn

from .. import __version__
from ..inputs import input_names, tensors
from ..io import atomic_write_bytes
from ..lower.description import LAYERS_KEY
from ..lower.modules import deploy_layers, lower, to_deploy
from ..spec import reference as R
from ..lower.ops import OPS, TRANSLATIONS
from .passes import fuse_conv_blocks


class ExportError(RuntimeError):
    """The model could not be exported (the message says which layer or op and why)."""


def _module_of(node: onnx.NodeProto, suffixes: tuple[str, ...]) -> str | None:
    """Module path of the innermost module of one of these classes that emitted ``node``."""
    for prop in node.metadata_props:
        if prop.key != "namespace":
            continue
        for segment in reversed(prop.value.split("/")):
            path, _, cls = segment.partition(": ")
            if cls.endswith(suffixes):
                return path.strip()
    return None


def _finalize(proto: onnx.ModelProto, deploy: nn.Module, meta: dict[str, str]) -> None:
    """Names the custom nodes after their layers (``<layer>/op``, ``<layer>/quantize``), checks that
    every layer exported to one weighted node reading a quantizer's codes, and writes the layer
    description with each layer's place in the graph (``qexport.bits``, qexport.lower.description)."""
    layers = deploy_layers(deploy)
    ops: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        if node.domain != R.DOMAIN:
            continue
        if node.op_type not in OPS:
            raise ExportError(f"exported graph holds an unknown {R.DOMAIN} op {node.op_type}")
        if OPS[node.op_type].kind == "pool":
            node.name = f"{_module_of(node, ('.DeployGlobalAvgPool',)) or 'pool'}/pool"
            continue
        if OPS[node.op_type].kind == "activation":
            node.name = f"{_module_of(node, ('.DeployActivation',)) or 'act'}/{node.op_type.lower()}"
            continue
        layer = _module_of(node, (".DeployConv2d", ".DeployConv1d", ".DeployLinear"))
        if layer is None or layer not in layers:
            raise ExportError(f"cannot tell which layer emitted node {node.name} ({node.op_type})")
        if OPS[node.op_type].kind == "quantize":
            # Two layers whose quantizers are identical and read the same tensor (a residual
            # block's first conv and its shortcut) share one node: the exporter merges them.
            node.name = f"{layer}/quantize"
        else:
            node.name = f"{layer}/op"
            ops.setdefault(layer, []).append(node)
    quantized = {o for n in proto.graph.node if n.domain == R.DOMAIN and OPS[n.op_type].kind == "quantize"
                 for o in n.output}
    bad = [name for name in layers if len(ops.get(name, [])) != 1 or ops[name][0].input[0] not in quantized]
    if bad:
        raise ExportError(f"layers {bad} did not export to one weighted node reading a quantize node's codes")
    description = lower(deploy).bind(proto.graph)
    # Scopes and stack traces (with local file paths) are dropped: smaller, deterministic files;
    # so is the torch exporter's record of its own program (graph_signature: 12.6 kB of a 182 kB
    # ResNet-20 file, 2.7 kB of the small CNN's), which nothing reading the ONNX file uses.
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.graph.metadata_props[:]
    proto.producer_name = "qexport"
    proto.producer_version = __version__
    proto.doc_string = "Quantized by qexport; custom ops in domain ai.qexport (docs/ops.md)."
    entries = {"qexport.version": __version__, LAYERS_KEY: description.to_metadata(), **meta}
    del proto.metadata_props[:]
    for key in sorted(entries):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(entries[key])))


def export_onnx(model: nn.Module, example, path: str | os.PathLike | None = None, *,
                meta: dict[str, str] | None = None, fuse: bool = True) -> onnx.ModelProto:
    """Export a quantized model (QAT/calibrated, or already a deploy model) to ONNX.

    Args:
        model: a model after ``quantize_`` + ``calibrate``/training, or ``to_deploy``'s result.
        example: an input batch in the model's own convention (a tensor, or ``qexport.inputs.Inputs``
            for a model with several inputs: the ONNX inputs take their names); the batch
            dimension is exported as dynamic ("batch"), shared by every input.
        path: where to write the .onnx (atomically); None only returns the proto.
        meta: extra ``metadata_props`` (qexport.method, qexport.source, ...).
        fuse: fold each conv's ReLU, residual Add and following quantizer into one node
            (qexport.export.passes.fuse_conv_blocks); False keeps one quantize node and one op
            node per layer.

    Returns the checked ModelProto.
    """
    deploy, proto = trace_deploy(model, example)
    _finalize(proto, deploy, dict(meta or {}))
    if fuse:
        fuse_conv_blocks(proto)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        atomic_write_bytes(path, proto.SerializeToString(deterministic=True))
    return proto


def trace_deploy(model: nn.Module, example, error: type[Exception] = ExportError
                 ) -> tuple[nn.Module, onnx.ModelProto]:
    """(deploy model, its ONNX graph straight from torch.onnx.export): the ai.qexport torch ops
    translated to custom-domain nodes, the batch dimension dynamic ("batch"). Both export
    targets start from it. Failures raise ``error`` with the exporter's message."""
    deploy = model if deploy_layers(model) else to_deploy(model)
    deploy.eval()
    args = [a.detach().float() for a in tensors(example)]
    # a batch of 1 would be specialised to a static dimension
    args = [a if a.shape[0] >= 2 else a.expand(2, *a.shape[1:]).contiguous() for a in args]
    batch = torch.export.Dim("batch")
    with torch.no_grad(), quiet_exporter():
        try:
            program = torch.onnx.export(
                deploy, tuple(args), dynamo=True, custom_translation_table=TRANSLATIONS,
                dynamic_shapes=tuple({0: batch} for _ in args), input_names=input_names(example),
                output_names=["output"], verbose=False)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise error(f"torch.onnx.export failed: {exc}") from exc
    return deploy, program.model_proto


@contextlib.contextmanager
def quiet_exporter(*more_loggers: str):
    """The dynamo exporter prints progress and warns about torchvision: keep the CLI clean
    (stdout, warnings, and these loggers plus ``more_loggers`` at ERROR, restored after)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                               *more_loggers)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)

