"""The main job: model file -> quantized (calibrated) model -> ONNX -> parity report."""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import PROGRAM_ARCH, LoadedModel, load_model, program_arch_args, save_checkpoint
from .export import export_onnx
from .inputs import InputError, Inputs, bind_inputs, run, sample_shapes, split, tensors, to_torch
from .io import atomic_write_text, batch_size_for
from .nn import calibrate, quantize_
from .nn.fit import FitOptions, fit
from .nn.mixed import DEFAULT_CHOICES, Budget, allocate, bits_summary, code_bytes
from .quant.config import QuantConfig
from .validate import ParityReport, Tolerances, check_parity, top1
from .validate.steps import sqnr_db


@dataclass(frozen=True)
class MixedOptions:
    """Mixed precision in convert: the budget, the candidate widths (None: 2, 3, 4, 8 where the
    format has them), and "channel" or "layer" granularity."""

    budget: Budget
    choices: tuple[int, ...] | None = None
    granularity: str = "channel"


class ConvertError(ValueError):
    """The conversion cannot proceed; the message says what to change."""


@dataclass
class ConvertResult:
    onnx_path: Path
    checkpoint_path: Path | None
    report_path: Path | None
    report: ParityReport | None
    config: QuantConfig
    loaded: LoadedModel
    fidelity: dict = field(default_factory=dict)  # convert of a float model: see ``fidelity``


def _method_tag(method: str) -> str:
    return method.replace("+", "-")


def default_output(model_path: Path, config: QuantConfig, export_format: str = "qexport", mixed: bool = False) -> Path:
    tail = "_qdq" if export_format == "qdq" else ""
    bits = "mix" if mixed or any(isinstance(o.get("bits"), list) for _, o in config.overrides) else config.bits
    return Path.cwd() / f"{model_path.stem}_{_method_tag(config.method)}_w{bits}{tail}.onnx"


def resolve_config(loaded: LoadedModel, method: str | None, bits: int | None, act_bits: int | None,
                   first_last_bits: int | None, overrides: tuple = ()) -> QuantConfig:
    """A quantized checkpoint keeps its own config (explicit conflicting options are an error);
    a float model gets the options given (default asq+post, 4 bits)."""
    if loaded.is_quantized:
        cfg = QuantConfig.from_dict(loaded.quant)
        for name, given, have in (("--method", method, cfg.method), ("--bits", bits, cfg.bits),
                                  ("--act-bits", act_bits, cfg.effective_act_bits),
                                  ("--override", tuple(overrides) or None, cfg.overrides)):
            if given is not None and given != have:
                raise ConvertError(f"the checkpoint is already quantized ({cfg.method}, {cfg.bits}-bit weights, "
                                   f"{cfg.effective_act_bits}-bit activations); {name} {given} conflicts. Convert the "
                                   f"float model instead, or fine-tune with `qexport train --from`.")
        return cfg
    if method is not None and "perparam" in method:
        raise ConvertError(f"--method {method}: per-parameter precision sets its widths in rounds of retraining "
                           f"(Khoram and Li), which a post-training convert does not do. Run `qexport train --from "
                           f"<float model> --method {method} --bits "
                           f"{bits or 8} -o pp.pt`, then `qexport convert pp.pt`")
    try:
        return QuantConfig(method=method or "asq+post", bits=4 if bits is None else bits, act_bits=act_bits,
                           first_last_bits=first_last_bits, overrides=tuple(overrides))
    except ValueError as exc:
        raise ConvertError(str(exc)) from exc


