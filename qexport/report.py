"""``qexport report``: one self-contained HTML page of what quantization did to a model.

From the quantized checkpoint, its ONNX export and some inputs: per-layer SQNR of the weights
(quantized vs the float weights the checkpoint holds) and of the activations (each layer's
quantizer output vs its input), the bit-widths (``qexport.inspect``), the size split of the file,
the spread of every ASQ quantizer's per-sample step factor beta, the parity check
(``qexport.check_parity``) and, with labels, the top-1 of the PyTorch and the ONNX model.

The page has no external resources: the charts are PNGs (matplotlib) in ``data:`` URIs, the CSS
is in the page, there is no JavaScript. docs/report.md says how to read each section.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from .checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint
from .inputs import run
from .inspect import LayerInfo, ModelInfo, inspect_model
from .validate import ParityReport, Tolerances
from .validate.steps import spread, sqnr_db

__all__ = ["LayerStats", "ReportData", "ReportInputs", "build_report", "layer_stats", "measure", "prepare",
           "render_html", "write_report_html"]


@dataclass
class LayerStats:
    """What the PyTorch model measured of one quantized layer."""

    weight_sqnr_db: float  # quantized weights vs the checkpoint's float weights
    weight_sqnr_min_db: float  # the same, of the worst output channel (clipping shows here)
    act_sqnr_db: float | None = None  # quantizer output vs its input, over all samples (None: never ran)
    act_kind: str = ""
    beta: np.ndarray | None = None  # ASQ: the per-sample step factor, one value per sample


@dataclass
class ReportData:
    """Everything the page shows (``measure`` collects it, ``render_html`` draws it)."""

    checkpoint: str
    checkpoint_bytes: int
    onnx_path: str
    quant: dict
    info: ModelInfo
    parity: ParityReport
    layers: dict[str, LayerStats]
    samples: int
    data_name: str | None = None
    labels: bool = False
    created_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return self.parity.passed


def _load_quantized(checkpoint) -> tuple[dict, torch.nn.Module]:
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if not ckpt.get("quant"):
        raise CheckpointError(f"{checkpoint if not isinstance(checkpoint, dict) else 'the checkpoint'} is a float "
                              f"model; the report compares the quantized model with its export. Pass the quantized "
                              f"checkpoint (`qexport convert` writes one beside the .onnx).")
    return ckpt, build_model_from_checkpoint(ckpt)


@torch.no_grad()
def layer_stats(model: torch.nn.Module, x: np.ndarray, batch_size: int = 128,
                progress: Callable[[int], None] | None = None) -> dict[str, LayerStats]:
    """Weight SQNR of every quantized layer, and over ``x`` its activation SQNR and (ASQ) beta per
    sample: forward hooks on each layer's ``act_quant`` see its input and fake-quantized output."""
    from .nn.swap import quant_layers

    layers = quant_layers(model)
    stats: dict[str, LayerStats] = {}
    sums: dict[str, list[float]] = {}
    betas: dict[str, list[np.ndarray]] = {}

    def hook(name: str):
        def on_forward(mod, inp, out) -> None:
            xin, q = inp[0].double(), out.double()
            sums[name][0] += float((xin ** 2).sum())
            sums[name][1] += float(((xin - q) ** 2).sum())
            if name in betas:
                betas[name].append(mod.factor(inp[0]).float().reshape(-1).numpy())
        return on_forward

    for name, layer in layers.items():
        w = layer.weight.detach().double().flatten(1)
        sig, err = (w ** 2).sum(1), ((w - layer.weight_quant(layer.weight).detach().double().flatten(1)) ** 2).sum(1)
        stats[name] = LayerStats(sqnr_db(float(sig.sum()), float(err.sum())),
                                 min(sqnr_db(float(a), float(b)) for a, b in zip(sig, err)),
                                 act_kind=getattr(layer.act_quant, "kind", ""))
        sums[name] = [0.0, 0.0]
        if stats[name].act_kind == "asq":
            betas[name] = []
    hooks = [layer.act_quant.register_forward_hook(hook(name)) for name, layer in layers.items()]
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            run(model, xb)
            if progress:
                progress(len(xb))
    finally:
        for h in hooks:
            h.remove()
    for name, s in stats.items():
        if sums[name][0] > 0 or sums[name][1] > 0:
            s.act_sqnr_db = sqnr_db(*sums[name])
        if betas.get(name):
            s.beta = np.concatenate(betas[name])
    return stats


