"""Parity: does ONNX Runtime + the kernel library compute what PyTorch computed?

Three computations see the same inputs, batch by batch:

* the trained model (fake quantization, BatchNorm separate): what the user trained;
* the deploy model (``to_deploy``): BatchNorm folded, integers from the numpy reference;
* the ONNX model in onnxruntime with the qexport library.

Every quantized layer's activation codes (the quantize node's output) and the packed weights
are compared between deploy and ONNX (they must be identical), and the outputs are compared
to both PyTorch models (max abs/rel error, top-1 agreement, SQNR).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn

from ..inputs import bind_inputs, feeds, run as run_model, to_torch
from ..io import batch_size_for
from ..lower.description import IntegerModel
from ..lower.modules import deploy_layers, to_deploy
from ..spec import reference as R
from .steps import asq_scale_outputs, spread, sqnr_db


@dataclass
class Tolerances:
    """What validate accepts. Defaults are strict: integer codes are identical, top-1 agrees.

    Output errors are also measured in *output steps*: the resolution of the layer that
    produces the model's output: per sample and output channel, its input step times that
    channel's weight scale, the change of the output when one accumulator unit changes). ONNX against the integer
    deploy model may differ by at most ``max_output_steps`` of them (float rounding of the
    epilogue, far below one code). The trained (fake-quantized) model is the reference the
    user trained; ONNX's top-1 agreement with it below ``min_reference_agreement`` is reported
    with its cause (the first layer whose codes differ between the trained and the integer
    model), never passed over silently."""

    max_code_mismatch_rate: float = 0.0  # per layer, fraction of codes that may differ
    max_code_diff: int = 1  # largest |code difference| tolerated among those
    min_top1_agreement: float = 1.0  # ONNX vs deploy model
    min_sqnr_db: float = 40.0  # ONNX output vs deploy model output
    max_output_steps: float = 0.5  # ONNX vs deploy model, in output steps (see above)
    min_reference_agreement: float = 0.999  # ONNX vs trained model: below it, the report says why


@dataclass
class LayerParity:
    name: str
    op: str
    weights: str
    bits: int
    act: str
    act_bits: int
    codes: int = 0
    mismatches: int = 0
    max_diff: int = 0
    weight_mismatches: int = 0
    # codes of the trained (fake-quantized) model that differ from the integer model's, of
    # trained_codes compared (-1: not compared; see compare_runs's diagnose_below)
    trained_mismatches: int = -1
    trained_codes: int = 0

    @property
    def rate(self) -> float:
        return self.mismatches / self.codes if self.codes else 0.0


@dataclass
class OutputCompare:
    """ONNX output against a reference output."""

    max_abs: float = 0.0
    max_ref: float = 0.0
    sq_ref: float = 0.0
    sq_err: float = 0.0
    agree: int = 0
    count: int = 0
    max_steps: float | None = 0.0  # largest error in output steps (None: no output step known)

    def update(self, ref: np.ndarray, out: np.ndarray, step: np.ndarray | None = None) -> None:
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        err = out64 - ref64
        self.max_abs = max(self.max_abs, float(np.abs(err).max(initial=0.0)))
        if step is None or self.max_steps is None:
            self.max_steps = None
        elif err.size:
            step = step.reshape(step.shape + (1,) * (err.ndim - step.ndim))
            self.max_steps = max(self.max_steps, float((np.abs(err) / np.maximum(step, 1e-300)).max()))
        self.max_ref = max(self.max_ref, float(np.abs(ref64).max(initial=0.0)))
        self.sq_ref += float((ref64**2).sum())
        self.sq_err += float((err**2).sum())
        if ref.ndim == 2:
            self.agree += int((ref.argmax(1) == out.argmax(1)).sum())
        self.count += ref.shape[0]

    def summary(self) -> dict:
        sqnr = sqnr_db(self.sq_ref, self.sq_err)
        return {"max_abs_err": self.max_abs, "max_rel_err": self.max_abs / self.max_ref if self.max_ref else 0.0,
                "top1_agreement": self.agree / self.count if self.count else 1.0, "sqnr_db": sqnr,
                "max_err_output_steps": self.max_steps}


@dataclass
class ParityReport:
    samples: int
    layers: list[LayerParity]
    vs_deploy: dict
    vs_trained: dict
    accuracy: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    tolerances: dict = field(default_factory=dict)
    quant: dict = field(default_factory=dict)  # method, bits, act_bits of the ONNX model (its qexport.config)
    # ONNX side: {AsqQuantize node: spread of its per-sample step over these samples} (validate.steps)
    asq_steps: dict = field(default_factory=dict)
    # Fidelity to the float model (convert of a float model): top-1 agreement and output SQNR on
    # samples not used to calibrate/fit, for the calibrated and the fitted model.
    fidelity: dict = field(default_factory=dict)
    # The first layer, in forward order, whose ONNX codes differ from the integer model's
    # ({"layer", "mismatches", "codes", "max_diff"}; None: every code equal). Later layers inherit it.
    first_divergence: dict | None = None
    # The same between the trained (fake-quantized) model and the integer model (None: equal or not compared).
    first_trained_divergence: dict | None = None
    # What the reader must know although parity passed (e.g. why agreement with the trained model is low).
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        """Plain JSON: with the versions that produced it, the method/bits (when known) and the UTC
        time it was written. An infinite SQNR (identical outputs) is ``null`` with
        ``sqnr_infinite: true``, so that strict JSON readers accept the file."""
        from .. import __version__

        d = asdict(self)
        quant = d.pop("quant")
        d["passed"] = self.passed
        for layer, src in zip(d["layers"], self.layers):
            layer["mismatch_rate"] = src.rate
        for block in (d["vs_deploy"], d["vs_trained"]):
            infinite = isinstance(block.get("sqnr_db"), float) and math.isinf(block["sqnr_db"])
            block["sqnr_infinite"] = infinite
            if infinite:
                block["sqnr_db"] = None
        d.update({k: quant[k] for k in ("method", "bits", "act_bits") if quant.get(k) is not None})
        d["qexport_version"] = __version__
        d["onnxruntime_version"] = _onnxruntime_version()
        d["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return d


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return None


def _quant_of(proto: onnx.ModelProto) -> dict:
    """method/bits/act_bits from the model's ``qexport.config`` metadata (written by export); {} if absent."""
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        config = json.loads(meta.get("qexport.config", "{}"))
    except ValueError:
        return {}
    if not isinstance(config, dict):
        return {}
    if config.get("bits") is not None and config.get("act_bits") is None:
        config["act_bits"] = config["bits"]
    return {k: config[k] for k in ("method", "bits", "act_bits") if config.get(k) is not None}


