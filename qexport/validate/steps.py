"""What the ASQ adapters do at run time: the spread of each quantizer's per-sample step.

An adapter whose output never varies is LSQ with extra nodes. These functions measure the
per-sample step ``s' = s * beta(x)`` of every ASQ quantizer over a set of inputs: from a PyTorch
model (forward hooks) or from an ONNX file (the ``scale`` output of every ``AsqQuantize`` node
and the ``Q_scale`` output of every fused conv whose quantizer is ASQ).
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from ..export.passes import FUSED_QUANTIZE_KEY
from ..quant import reference as R


def spread(values: np.ndarray) -> dict:
    """std/mean (the coefficient of variation), min, max and mean of per-sample steps."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = float(v.mean()) if v.size else float("nan")
    return {"cv": float(v.std() / mean) if v.size and mean else float("nan"), "min": float(v.min(initial=np.inf)),
            "max": float(v.max(initial=-np.inf)), "mean": mean, "samples": int(v.size)}


def median_cv(stats: dict[str, dict]) -> float | None:
    """The median coefficient of variation over a model's ASQ quantizers (None without any)."""
    return float(np.median([s["cv"] for s in stats.values()])) if stats else None


@torch.no_grad()
def torch_step_stats(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 500) -> dict[str, dict]:
    """{quantizer module name: spread of beta} of every ASQ quantizer of a PyTorch model on ``x``."""
    from ..quant.asq import AsqActQuantizer

    quants = {n: m for n, m in model.named_modules() if isinstance(m, AsqActQuantizer)}
    if not quants:
        return {}
    seen: dict[str, list[np.ndarray]] = {n: [] for n in quants}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen[n].append(mod.factor(inp[0]).float().cpu().numpy()))
             for n, m in quants.items()]
    was_training = model.training
    model.eval()
    try:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x
        device = next(model.parameters()).device
        for start in range(0, len(xt), batch_size):
            model(xt[start:start + batch_size].to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: spread(np.concatenate(v)) for n, v in seen.items() if v}


def asq_scale_outputs(proto: onnx.ModelProto) -> dict[str, str]:
    """{node name: name of its per-sample step output} for every ASQ quantizer of an ONNX model."""
    found = {}
    for node in proto.graph.node:
        if node.domain != R.DOMAIN:
            continue
        if node.op_type == "AsqQuantize" and len(node.output) > 1 and node.output[1]:
            found[node.name] = node.output[1]
        elif node.op_type.endswith("ConvFused") and len(node.output) > 2 and node.output[2]:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("quantizer") in (b"asq", "asq"):  # named after the quantize node it absorbed
                meta = {p.key: p.value for p in node.metadata_props}
                found[meta.get(FUSED_QUANTIZE_KEY, node.name)] = node.output[2]
    return found


def onnx_step_stats(proto: onnx.ModelProto, x: np.ndarray, batch_size: int = 500,
                    session_factory=None) -> dict[str, dict]:
    """{node name: spread of its per-sample step} of every ASQ quantizer of an ONNX model on ``x``,
    run by ONNX Runtime with qexport's op library."""
    from ..runtime import make_session

    outputs = asq_scale_outputs(proto)
    if not outputs:
        return {}
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for name in outputs.values():
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = (session_factory or make_session)(model.SerializeToString())
    input_name = session.get_inputs()[0].name
    wanted = list(outputs.values())
    seen: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for start in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)
        for name, value in zip(wanted, session.run(wanted, {input_name: xb})):
            seen[name].append(value)
    return {node: spread(np.concatenate(seen[out])) for node, out in outputs.items()}