def check_input(model: nn.Module, x: np.ndarray | Inputs) -> None:
    """Run one sample, then two, through the float/quantized model and explain a mismatch (a
    program exported for batch 1 runs one sample and fails later, in calibration, cryptically)."""
    def run_n(n: int) -> None:
        with torch.no_grad():
            model.eval()(*tensors(x[:n]))

    shapes = sample_shapes(x)
    shape_txt = str(shapes[0]) if len(shapes) == 1 else ", ".join(
        f"{name} {shape}" for name, shape in zip(x.names, shapes))
    try:
        run_n(1)
    except Exception as exc:  # noqa: BLE001 - reported with the input shape
        raise ConvertError(f"the model does not accept the data's input shape {shape_txt}: {exc}. "
                           f"Pass --data with inputs in the model's own convention (an .npz with x of shape (N, ...): "
                           f"(N, C, H, W) images, (N, C, L) sequences, (N, features) vectors).") from exc
    if len(x) >= 2:
        try:
            run_n(2)
        except Exception as exc:  # noqa: BLE001
            raise ConvertError(f"the model runs on one sample but not on a batch of two ({exc}). A torch.export "
                               f"program saved with a fixed batch size does this: export it with a dynamic batch, "
                               f"torch.export.export(model, (x,), dynamic_shapes=({{0: torch.export.Dim('batch')}},)), "
                               f"and save that.") from exc


def quantize_model(model: nn.Module, config: QuantConfig, x: np.ndarray | Inputs, calib_samples: int = 512,
                   batch_size: int = 128, check: Callable[[nn.Module], None] | None = None,
                   refine_samples: int = 128) -> nn.Module:
    """quantize_ + calibrate on the first ``calib_samples`` inputs (``check(model)`` runs in
    between: it may refuse the quantized layers before calibration is paid for)."""
    quantize_(model, config)
    if check is not None:
        check(model)
    xc = to_torch(x[:calib_samples])
    calibrate(model, split(xc, batch_size_for(x, batch_size)), refine_samples=refine_samples)
    return model.eval()


@dataclass(frozen=True)
class ModelCost:
    """What a model's size means for convert's work: per sample, the float model's
    multiply-accumulates and the activation values its quantizers see; the conv/linear layers
    and their weights (``measure_cost``)."""

    macs: int
    activations: int
    layers: int
    weights: int

    def fit_step(self, batch: int) -> float:
        """One fit step in float-forward MAC equivalents: teacher forward, student forward and
        backward (3.6 MACs per MAC, 1,360 per quantized activation: fake quantization's
        elementwise passes), plus a fixed cost per layer and weight (quantizing the weights,
        the optimiser's update of the latent weights)."""
        return batch * (3.6 * self.macs + 1360 * self.activations) + 0.3e9 * self.layers + 6000 * self.weights

    def refine_pass(self, samples: int) -> float:
        """One evaluation of the quantized network (no gradient) on ``samples`` inputs."""
        return samples * (1.2 * self.macs + 450 * self.activations) + 1000 * self.weights


def measure_cost(model: nn.Module, x: np.ndarray | Inputs) -> ModelCost:
    """``ModelCost`` of a float model, from one sample of ``x`` (forward hooks on its layers)."""
    from .models.common import layer_stats

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    macs, seen = layer_stats(model, to_torch(x[:1]))
    return ModelCost(macs, seen, len(layers), sum(m.weight.numel() for m in layers))


# How much a post-training convert may spend, in float-forward MAC equivalents (``ModelCost``:
# its coefficients were measured on 2 cores of these machines, where 1e12 is about 10 s). The
# Fashion-MNIST CNN (1.6e12 for its default fit) and ResNet-20 (4.2e12) stay within them; at
# 224x224 they decide: ResNet-18 gets 40 steps of 8 and no refinement, MobileNetV2 42 of 8.
FIT_BUDGET = 4.5e12
REFINE_BUDGET = 1.0e12
REFINE_RATIOS = 6  # candidate steps per layer in calibrate's output-aware refinement
MIN_FIT_STEPS = 40  # the batch shrinks (down to 4) before the steps fall below this


@dataclass(frozen=True)
class WorkPlan:
    """What a convert will spend: calibrate's refinement samples, the fit's steps and batch, and
    a sentence for the user when either was cut to the budget (None: the defaults ran)."""

    refine_samples: int
    fit: FitOptions
    note: str | None = None