@dataclass
class ReportInputs:
    """The checked inputs of a report (``prepare``)."""

    checkpoint: str
    checkpoint_bytes: int
    quant: dict
    model: torch.nn.Module
    onnx_path: Path
    proto: onnx.ModelProto
    info: ModelInfo
    qdq: bool
    x: np.ndarray


def prepare(checkpoint, onnx_path: str | os.PathLike, x: np.ndarray) -> ReportInputs:
    """Load and check what a report needs, quickly (nothing runs on the data but one sample):
    ``checkpoint`` a quantized qexport checkpoint (path, or its loaded dict), ``onnx_path`` a
    qexport ONNX file the installed library runs, ``x`` (N, ...) inputs the model takes.
    Raises ValueError (CheckpointError, ConvertError) saying what is wrong."""
    from .convert import check_input

    onnx_path = Path(onnx_path)
    info = inspect_model(onnx_path)  # ValueError: not ONNX, or not exported by qexport
    proto = onnx.load(str(onnx_path))
    qdq = any(p.key == "qexport.format" and p.value == "qdq" for p in proto.metadata_props)
    if info.ops and info.missing_ops is None:
        raise ValueError(f"{onnx_path} needs the qexport custom-op library, which is not found here "
                         f"(`qexport build-ops --target x86_64` builds it)")
    if info.missing_ops:
        raise ValueError(f"the installed qexport library does not register {', '.join(info.missing_ops)}, which "
                         f"{onnx_path} uses: update qexport to run this file")
    if not info.ops and not qdq:
        raise ValueError(f"{onnx_path} has no ai.qexport ops and is not a qexport --format qdq model")
    ckpt, model = _load_quantized(checkpoint)
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("no samples: x is empty; give data with at least one sample")
    check_input(model, x)  # ConvertError: the data's shape is not the model's input
    path = None if isinstance(checkpoint, dict) else Path(checkpoint)
    return ReportInputs(str(path) if path else "(in memory)", path.stat().st_size if path else 0, dict(ckpt["quant"]),
                        model, onnx_path, proto, info, qdq, x)


def measure(inputs: ReportInputs, y: np.ndarray | None = None, *, data_name: str | None = None,
            batch_size: int = 128, threads: int | None = None, tolerances: Tolerances | None = None,
            progress: Callable[[int], None] | None = None, say: Callable[[str], None] | None = None) -> ReportData:
    """Run the parity check and the per-layer statistics on ``inputs.x`` (labels ``y``).
    ``progress(n)`` is called twice per sample (the parity pass and the statistics pass)."""
    from .runtime import make_session

    say = say or (lambda msg: None)
    model, proto, x = inputs.model, inputs.proto, inputs.x
    say(f"checking parity on {len(x):,} samples")
    parity_args = dict(batch_size=batch_size, tolerances=tolerances, progress=progress)
    if inputs.qdq:
        from .export.qdq import check_qdq_parity

        parity = check_qdq_parity(model, proto, x, y, threads=threads, **parity_args)
    else:
        from .api import check_parity

        parity = check_parity(model, proto, x, y, session_factory=lambda data: make_session(data, threads),
                              **parity_args)
    say(f"measuring weights, activations and ASQ steps on {len(x):,} samples")
    stats = layer_stats(model, x, batch_size, progress)
    return ReportData(inputs.checkpoint, inputs.checkpoint_bytes, str(inputs.onnx_path), inputs.quant, inputs.info,
                      parity, stats, len(x), data_name, y is not None)


# ----------------------------------------------------------------------------------- charts
_BLUE, _ORANGE, _GREY, _GREEN = "#3b6ea8", "#e08a2c", "#9aa3ad", "#4c9a5a"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig, alt: str) -> str:
    """The figure as an <img> with a base64 PNG data: URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _finite_for_plot(values: list[float | None]) -> tuple[list[float], float]:
    """Values to draw (inf drawn at the top of the axis, None at 0) and that top."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = (max(finite) if finite else 0.0) + 10.0
    return [top if v is not None and math.isinf(v) else (v or 0.0) for v in values], top


