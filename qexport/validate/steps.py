"""What the ASQ adapters do at run time: the spread of each quantizer's per-sample step.

An adapter whose output never varies is LSQ with extra nodes. These functions measure the
per-sample step ``s' = s * beta(x)`` of every ASQ quantizer over a set of inputs: from a PyTorch
model (forward hooks) or from an ONNX file (the ``scale`` output of every ``AsqQuantize`` node
and the ``Q_scale`` output of every fused conv whose quantizer is ASQ).
"""
from __future__ import annotations

import math
import numpy as np
import onnx
import torch
from torch import nn

from ..export.passes import FUSED_QUANTIZE_KEY
from ..inputs import feeds, run, to_device, to_torch
from ..io import batch_size_for
from ..spec import reference as R


def sqnr_db(signal_sq: float, error_sq: float) -> float:
    """10 log10(sum x^2 / sum (x - q)^2) from the two sums; inf when there is no error."""
    return math.inf if error_sq == 0 else 10 * math.log10(max(signal_sq, 1e-300) / error_sq)


def spread(values: np.ndarray, against: np.ndarray | None = None) -> dict:
    """Statistics of per-sample steps: mean, std, cv (std/mean), min, max, 5th/95th percentiles,
    samples, and with ``against`` (a per-sample quantity, e.g. a brightness factor) the Pearson
    correlation with it (None when the steps are constant)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return {"samples": 0}
    mean, std = float(v.mean()), float(v.std())
    d = {"mean": mean, "std": std, "cv": std / mean if mean > 0 else None, "min": float(v.min()),
         "max": float(v.max()), "p05": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)),
         "samples": int(v.size)}
    if against is not None:
        d["corr"] = float(np.corrcoef(v, np.asarray(against, dtype=np.float64))[0, 1]) if std > 0 else None
    return d


def median_of(stats: dict[str, dict], key: str = "cv") -> float | None:
    """The median of ``key`` over a model's ASQ quantizers (None without any value)."""
    values = [s.get(key) for s in stats.values() if s.get(key) is not None]
    return float(np.median(values)) if values else None


def median_cv(stats: dict[str, dict]) -> float | None:
    """The median coefficient of variation over a model's ASQ quantizers (None without any)."""
    return median_of(stats, "cv")


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
        xt = to_torch(x)
        device = next(model.parameters()).device
        for start in range(0, len(xt), batch_size):
            run(model, to_device(xt[start:start + batch_size], device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: spread(np.concatenate(v)) for n, v in seen.items() if v}


def asq_scale_outputs(proto: onnx.ModelProto) -> dict[str, dict]:
    """{quantizer: {"output", "op_type", "beta_map"}} for every ASQ quantizer of an ONNX model.

    The quantizer is named after its AsqQuantize node, also when a fused conv absorbed it (the
    node named in the fused conv's metadata); outputs the graph does not produce (empty names)
    are left out. ``beta_map`` is "sigmoid2" for files written before the attribute existed.
    """
    found: dict[str, dict] = {}
    for node in proto.graph.node:
        if node.domain != R.DOMAIN:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "AsqQuantize":
            idx, name, beta_map = 1, node.name, attrs.get("beta_map")
        elif node.op_type.endswith("ConvFused") and attrs.get("quantizer") == "asq":
            meta = {p.key: p.value for p in node.metadata_props}
            idx, name, beta_map = 2, meta.get(FUSED_QUANTIZE_KEY, node.name), attrs.get("q_beta_map")
        else:
            continue
        if len(node.output) <= idx or not node.output[idx]:
            continue
        name = name or node.output[idx]
        found[name] = {"output": node.output[idx], "op_type": node.op_type, "beta_map": beta_map or "sigmoid2"}
    return found


def onnx_step_stats(proto: onnx.ModelProto, x: np.ndarray, against: np.ndarray | None = None,
                    batch_size: int = 500, session_factory=None) -> tuple[np.ndarray, dict[str, dict]]:
    """Run an ONNX model (ONNX Runtime with qexport's op library) on ``x`` and return its first
    output and {quantizer: spread of its per-sample step (see ``spread``), op_type, beta_map}."""
    from ..runtime import make_session

    outputs = asq_scale_outputs(proto)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for q in outputs.values():
        if q["output"] not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(q["output"], onnx.TensorProto.FLOAT, None))
            existing.add(q["output"])
    session = (session_factory or make_session)(model.SerializeToString())
    in_names = [i.name for i in session.get_inputs()]
    batch_size = batch_size_for(x, batch_size)
    fetch = [proto.graph.output[0].name] + [q["output"] for q in outputs.values()]
    first, seen = [], {name: [] for name in outputs}
    for start in range(0, len(x), batch_size):
        result = session.run(fetch, feeds(in_names, x[start:start + batch_size]))
        first.append(result[0])
        for name, value in zip(outputs, result[1:]):
            seen[name].append(np.asarray(value).reshape(-1))
    stats = {}
    for name, q in outputs.items():
        values = np.concatenate(seen[name])
        if len(values) != len(x):
            raise ValueError(f"{name}: output {q['output']} has {len(values)} values for {len(x)} samples; "
                             f"expected one step per sample")
        stats[name] = {"op_type": q["op_type"], "beta_map": q["beta_map"], **spread(values, against)}
    return np.concatenate(first), stats