def _onnx_with_code_outputs(proto: onnx.ModelProto, description: IntegerModel) -> bytes:
    """A copy of the model that also outputs each layer's activation codes (the tensor its
    weighted node reads, from the file's layer description) and every ASQ quantizer's step."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for scale in (q["output"] for q in asq_scale_outputs(model).values()):
        if scale not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(scale, onnx.TensorProto.FLOAT, None))
            existing.add(scale)
    for spec in description.layers.values():
        if spec.onnx.codes not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(spec.onnx.codes, onnx.TensorProto.UINT8, None))
            existing.add(spec.onnx.codes)
    return model.SerializeToString()


def _description(proto: onnx.ModelProto, deploy: nn.Module) -> IntegerModel:
    """The file's layer description, checked against the model's layers and the graph."""
    description = IntegerModel.from_onnx(proto)
    ours, theirs = set(deploy_layers(deploy)), set(description.layers)
    if ours != theirs:
        raise ValueError(f"the ONNX model's layers differ from the PyTorch model's (only in PyTorch: "
                         f"{sorted(ours - theirs)[:5]}, only in ONNX: {sorted(theirs - ours)[:5]}): "
                         "was it exported from this model?")
    tensors = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.initializer}
    for name, spec in description.layers.items():
        if spec.onnx.codes not in tensors:
            raise ValueError(f"layer {name}: the ONNX model has no tensor {spec.onnx.codes!r} (its codes)")
    return description


def _check_weights(proto: onnx.ModelProto, deploy: nn.Module, description: IntegerModel,
                   rows: dict[str, LayerParity]) -> list[str]:
    """The packed weights in the file decode to the deploy model's integer weights; returns the
    layers whose packed weights are not valid at all (the kernels would refuse them)."""
    invalid: list[str] = []
    inits = {i.name: i for i in proto.graph.initializer}
    for name, layer in deploy_layers(deploy).items():
        init = inits.get(description.layers[name].onnx.weights)
        if init is None:
            rows[name].weight_mismatches = -1  # not a constant initializer: cannot check
            continue
        ours = R.decode_weights(layer.packed.numpy(), layer.fmt, layer.bits, layer.weight_shape)
        try:
            theirs = R.decode_weights(onnx.numpy_helper.to_array(init), layer.fmt, layer.bits, layer.weight_shape)
        except ValueError as exc:
            rows[name].weight_mismatches = ours.size
            invalid.append(f"{name}: the file's packed weights are invalid ({exc})")
            continue
        rows[name].weight_mismatches = int((ours != theirs).sum())
    return invalid


@torch.no_grad()
def top1(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of a PyTorch model on (x, y)."""
    model.eval()
    batch_size = batch_size_for(x, batch_size)
    correct = 0
    for start in range(0, len(x), batch_size):
        out = run_model(model, x[start : start + batch_size])
        correct += int((out.argmax(1).numpy() == y[start : start + batch_size]).sum())
    return correct / max(1, len(x))