def _sqnr_chart(names: list[str], stats: dict[str, LayerStats]) -> str:
    fig = _figure(9, 0.45 * len(names) + 1.4)
    ax = fig.add_subplot()
    pos = np.arange(len(names))
    w_db, a_db = [stats[n].weight_sqnr_db for n in names], [stats[n].act_sqnr_db for n in names]
    w, wtop = _finite_for_plot(w_db)
    a, atop = _finite_for_plot(a_db)
    ax.barh(pos - 0.2, w, 0.4, color=_BLUE, label="weights")
    ax.barh(pos + 0.2, a, 0.4, color=_ORANGE, label="activations (layer input)")
    for y_pos, drawn, value in [*zip(pos - 0.2, w, w_db), *zip(pos + 0.2, a, a_db)]:
        ax.text(drawn, y_pos, " " + _db(value).removesuffix(" dB"), va="center", fontsize=8)
    ax.set_yticks(pos, names)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB), higher is better")
    ax.set_xlim(0, max(wtop, atop) + 5)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=2, fontsize=8, frameon=False)
    return _png(fig, "per-layer SQNR of weights and activations")


def _bits_chart(layers: list[LayerInfo]) -> str:
    fig = _figure(9, 0.45 * len(layers) + 1.4)
    ax = fig.add_subplot()
    pos = np.arange(len(layers))
    ax.barh(pos - 0.2, [layer.mean_bits for layer in layers], 0.4, color=_BLUE, label="weights (mean)")
    ax.barh(pos + 0.2, [layer.act_bits for layer in layers], 0.4, color=_ORANGE, label="activations")
    ax.set_yticks(pos, [layer.name for layer in layers])
    ax.invert_yaxis()
    ax.set_xlabel("bits")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=2, fontsize=8, frameon=False)
    return _png(fig, "bit-widths per layer")