def plan_work(cost: ModelCost, n_cal: int, fit_opts: FitOptions | None) -> WorkPlan:
    """Size the refinement and the fit to the model's cost.

    Refinement evaluates the whole network ``REFINE_RATIOS`` times per layer, so its cost grows
    with depth x size; it runs on as many samples (<= 128) as ``REFINE_BUDGET`` pays for, or not
    at all below 16: the fit then tunes the steps. Measured on the shipped Fashion-MNIST sample
    (asq+post, 200-step fit, fidelity on the 10,000 test images): refinement on 128 samples vs
    none gave top-1 agreement with the float model 96.90 vs 97.08% at 3 bits, 98.66 vs 98.63% at
    4, 93.17 vs 92.84% at 2, and the same SQNR within 0.1 dB; without the fit it matters (4 bits:
    97.0 vs 94.3%). The fit keeps its defaults (200 steps of 32) within ``FIT_BUDGET``; beyond it
    the batch shrinks (32, 16, 8, 4) until ``MIN_FIT_STEPS`` steps fit, then the steps do.
    ``fit_opts`` given explicitly (the user's --fit-steps / --fit-batch-size) is kept as it is.
    """
    notes = []
    per_sample = max(1.0, cost.refine_pass(1) - cost.refine_pass(0))
    per_layer = REFINE_BUDGET / (max(1, cost.layers) * REFINE_RATIOS) - cost.refine_pass(0)
    refine = int(min(128, n_cal, max(0.0, per_layer) // per_sample))
    if refine < min(128, n_cal):
        if refine < 16:
            refine = 0
        notes.append("calibration's output-aware refinement " + ("skipped" if refine == 0 else f"on {refine} samples"))
    if fit_opts is None:
        fit_opts = FitOptions()
        if fit_opts.steps > 0 and fit_opts.steps * cost.fit_step(fit_opts.batch_size) > FIT_BUDGET:
            for batch in (32, 16, 8, 4):
                steps = int(min(fit_opts.steps, FIT_BUDGET // cost.fit_step(batch)))
                if steps >= MIN_FIT_STEPS or batch == 4:
                    break
            fit_opts = replace(fit_opts, batch_size=batch, steps=max(1, steps))
            notes.append(f"fit shortened to {fit_opts.steps} steps of {batch}")
    note = None
    if notes:
        note = (f"{'; '.join(notes)} to bound the work ({cost.macs / 1e9:.2f} GMAC and "
                f"{cost.activations / 1e6:.2f} M quantized activations per sample, {cost.layers} layers; "
                f"--fit-steps and --fit-batch-size set the fit)")
    return WorkPlan(refine, fit_opts, note)


def split_calibration(n: int, calib_samples: int) -> tuple[int, slice]:
    """(number of calibration samples, the held-out samples) out of ``n`` inputs.

    The first ``calib_samples`` calibrate and fit; the rest measure the fidelity to the float
    model. When there is no rest, the last eighth is held out (at least one sample when n >= 2),
    so that fidelity is never measured on the samples that were fitted.
    """
    if n > calib_samples:
        return calib_samples, slice(calib_samples, n)
    held = n // 8 if n >= 16 else (1 if n >= 2 else 0)
    return n - held, slice(n - held, n) if held else slice(0, n)


@torch.no_grad()
def fidelity(model: nn.Module, reference: nn.Module, x: np.ndarray | Inputs, batch_size: int = 256) -> dict:
    """How closely ``model`` reproduces ``reference`` (the float model) on ``x``, no labels needed:
    top-1 agreement of the predictions and the output SQNR in dB."""
    model.eval()
    reference.eval()
    batch_size = batch_size_for(x, batch_size)
    agree, sq_ref, sq_err = 0, 0.0, 0.0
    for start in range(0, len(x), batch_size):
        xb = to_torch(x[start:start + batch_size])
        a, b = run(model, xb).double(), run(reference, xb).double()
        if a.dim() == 2:
            agree += int((a.argmax(1) == b.argmax(1)).sum())
        sq_ref += float((b ** 2).sum())
        sq_err += float(((a - b) ** 2).sum())
    sqnr = None if sq_err == 0 else sqnr_db(sq_ref, sq_err)
    return {"samples": int(len(x)), "top1_agreement": agree / max(1, len(x)), "sqnr_db": sqnr}


# Below these, convert warns that the quantized model is not the float model any more.
POOR_AGREEMENT = 0.90
POOR_SQNR_DB = 10.0


def fidelity_warning(fid: dict, config: QuantConfig) -> str | None:
    """A loud, specific warning when the fitted model's fidelity to the float model is poor."""
    agreement, sqnr = fid["top1_agreement"], fid["sqnr_db"]
    if agreement >= POOR_AGREEMENT and (sqnr is None or sqnr >= POOR_SQNR_DB):
        return None
    tips = []
    if config.bits < 8:
        tips.append(f"more bits (--bits {config.bits + 1})")
    tips += ["quantization-aware training (`qexport train --from <float model> --method "
             f"{config.method} --bits {config.bits}`)", "more calibration data (--data, --calib-samples)",
             "a longer fit (--fit-steps)"]
    sqnr_txt = "inf" if sqnr is None else f"{sqnr:.1f}"
    return (f"the quantized model agrees with the float model on only {agreement:.1%} of {fid['samples']} held-out "
            f"samples (output SQNR {sqnr_txt} dB): parity checks ONNX against this quantized model, not "
            f"against the float one. Try " + ", ".join(tips) + ".")


def convert(model_path: str | os.PathLike, *, x: np.ndarray, y: np.ndarray | None = None, output: str | os.PathLike | None = None,
            method: str | None = None, bits: int | None = None, act_bits: int | None = None, first_last_bits: int | None = 8,
            arch: str | None = None, trust_pickle: bool = False, calib_samples: int = 512, validate: bool = True,
            data_name: str = "", tolerances: Tolerances | None = None, fit_options: FitOptions | None = None,
            overrides: tuple = (),
            progress: Callable[[str], None] | None = None,
            fit_progress: Callable[[int, int, float], None] | None = None,
            export_format: str = "qexport", require_quantized: bool = False,
            mixed: MixedOptions | None = None,
            validate_progress: Callable[[int], None] | None = None,
            module_path: tuple[str, ...] = (), arch_args: dict | None = None) -> ConvertResult:
    """Convert a model file to ONNX with ai.qexport ops, and check parity.

    A float model (qexport checkpoint, state dict + ``arch``, or trusted pickle) is quantized
    with ``method``/``bits``, calibrated on the first ``calib_samples`` inputs of ``x`` and then
    fitted to reproduce the float model on them (``qexport.nn.fit``; ``fit_options.steps`` = 0
    skips it). The fidelity to the float model (top-1 agreement, SQNR) is measured on the inputs
    not used for that (``split_calibration``) and stored in the report with a warning when poor.
    The fitted model is saved beside the ONNX file (``.pt``) so ``qexport validate`` can re-check
    it later. A quantized checkpoint is exported as it is (``require_quantized``: a float model
    is an error, what ``qexport export`` wants).

    ``mixed`` (a size budget): the body layers' weight bit-widths are allocated per output channel
    (or per layer) by ``qexport.nn.mixed.allocate`` before calibration; ``bits`` then sets the
    activations (and the widths of layers the budget does not reach).

    ``export_format`` "qexport" writes ai.qexport custom ops (every method); "qdq" writes standard
    ONNX only (qexport.export.qdq: LSQ activations with uniform weights, ``method`` defaulting to
    lsq), validated in a plain ONNX Runtime session without the qexport library.
    """
    # About 90 lines: the pipeline's one entry point (load, resolve the config, quantize + fit, export,
    # validate), each step a helper; what remains here is the order and the options passed along.
    from .export.qdq import FORMATS, check_qdq_compatible, check_qdq_parity, export_qdq

    if export_format not in FORMATS:
        raise ConvertError(f"unknown export format {export_format!r}: choose one of {', '.join(FORMATS)}")
    qdq = export_format == "qdq"
    say = progress or (lambda msg: None)
    model_path = Path(model_path)
    loaded = load_model(model_path, arch=arch, arch_args=arch_args, trust_pickle=trust_pickle,
                        module_path=tuple(module_path))
    if require_quantized and not loaded.is_quantized:
        raise ConvertError(f"{model_path} is a float model: `qexport export` writes a quantized checkpoint as it is. "
                           f"Quantize it with `qexport convert` (or `qexport train --from`).")
    if qdq and method is None and not loaded.is_quantized:
        method = "lsq"  # the one method standard ONNX can express
    config = resolve_config(loaded, method, bits, act_bits, first_last_bits, overrides)
    if qdq and loaded.is_quantized:
        check_qdq_compatible(loaded.model)
    out = Path(output) if output else default_output(model_path, config, export_format, mixed is not None)
    if out.suffix != ".onnx":
        raise ConvertError(f"output must end in .onnx, got {out}")
    if out.resolve() == model_path.resolve():
        raise ConvertError("output would overwrite the input model")
    try:
        x = bind_inputs(loaded.model, x)
    except InputError as exc:
        raise ConvertError(str(exc)) from None
    check_input(loaded.model, x)
    model = loaded.model
    coverage = _coverage(model)
    if coverage["skipped"]:
        say(f"{len(coverage['skipped'])} conv/linear op(s) stay float: " + "; ".join(coverage["skipped"][:5]))
    ckpt_path = None
    accuracy: dict = {}
    fid: dict = {}
    if not loaded.is_quantized:
        model, accuracy, fid, n_cal, config = _quantize_and_fit(
            loaded, config, x, y if validate else None, calib_samples, fit_options, say, fit_progress,
            check_qdq_compatible if qdq else None, mixed)
        fid["coverage"] = coverage
        arch, arch_args = loaded.arch, loaded.arch_args
        if loaded.kind == "program":  # rebuilt from the .pt2 itself: no model code needed
            arch, arch_args = PROGRAM_ARCH, program_arch_args(model_path, out.with_suffix(".pt"), loaded.sha256)
        if arch is not None:
            ckpt_path = out.with_suffix(".pt")
            save_checkpoint(ckpt_path, model=model, arch=arch, arch_args=arch_args, quant=config,
                            metrics={"calibrated_on": data_name, "calib_samples": int(n_cal), "fidelity": fid},
                            extra={"source": str(model_path), "source_sha256": loaded.sha256})
    say(f"exporting {out}" + (" (standard ONNX, qdq)" if qdq else ""))
    meta = {"qexport.method": config.method, "qexport.source": loaded.sha256,
            "qexport.config": json.dumps(config.to_dict(), sort_keys=True),
            "qexport.input": json.dumps(_input_meta(x))}
    example = to_torch(x[:2])
    if qdq:
        proto = export_qdq(model, out, example, meta=meta)
    else:
        proto = export_onnx(model, example, out, meta=meta)
    report = report_path = None
    if validate:
        say(f"validating on {len(x)} samples" + (" (plain ONNX Runtime, no qexport library)" if qdq else ""))
        check = check_qdq_parity if qdq else check_parity
        report = check(model, proto, x, y, tolerances=tolerances, progress=validate_progress)
        report.accuracy = {**accuracy, **report.accuracy}
        report.fidelity = fid
        report_path = out.with_suffix(".parity.json")
        write_report(report, report_path, {"onnx": str(out), "model": str(model_path), "data": data_name})
    return ConvertResult(out, ckpt_path, report_path, report, config, loaded, fid)


def _input_meta(x: np.ndarray | Inputs) -> dict:
    """What the file's ``qexport.input`` metadata says about the inputs: one input's shape, or
    every input's name and shape for a model with several."""
    convention = "the PyTorch model's own input (zoo models: pixels in [0, 1])"
    shapes = sample_shapes(x)
    if not isinstance(x, Inputs):
        return {"shape": ["N", *shapes[0]], "dtype": "float32", "convention": convention}
    return {"inputs": [{"name": n, "shape": ["N", *s], "dtype": "float32"} for n, s in zip(x.names, shapes)],
            "convention": convention}


def _coverage(model: nn.Module) -> dict:
    """Conv/Linear layers qexport can quantize, and what stays float (a torch.export program's
    ops with run-time weights; ``qexport.lower.program``)."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    skipped = list(getattr(model, "qexport_skipped", []))
    return {"layers": len(layers), "skipped": skipped, "coverage": len(layers) / max(1, len(layers) + len(skipped))}


def _quantize_and_fit(loaded: LoadedModel, config: QuantConfig, x: np.ndarray | Inputs, y: np.ndarray | None,
                      calib_samples: int, fit_opts: FitOptions | None, say: Callable[[str], None],
                      fit_progress: Callable[[int, int, float], None] | None, check: Callable | None,
                      mixed: MixedOptions | None = None) -> tuple[nn.Module, dict, dict, int, QuantConfig]:
    """A float model quantized, calibrated and fitted: (model, accuracy {float, calibrated} when
    ``y`` is given, fidelity report, calibration sample count, the config with the allocated
    bit-widths when ``mixed``)."""
    n_cal, held = split_calibration(len(x), calib_samples)
    teacher = copy.deepcopy(loaded.model).eval()
    accuracy: dict = {}
    fid: dict = {}
    if y is not None:
        accuracy["float"] = top1(teacher, x, y)
    if mixed is not None:
        if isinstance(x, Inputs):
            raise ConvertError("--size-budget (mixed precision) takes models with one input; this one has "
                               f"{len(x.names)} ({', '.join(x.names)})")
        say(f"allocating weight bit-widths per {mixed.granularity} to {mixed.budget} (choices "
            f"{', '.join(map(str, mixed.choices or DEFAULT_CHOICES))})")
        xc = torch.from_numpy(np.ascontiguousarray(x[:n_cal], dtype=np.float32))
        try:
            found = allocate(loaded.model, config, xc, mixed.budget, choices=mixed.choices,
                             granularity=mixed.granularity)
        except ValueError as exc:
            raise ConvertError(str(exc)) from exc
        config = replace(config, overrides=tuple(config.overrides) + tuple(found))
    plan = plan_work(measure_cost(loaded.model, x), n_cal, fit_opts)
    fit_opts = plan.fit
    if plan.note:
        say(plan.note)
        fid["work"] = plan.note
    say(f"quantizing ({config.method}, {config.bits}-bit) and calibrating on {n_cal} samples")
    try:
        model = quantize_model(loaded.model, config, x, n_cal, check=check, refine_samples=plan.refine_samples)
    except ValueError as exc:  # e.g. an override that matches no layer, or bits its format refuses
        raise ConvertError(str(exc)) from exc
    fid["calibrated"] = fidelity(model, teacher, x[held])
    if y is not None:
        accuracy["calibrated"] = top1(model, x, y)
    if fit_opts.steps > 0:
        say(f"fitting to the float model on {n_cal} samples ({fit_opts.steps} steps of {fit_opts.batch_size})")
        xc = to_torch(x[:n_cal])
        before = copy.deepcopy(model.state_dict())
        fid["fit"] = fit(model, teacher, xc, fit_opts, progress=fit_progress)
        model.eval()
        fid["fitted"] = fidelity(model, teacher, x[held])
        if _worse(fid["fitted"], fid["calibrated"]) and held.start >= n_cal:
            # A fit (short, or on few samples) that moved the model away from the float one on
            # held-out inputs is undone: convert never ships something worse than calibration.
            model.load_state_dict(before)
            fid["fit"]["reverted"] = True
            say("the fit made the held-out fidelity worse: kept the calibrated model")
            fid["fitted"] = fid["calibrated"]
    fid["held_out"] = {"first": int(held.start), "samples": int(held.stop - held.start),
                       "disjoint_from_calibration": bool(held.start >= n_cal)}
    warning = fidelity_warning(fid.get("fitted", fid["calibrated"]), config)
    if warning:
        fid["warning"] = warning
    if mixed is not None:
        fid["mixed"] = {"budget": str(mixed.budget), "granularity": mixed.granularity,
                        "code_bytes": code_bytes(model), "layers": bits_summary(model)}
    return model, accuracy, fid, n_cal, config


def _worse(after: dict, before: dict) -> bool:
    """Fidelity ``after`` below ``before``: a lower output SQNR (None is a perfect match)."""
    a, b = after["sqnr_db"], before["sqnr_db"]
    return a is not None and (b is None or a < b)


def write_report(report: ParityReport, path: Path, context: dict) -> None:
    """Write a parity report as JSON (atomically), with ``context`` (which files, which data).

    Example:
        >>> write_report(qexport.check_parity(model, proto, x), Path("w3.parity.json"), {"onnx": "w3.onnx"})
    """
    atomic_write_text(path, json.dumps({**context, **report.to_dict()}, indent=2, sort_keys=True) + "\n")