@dataclass
class _Run:
    """What running the three computations side by side measured."""

    vs_deploy: OutputCompare = field(default_factory=OutputCompare)
    vs_trained: OutputCompare = field(default_factory=OutputCompare)
    correct: dict = field(default_factory=lambda: {"torch": 0, "deploy": 0, "onnx": 0})
    extra: dict = field(default_factory=dict)  # tensor name -> list of its values per batch
    order: list = field(default_factory=list)  # the quantized layers in forward order
    output_layer: str | None = None  # the layer whose output is the model's output (its step: output steps)
    disagree: list = field(default_factory=list)  # samples whose top-1 differs between ONNX and the trained model
    diagnosed: int = 0  # of those, how many the trained model's codes were compared on


def _trained_codes_hooks(model: nn.Module, captured: dict[str, np.ndarray], rows: dict[str, LayerParity]) -> list:
    """Hooks that count, per layer, the trained model's activation codes (``ActQuantizer.codes``)
    that differ from the integer model's in ``captured``."""
    from ..nn.layers import QuantMixin

    hooks = []
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantMixin) or name not in rows:
            continue
        quant = layer.act_quant
        rows[name].trained_mismatches = 0
        rows[name].trained_codes = 0

        def hook(mod, inp, out, name=name) -> None:
            ref = captured.get(name)
            if ref is None or not getattr(mod, "enabled", True):
                return
            ours = mod.codes(inp[0]).reshape(-1).numpy()
            if ours.size == ref.size:
                rows[name].trained_mismatches += int(np.count_nonzero(ours != ref.reshape(-1)))
                rows[name].trained_codes += ours.size

        hooks.append(quant.register_forward_hook(hook))
    return hooks


# Samples whose top-1 differs between ONNX and the trained model on which the two PyTorch
# models' codes are compared, to name where they part (``Tolerances.min_reference_agreement``).
DIAGNOSE_SAMPLES = 64