def _histograms(layers: list[LayerInfo]) -> str:
    """One panel per layer whose weights have more than one width: per output channel (mixed
    precision) or per parameter (per-parameter formats)."""
    shown = [layer for layer in layers if layer.param_bits is not None or len(layer.bits) > 1]
    if not shown:
        return ""
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = _figure(3.2 * cols, 2.4 * rows)
    for i, layer in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        hist, unit = (layer.param_bits, "weights") if layer.param_bits is not None else (layer.bits, "channels")
        keys = sorted(hist, key=int)
        ax.bar([str(k) for k in keys], [hist[k] for k in keys], color=_BLUE)
        ax.set_title(f"{layer.name}: {layer.mean_bits:.2f} bits avg per {unit.removesuffix('s')}", fontsize=9)
        ax.set_xlabel("bits (0 = pruned)" if unit == "weights" else "bits", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
    return _png(fig, "histograms of weight bit-widths")


def _size_chart(info: ModelInfo) -> str:
    t = info.totals()
    parts = [("weight codes", t["weight_bytes"], _BLUE),
             ("scales, biases, adapters", t["scale_bias_adapter_bytes"], _ORANGE),
             ("rest of the file", max(0, info.file_bytes - t["weight_bytes"] - t["scale_bias_adapter_bytes"]), _GREY)]
    fig = _figure(10, max(2.6, 0.4 * len(info.layers) + 1.4))
    ax, per_layer = fig.subplots(1, 2, width_ratios=[1, 1.4])
    ax.bar([p[0] for p in parts], [p[1] for p in parts], color=[p[2] for p in parts])
    for i, (_, value, _) in enumerate(parts):
        ax.text(i, value, f"{value:,}\n{100 * value / max(1, info.file_bytes):.0f}%", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("bytes")
    ax.set_title(f"the file: {info.file_bytes:,} bytes", fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.margins(y=0.2)
    names = [layer.name for layer in info.layers]
    codes = [layer.weight_bytes for layer in info.layers]
    per_layer.barh(names, codes, color=_BLUE, label="weight codes")
    per_layer.barh(names, [layer.other_bytes for layer in info.layers], left=codes, color=_ORANGE,
                   label="scales, biases, adapters")
    per_layer.invert_yaxis()
    per_layer.set_xlabel("bytes")
    per_layer.set_title("per layer", fontsize=10)
    per_layer.legend(loc="lower right", fontsize=8)
    return _png(fig, "size split of the file")


def _beta_chart(name: str, beta: np.ndarray, cv: float | None) -> str:
    fig = _figure(4.2, 2.6)
    ax = fig.add_subplot()
    ax.hist(beta, bins=min(40, max(5, len(beta) // 8)), color=_GREEN)
    cv_text = "n/a" if cv is None else f"{cv:.1%}"
    ax.set_title(f"{name}: CV {cv_text}", fontsize=9)
    ax.set_xlabel("beta (per-sample step factor)", fontsize=8)
    ax.set_ylabel("samples", fontsize=8)
    ax.tick_params(labelsize=8)
    return _png(fig, f"histogram of beta of {name}")


# ----------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1120px;
       color: #1d232a; background: #fff; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px;
     border-bottom: 2px solid #dde3ea; padding-bottom: 4px; }
p.how { color: #4d5863; font-size: 14px; max-width: 900px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 12px; }
th, td { border: 1px solid #d3d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef2f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta td:first-child { width: 200px; background: #eef2f6; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; } .grid img { width: 420px; margin: 0; }
.verdict { display: inline-block; padding: 4px 14px; border-radius: 4px; color: #fff; font-weight: bold; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
.bad { color: #c62828; font-weight: bold; } .note { color: #4d5863; font-size: 13px; }
footer { margin-top: 40px; color: #6b7580; font-size: 12px; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _db(value: float | None) -> str:
    return "n/a" if value is None else ("inf" if math.isinf(value) else f"{value:.1f} dB")


def _table(head: list[str] | None, rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """An HTML table (no header row when ``head`` is None); cells are already escaped HTML,
    columns in ``numeric`` right-aligned."""
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head is not None:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    return "\n".join(out) + "</table>"


def _header(d: ReportData) -> str:
    from . import __version__

    q, info = d.quant, d.info
    bits = f"{q.get('bits')}-bit weights, {q.get('act_bits') or q.get('bits')}-bit activations"
    if q.get("first_last_bits"):
        bits += f"; first and last layers {q['first_last_bits']}-bit"
    rows = [["ONNX model", f"{_e(Path(d.onnx_path).name)} ({info.file_bytes:,} bytes)"],
            ["checkpoint", f"{_e(Path(d.checkpoint).name)} ({d.checkpoint_bytes:,} bytes)"],
            ["method", f"{_e(q.get('method'))}, {_e(bits)}" + (f"; {len(q['overrides'])} per-layer overrides"
                                                             if q.get("overrides") else "")],
            ["quantized layers", f"{len(info.layers)}; {info.totals()['quantized_params']:,} parameters"],
            ["data", f"{d.samples:,} samples" + (f" from {_e(d.data_name)}" if d.data_name else "")
             + (", with labels" if d.labels else ", no labels")],
            ["qexport", f"{_e(__version__)} (file written by qexport {_e(info.qexport_version or '?')})"],
            ["date (UTC)", _e(d.created_utc)]]
    return _table(None, [[f"<b>{r[0]}</b>", r[1]] for r in rows], cls="meta")


def _summary(d: ReportData) -> str:
    p = d.parity
    verdict = '<span class="verdict pass">parity: PASS</span>' if p.passed else \
        '<span class="verdict fail">parity: FAIL</span>'
    t = d.info.totals()
    items = [f"ONNX vs PyTorch (integer reference): top-1 agreement {p.vs_deploy['top1_agreement']:.2%}, "
             f"output SQNR {_db(p.vs_deploy['sqnr_db'])}",
             f"{sum(row.mismatches for row in p.layers):,} of {sum(row.codes for row in p.layers):,} activation "
             f"codes differ",
             f"{t['ratio_to_float']:.1f}x smaller than the same parameters in float32"]
    if p.accuracy:
        items.append(f"top-1 on these samples: PyTorch quantized {p.accuracy.get('torch', 0):.2%}, "
                     f"ONNX {p.accuracy.get('onnx', 0):.2%}")
    return f"<p>{verdict}</p><ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _layers_section(d: ReportData) -> str:
    names = [layer.name for layer in d.info.layers if layer.name in d.layers]
    rows = []
    for layer in d.info.layers:
        s = d.layers.get(layer.name)
        rows.append([_e(layer.name), _e(layer.op), _e(layer.weights), _e(layer.bits_text),
                     f"{_e(layer.act)} {layer.act_bits}b", f"{layer.params:,}",
                     _db(s.weight_sqnr_db) if s else "n/a", _db(s.weight_sqnr_min_db) if s else "n/a",
                     _db(s.act_sqnr_db) if s else "n/a"])
    table = _table(["layer", "op", "weights", "weight bits", "act", "params", "weight SQNR", "worst channel",
                    "act SQNR"], rows, numeric={5, 6, 7, 8})
    return table + (_sqnr_chart(names, d.layers) if names else "")


def _size_section(info: ModelInfo) -> str:
    t = info.totals()
    rest = info.file_bytes - t["weight_bytes"] - t["scale_bias_adapter_bytes"]
    rows = [[_e(layer.name), f"{layer.weight_bytes:,}", f"{layer.other_bytes:,}", f"{layer.adapter_params:,}"]
            for layer in info.layers]
    rows.append(["<b>all layers</b>", f"<b>{t['weight_bytes']:,}</b>", f"<b>{t['scale_bias_adapter_bytes']:,}</b>",
                 f"<b>{t['adapter_params']:,}</b>"])
    return (_size_chart(info) + _table(["layer", "weight codes (B)", "scales/bias/adapter (B)", "adapter params"],
                                       rows, numeric={1, 2, 3})
            + f"<p class=note>The rest of the file ({rest:,} bytes) is the graph, names and metadata. The "
              f"quantized layers' {t['quantized_params']:,} parameters would take "
              f"{t['float32_bytes_of_these_params']:,} bytes in float32.</p>")


def _asq_section(d: ReportData) -> str:
    asq = {n: s for n, s in d.layers.items() if s.beta is not None}
    if not asq:
        return "<p>This model has no ASQ activation quantizers (its activation steps are fixed).</p>"
    onnx_steps = {k.removesuffix("/quantize"): v for k, v in d.parity.asq_steps.items()}
    rows, images = [], []
    for name, s in asq.items():
        st = spread(s.beta)
        cv = st.get("cv")
        images.append(_beta_chart(name, s.beta, cv))
        ort_cv = onnx_steps.get(name, {}).get("cv")
        rows.append([_e(name), f"{st['mean']:.4g}", f"{st['min']:.4g}", f"{st['max']:.4g}",
                     "n/a" if cv is None else f"{cv:.2%}", "n/a" if ort_cv is None else f"{ort_cv:.2%}"])
    return (_table(["layer", "mean beta", "min", "max", "CV (PyTorch)", "CV of the step (ONNX Runtime)"], rows,
                   numeric={1, 2, 3, 4, 5})
            + '<div class="grid">' + "".join(images) + "</div>")


def _parity_section(d: ReportData) -> str:
    p = d.parity
    rows = []
    for row in p.layers:
        mism = "0" if row.mismatches == 0 else f'<span class="bad">{row.mismatches:,} (max {row.max_diff})</span>'
        weights = ("ok" if row.weight_mismatches == 0 else "n/a" if row.weight_mismatches < 0 else
                   f'<span class="bad">{row.weight_mismatches:,} differ</span>')
        rows.append([_e(row.name), _e(row.op), f"{row.codes:,}", mism, f"{row.rate:.3%}", weights])
    out = [_table(["layer", "op", "codes", "mismatches", "rate", "packed weights"], rows, numeric={2, 3, 4})]
    blocks = [["vs the PyTorch deploy model (integer reference)", p.vs_deploy],
              ["vs the PyTorch trained model (fake quantization)", p.vs_trained]]
    out.append(_table(["ONNX output", "top-1 agreement", "SQNR", "max abs err", "max rel err"],
                      [[_e(label), f"{b['top1_agreement']:.2%}", _db(b["sqnr_db"]), f"{b['max_abs_err']:.3g}",
                        f"{b['max_rel_err']:.3g}"] for label, b in blocks], numeric={1, 2, 3, 4}))
    if p.failures:
        out.append("<p class=bad>Failures:</p><ul>" + "".join(f"<li>{_e(f)}</li>" for f in p.failures) + "</ul>")
    if p.notes:
        out.append("<p>Notes:</p><ul>" + "".join(f"<li>{_e(n)}</li>" for n in p.notes) + "</ul>")
    return "\n".join(out)


def _accuracy_section(d: ReportData) -> str:
    acc = d.parity.accuracy
    if not acc:
        return "<p>No labels in the data: no accuracy.</p>"
    labels = {"torch": "PyTorch quantized model (fake quantization)", "deploy": "PyTorch deploy model (integers)",
              "onnx": "ONNX model (ONNX Runtime)"}
    return _table(["model", "top-1"], [[_e(labels.get(k, k)), f"{v:.2%}"] for k, v in acc.items()], numeric={1})


def render_html(d: ReportData) -> str:
    """The page of a ``measure`` result."""
    from . import __version__

    sections = [
        ("summary", "Summary", "", _summary(d)),
        ("layers", "Per-layer SQNR", "Signal-to-quantization-noise ratio, 10 log10(sum x&sup2; / sum (x - q)&sup2;). "
         "Weights: the quantized weights against the float weights the checkpoint holds (and of the worst output "
         "channel: a low one is a channel clipped by its scale). Activations: each layer's "
         "input against its quantizer's output, over all samples (the inputs are the quantized model's own). Each "
         "bit adds about 6 dB.", _layers_section(d)),
        ("bits", "Bit-widths", "Mean weight bits and activation bits per layer; below, the histogram of a layer "
         "whose weights have several widths (per output channel, or per weight for per-parameter formats).",
         _bits_chart(d.info.layers) + _histograms(d.info.layers)),
        ("size", "Size", "Where the bytes of the ONNX file go: packed weight codes, the float32 scales, biases and "
         "ASQ adapters, and the rest of the file.", _size_section(d.info)),
        ("asq", "ASQ step factors", "Each ASQ quantizer scales its step per sample by beta, computed by its adapter "
         "from the input. The histogram is beta over the samples; the coefficient of variation (CV, std/mean) says "
         "how much the step adapts: near 0% the adapter does nothing a fixed step would not.", _asq_section(d)),
        ("parity", "Parity", "ONNX Runtime (with qexport's kernels; a --format qdq model in a plain session) against "
         "the PyTorch model on the same samples: "
         "every layer's activation codes and packed weights must be identical, the outputs must agree.",
         _parity_section(d)),
        ("accuracy", "Accuracy", "", _accuracy_section(d)),
    ]
    body = "\n".join(f'<section id="{sid}"><h2>{title}</h2>' + (f'<p class="how">{how}</p>' if how else "")
                     + content + "</section>" for sid, title, how, content in sections)
    title = f"qexport report: {Path(d.onnx_path).name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n<header><h1>{_e(title)}</h1>"
            f"{_header(d)}</header>\n{body}\n<footer>Written by qexport {_e(__version__)} "
            f"(qexport report) at {_e(d.created_utc)}. No external resources: charts are embedded PNGs.</footer>\n"
            f"</body></html>\n")


def build_report(checkpoint, onnx_path: str | os.PathLike, x: np.ndarray, y: np.ndarray | None = None,
                 **kwargs) -> str:
    """A self-contained HTML page of what quantization did: per-layer weight and activation SQNR,
    bit-widths, the size split, ASQ step factors, the parity check and (with labels ``y``) top-1.

    ``checkpoint`` is the quantized qexport checkpoint (a path, or its loaded dict) and
    ``onnx_path`` its export; ``x`` the inputs (the model's own convention). Keyword options
    (``measure``'s): ``data_name``, ``batch_size``, ``threads``, ``tolerances`` (of the parity
    check), ``progress(n)``, ``say(msg)``. Raises ValueError (CheckpointError, ConvertError) for
    inputs it cannot use. ``write_report_html`` writes the page atomically.

    Example:
        >>> page = qexport.build_report("w3.pt", "w3.onnx", x[:256], y[:256])
        >>> qexport.report.write_report_html("report.html", page)
    """
    return render_html(measure(prepare(checkpoint, onnx_path, x), y, **kwargs))


def write_report_html(path: str | os.PathLike, report: ReportData | str) -> Path:
    """Write a report (``measure``'s result, or ``build_report``'s page) to ``path`` atomically."""
    from .io import atomic_write_text

    atomic_write_text(path, report if isinstance(report, str) else render_html(report))
    return Path(path)