def compare_runs(model: nn.Module, deploy: nn.Module, session, main_output: str, codes: dict[str, str],
                 rows: dict[str, LayerParity], x: np.ndarray, y: np.ndarray | None, batch_size: int,
                 extra_outputs: tuple[str, ...] = (), progress: Callable[[int], None] | None = None,
                 diagnose_below: float = 0.999) -> _Run:
    """Run the deploy model, the trained model and the ONNX session on ``x`` batch by batch:
    compare each layer's codes (the deploy layer's quantizer output against the ONNX tensor
    ``codes[layer]``, counted into ``rows``) and the outputs (also in output steps: see
    ``Tolerances``); collect ``extra_outputs``. When ONNX's top-1 agrees with the trained model
    on fewer than ``diagnose_below`` of the samples, the trained model's own codes are compared
    with the integer model's on (up to ``DIAGNOSE_SAMPLES`` of) the samples that differ, into
    ``rows[*].trained_mismatches``."""
    layers = deploy_layers(deploy)
    in_names = [i.name for i in session.get_inputs()]
    out_names = [o.name for o in session.get_outputs()]
    captured: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    last: list = [None, None]  # (name, output) of the last quantized layer that ran

    def on_quant(mod, inp, out, key) -> None:
        captured[key] = out[0].numpy()
        scales[key] = out[1].numpy()

    def on_layer(mod, inp, out, key) -> None:
        last[0], last[1] = key, out

    hooks = [layer.quant.register_forward_hook(lambda mod, inp, out, key=name: on_quant(mod, inp, out, key))
             for name, layer in layers.items()]
    hooks += [layer.register_forward_hook(lambda mod, inp, out, key=name: on_layer(mod, inp, out, key))
              for name, layer in layers.items()]
    run = _Run(extra={name: [] for name in extra_outputs})
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            feed = feeds(in_names, xb)
            with torch.no_grad():
                captured.clear()
                last[0] = None
                y_deploy_t = run_model(deploy, xb)
                y_deploy = y_deploy_t.numpy()
                if not run.order:
                    run.order = list(captured)
                    if last[0] is not None and last[1] is y_deploy_t:
                        run.output_layer = last[0]
                y_trained = run_model(model, xb).numpy()
            step = None
            if run.output_layer is not None:  # (N, C): one accumulator unit of each output channel
                w_scale = layers[run.output_layer].w_scale.numpy().astype(np.float64).reshape(-1)
                per_sample = scales[run.output_layer].reshape(len(y_deploy), -1)[:, :1].astype(np.float64)
                if y_deploy.ndim >= 2 and y_deploy.shape[1] == len(w_scale):
                    step = per_sample * w_scale[None, :]
            results = dict(zip(out_names, session.run(None, feed)))
            y_onnx = results[main_output]
            for name, row in rows.items():
                ours, theirs = captured[name], results[codes[name]]
                if ours.shape != theirs.shape:
                    raise ValueError(f"layer {name}: code shapes differ, PyTorch {ours.shape} vs ONNX {theirs.shape}")
                row.codes += ours.size
                differ = int(np.count_nonzero(ours != theirs))
                if differ:  # the size of the difference only when there is one (most batches: none)
                    row.mismatches += differ
                    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
                    row.max_diff = max(row.max_diff, int(diff.max(initial=0)))
            for name in extra_outputs:
                run.extra[name].append(results[name])
            run.vs_deploy.update(y_deploy, y_onnx, step)
            run.vs_trained.update(y_trained, y_onnx, step)
            if y_onnx.ndim == 2:
                run.disagree += (start + np.flatnonzero(y_trained.argmax(1) != y_onnx.argmax(1))).tolist()
            if y is not None and y_onnx.ndim == 2:
                yb = y[start : start + batch_size]
                for key, out in (("torch", y_trained), ("deploy", y_deploy), ("onnx", y_onnx)):
                    run.correct[key] += int((out.argmax(1) == yb).sum())
            if progress:
                progress(len(xb))
        agreement = run.vs_trained.summary()["top1_agreement"]
        if run.disagree and agreement < diagnose_below:
            hooks += _trained_codes_hooks(model, captured, rows)
            picked = np.asarray(run.disagree[:DIAGNOSE_SAMPLES])
            for start in range(0, len(picked), batch_size):
                xb = x[picked[start : start + batch_size]]
                with torch.no_grad():
                    captured.clear()
                    run_model(deploy, xb)
                    run_model(model, xb)  # its hooks compare its codes with captured
            run.diagnosed = len(picked)
    finally:
        for h in hooks:
            h.remove()
    return run


def _in_order(rows: dict[str, LayerParity], order: list[str]) -> list[LayerParity]:
    """The rows in forward ``order``, then any layer that did not run."""
    return [rows[n] for n in order if n in rows] + [row for n, row in rows.items() if n not in order]


def _first(rows: dict[str, LayerParity], order: list[str], count: str) -> dict | None:
    """The first layer in forward ``order`` whose ``count`` (mismatches / trained_mismatches) is positive."""
    for row in _in_order(rows, order):
        if getattr(row, count) > 0:
            return {"layer": row.name, "mismatches": getattr(row, count),
                    "codes": row.codes if count == "mismatches" else row.trained_codes,
                    **({"max_diff": row.max_diff} if count == "mismatches" else {})}
    return None


def make_report(run: _Run, rows: dict[str, LayerParity], n: int, y: np.ndarray | None, tol: Tolerances,
                proto: onnx.ModelProto, weights_required: bool = False, **fields) -> ParityReport:
    """The report of a run, judged by ``tol`` (weights that differ, or are missing when
    ``weights_required``; codes, with the first diverging layer named; agreement; SQNR; the
    error in output steps), with a note saying why when ONNX agrees with the trained model on
    fewer than ``tol.min_reference_agreement`` of the samples."""
    report = ParityReport(n, list(rows.values()), run.vs_deploy.summary(), run.vs_trained.summary(),
                          tolerances=asdict(tol), quant=_quant_of(proto), **fields)
    report.vs_deploy["output_layer"] = report.vs_trained["output_layer"] = run.output_layer
    if y is not None and n:
        report.accuracy = {k: v / n for k, v in run.correct.items()}
    report.first_divergence = _first(rows, run.order, "mismatches")
    report.first_trained_divergence = _first(rows, run.order, "trained_mismatches")
    if report.first_trained_divergence is not None:
        report.first_trained_divergence["samples"] = run.diagnosed
    for row in rows.values():
        if row.weight_mismatches > 0:
            report.failures.append(f"{row.name}: {row.weight_mismatches} packed weight codes differ from the model's")
        elif row.weight_mismatches < 0 and weights_required:
            report.failures.append(f"{row.name}: the file's integer weights are missing")
    bad = [row for row in _in_order(rows, run.order)
           if row.rate > tol.max_code_mismatch_rate or row.max_diff > tol.max_code_diff]
    for k, row in enumerate(bad):
        where = " (the first diverging layer in forward order; later layers inherit its difference)" if k == 0 else ""
        report.failures.append(f"{row.name}: {row.mismatches} of {row.codes} activation codes differ "
                               f"(max |diff| {row.max_diff}){where}")
    if report.vs_deploy["top1_agreement"] < tol.min_top1_agreement:
        report.failures.append(f"top-1 agreement with the PyTorch model {report.vs_deploy['top1_agreement']:.4%} "
                               f"< {tol.min_top1_agreement:.4%}")
    if report.vs_deploy["sqnr_db"] < tol.min_sqnr_db:
        report.failures.append(f"output SQNR {report.vs_deploy['sqnr_db']:.1f} dB < {tol.min_sqnr_db} dB")
    steps = report.vs_deploy["max_err_output_steps"]
    if steps is not None and steps > tol.max_output_steps:
        report.failures.append(f"output error {steps:.3g} output steps of layer {run.output_layer} "
                               f"> {tol.max_output_steps} (ONNX vs the integer model)")
    agreement = report.vs_trained["top1_agreement"]
    if n and agreement < tol.min_reference_agreement:
        report.notes.append(_why_low_agreement(report, agreement, tol, run.diagnosed))
    return report


def _why_low_agreement(report: ParityReport, agreement: float, tol: Tolerances, diagnosed: int) -> str:
    """Why ONNX's top-1 agreement with the trained model is below ``tol.min_reference_agreement``."""
    head = (f"top-1 agreement with the trained (fake-quantized) PyTorch model is {agreement:.2%} "
            f"(< {tol.min_reference_agreement:.1%}): ")
    if report.failures:
        return head + "ONNX does not match the integer model either (see the failures)."
    first = report.first_trained_divergence
    if first is None:
        where = (f"on the {diagnosed} samples whose top-1 differs every activation code of the trained model is "
                 f"the same as the integer model's" if diagnosed else "no sample's top-1 differs")
        return head + (f"ONNX matches the integer model exactly and {where}, so the difference is in the float "
                       "epilogues (BatchNorm folded into the weight scales, float rounding of the outputs) on "
                       "near-ties between classes.")
    return head + (f"ONNX matches the integer model exactly; on the {diagnosed} samples whose top-1 differs, the "
                   f"trained model's own activation codes first differ from the integer model's at layer "
                   f"{first['layer']} ({first['mismatches']:,} of {first['codes']:,} codes), where BatchNorm is "
                   f"folded into the weights and the step is applied "
                   f"in float, and later layers inherit the difference. The ONNX file computes the integer model "
                   f"(`qexport validate` checks it); train longer or with more bits if the two must agree more.")


# Activation codes held per parity batch (PyTorch's, ONNX Runtime's and their difference: about
# 8 bytes each): batches shrink for large inputs so that memory stays near 256 MB.
PARITY_BATCH_CODES = 32 << 20


def parity_batch_size(model: nn.Module, x: np.ndarray, limit: int = 128) -> int:
    """Samples per parity batch: ``limit``, or fewer when one sample's activation codes (the
    inputs of the quantized layers on ``x[:1]``) times ``limit`` exceed ``PARITY_BATCH_CODES``."""
    from ..models.common import layer_stats

    per_sample = layer_stats(model, to_torch(x[:1]))[1]
    return int(max(1, min(limit, PARITY_BATCH_CODES // max(1, per_sample))))


def check_parity(model: nn.Module, proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray | None = None, *,
                 session_factory: Callable[[bytes], object] | None = None, batch_size: int | None = None,
                 tolerances: Tolerances | None = None, progress: Callable[[int], None] | None = None) -> ParityReport:
    """Compare the quantized PyTorch model with the ONNX model on inputs ``x`` (labels ``y``),
    ``batch_size`` samples at a time (None: ``parity_batch_size``)."""
    from ..runtime import make_session

    if len(x) == 0:
        raise ValueError("no samples to compare: x is empty, and parity on zero samples proves nothing")
    tol = tolerances or Tolerances()
    model = model.eval()
    x = bind_inputs(model, x)  # several inputs: in the model's order (InputError names what is missing)
    if batch_size is None:
        batch_size = parity_batch_size(model, x)
    deploy = to_deploy(model)
    layers = deploy_layers(deploy)
    rows = {name: LayerParity(name, **{k: v for k, v in layer.describe().items()
                                       if k in ("op", "weights", "bits", "act", "act_bits")})
            for name, layer in layers.items()}
    description = _description(proto, deploy)
    invalid = _check_weights(proto, deploy, description, rows)
    if invalid:  # nothing to run: ONNX Runtime would refuse these weights at session creation
        empty = OutputCompare().summary()
        return ParityReport(0, list(rows.values()), empty, empty, failures=invalid, tolerances=asdict(tol),
                            quant=_quant_of(proto))
    session = (session_factory or make_session)(_onnx_with_code_outputs(proto, description))
    scale_outputs = asq_scale_outputs(proto)
    run = compare_runs(model, deploy, session, proto.graph.output[0].name,
                       {name: spec.onnx.codes for name, spec in description.layers.items()}, rows, x, y, batch_size,
                       tuple(q["output"] for q in scale_outputs.values()), progress, tol.min_reference_agreement)
    steps = {node: spread(np.concatenate(run.extra[q["output"]])) for node, q in scale_outputs.items()
             if run.extra[q["output"]]}
    return make_report(run, rows, len(x), y, tol, proto, asq_steps=steps)
