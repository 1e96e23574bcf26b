"""The ``qexport`` command line: a thin typer app over the Python API."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

# rich_markup_mode=None: click's plain help. Typer's rich help panel prints a type after every
# option, flags included ("--help <bool>"); the plain one does not, and reads the same in a log.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Quantize PyTorch models to low-bit ASQ/POST, export them to ONNX with ai.qexport ops, "
                       "and prove that ONNX Runtime computes what PyTorch computed.")
# Not a terminal (a log, CI): wide enough that layer names in tables are not cut.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=None if sys.stdout.isatty() else 160)

DATA_HELP = ("Inputs for calibration and validation: 'samples' (the shipped 512 Fashion-MNIST images, default), "
             "'fashion-mnist' (its test set, from the Debian package), or an .npz with x (N, ...) float32 (images (N, C, H, W), sequences (N, C, L), vectors (N, features)) in "
             "the model's own input convention and optional labels y.")


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qexport")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from . import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        out.print(f"qexport {_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print qexport's version and exit.")) -> None:
    pass


def _method(method: str | None) -> str | None:
    """--method as the user typed it: case and spaces do not matter ('ASQ + POST' is asq+post)."""
    return None if method is None else "".join(method.split()).lower()


def _check_bits(bits: int | None) -> None:
    """--bits outside every method's range: say the ranges (QuantConfig's message suggests uniform
    weights, which cannot help here)."""
    if bits is not None and not 2 <= bits <= 8:
        _fail(f"--bits {bits} is out of range: weights take 2..8 bits with --method lsq or asq (uniform weights), "
              f"2..4 with +pot, +post or +perparam_post; 2..8 with +perparam (the widest width of a weight)")


OVERRIDE_HELP = ("Per-layer settings, repeatable: PATTERN:key=value[,key=value] or PATTERN:skip, keys bits, act_bits, "
                 "method; PATTERN matches module names (fnmatch), later overrides win. E.g. --override 'features.4.*:bits=8' "
                 "--override 'fc:skip'.")


def _overrides(texts: list[str] | None) -> tuple:
    from . import parse_override

    try:
        return tuple(parse_override(t) for t in texts or ())
    except ValueError as exc:
        _fail(str(exc))


def _load_data(spec: str, limit: int | None):
    from . import load_dataset

    if limit is not None and limit < 1:
        _fail(f"--limit {limit} leaves no samples: give 1 or more (or leave --limit out to use all of --data)")
    try:
        x, y = load_dataset(spec)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(str(exc))
    if len(x) == 0:
        _fail(f"no samples in --data {spec}: it holds 0 inputs; give data with at least one sample")
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    return x, y


def print_report(report, title: str = "parity") -> None:
    from . import ParityReport

    assert isinstance(report, ParityReport)
    table = Table(title=f"{title}: {report.samples} samples", show_lines=False)
    for col in ("layer", "op", "w bits", "act", "codes", "mismatches", "weights"):
        table.add_column(col, justify="right" if col in ("w bits", "codes", "mismatches") else "left")
    for row in report.layers:
        mism = "[green]0[/]" if row.mismatches == 0 else f"[red]{row.mismatches} (max {row.max_diff})[/]"
        wt = "ok" if row.weight_mismatches == 0 else ("n/a" if row.weight_mismatches < 0 else f"[red]{row.weight_mismatches} differ[/]")
        table.add_row(row.name, row.op, _bits_text(row.bits), f"{row.act} {row.act_bits}b", f"{row.codes:,}", mism, wt)
    out.print(table)
    for label, block in (("vs PyTorch deploy model (integer reference)", report.vs_deploy),
                         ("vs PyTorch trained model (fake quantization)", report.vs_trained)):
        sq = block["sqnr_db"]
        sq_txt = "inf" if sq == float("inf") else f"{sq:.1f} dB"
        steps = block.get("max_err_output_steps")
        steps_txt = "" if steps is None else f" ({steps:.3g} output steps)"
        out.print(f"ONNX {label}: max abs err {block['max_abs_err']:.3g}{steps_txt}, max rel err "
                  f"{block['max_rel_err']:.3g}, top-1 agreement {block['top1_agreement']:.2%}, SQNR {sq_txt}")
    if report.asq_steps:
        out.print("ASQ per-sample step (ONNX Runtime), std/mean (min..max): " + "; ".join(
            f"{name.removesuffix('/quantize')} {v['cv']:.2%} ({v['min']:.3g}..{v['max']:.3g})"
            for name, v in report.asq_steps.items() if v.get("cv") is not None), highlight=False)
    if report.accuracy:
        out.print("accuracy on these samples: " + ", ".join(f"{k} {v:.2%}" for k, v in report.accuracy.items()))
    for note in report.notes:
        out.print(f"[bold yellow]note:[/] {note}")
    if report.passed:
        out.print("[bold green]parity: PASS[/]")
    else:
        out.print("[bold red]parity: FAIL[/]")
        for f in report.failures:
            out.print(f"  - {f}")


@contextmanager
def _progress(step_label: str, sample_label: str = "", samples: int = 0):
    """One rich progress display on stderr and two callbacks that add their bar on first use:
    ``steps(step, total, loss)`` (fitting) and ``advance(n)`` (samples validated)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[dim]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        tasks: dict[str, object] = {}

        def done_status() -> None:
            if "status" in tasks:
                bar.remove_task(tasks.pop("status"))

        def steps(step: int, total: int, loss: float) -> None:
            if "steps" not in tasks:
                done_status()
                tasks["steps"] = bar.add_task(step_label, total=total, status="")
            bar.update(tasks["steps"], completed=step, status=f"loss {loss:.4f}")

        def advance(n: int) -> None:
            if "samples" not in tasks:
                done_status()
                tasks["samples"] = bar.add_task(sample_label, total=samples, status="")
            bar.advance(tasks["samples"], n)

        def status(msg: str) -> None:
            """Print a step's message and show it as a running (indeterminate) bar with its elapsed
            time until the next message or bar: no step of a long convert runs without one."""
            console.print(f"[dim]{msg}[/]")
            done_status()
            if "steps" in tasks:  # the fit is over once convert says what comes next
                bar.remove_task(tasks.pop("steps"))
            tasks["status"] = bar.add_task(msg.split(" (")[0][:60], total=None, status="")

        steps.status = status  # type: ignore[attr-defined]
        yield steps, advance


def print_fidelity(fid: dict) -> None:
    """The float -> calibrated -> fitted fidelity of a convert, and its warning."""
    if not fid:
        return

    def fmt(d: dict) -> str:
        sq = "inf" if d["sqnr_db"] is None else f"{d['sqnr_db']:.1f} dB"
        return f"top-1 agreement {d['top1_agreement']:.2%}, SQNR {sq}"

    held = fid["held_out"]
    where = "held-out" if held["disjoint_from_calibration"] else "calibration (no held-out data)"
    line = f"fidelity to the float model on {held['samples']} {where} samples: calibrated {fmt(fid['calibrated'])}"
    if "fitted" in fid:
        line += f"; fitted {fmt(fid['fitted'])}"
    out.print(line, highlight=False)
    if fid.get("warning"):
        out.print(f"[bold yellow]warning:[/] {fid['warning']}")


def _tolerances(max_mismatch_rate: float, min_agreement: float):
    from . import Tolerances

    return Tolerances(max_code_mismatch_rate=max_mismatch_rate, min_top1_agreement=min_agreement)


FORMAT_HELP = ("qexport (default): ai.qexport custom ops, every method, run with the qexport library. qdq: "
               "standard ONNX only (QuantizeLinear, ConvInteger, MatMulInteger) that a plain onnxruntime runs without "
               "the library, bit-exact; LSQ activations with uniform weights only (--method lsq, its default then).")


def _check_format(export_format: str) -> str:
    fmt = export_format.strip().lower()
    if fmt not in ("qexport", "qdq"):
        _fail(f"unknown --format {export_format!r}: choose qexport (ai.qexport custom ops) or qdq (standard ONNX)")
    return fmt


def _bits_text(bits) -> str:
    """One bit-width as it is; per-channel widths as their range, mean and counts."""
    if isinstance(bits, int):
        return str(bits)
    counts = {b: list(bits).count(b) for b in sorted(set(bits))}
    return f"{sum(bits) / len(bits):.2f} avg (" + ", ".join(f"{c}x{b}" for b, c in counts.items()) + ")"


def _print_result(result, export_format: str) -> None:
    """What convert and export wrote, and the parity report (exits 1 when parity fails)."""
    print_fidelity(result.fidelity)
    size = result.onnx_path.stat().st_size
    kind = "; standard ONNX (qdq), runs without the qexport library" if export_format == "qdq" else ""
    cov = (result.fidelity or {}).get("coverage")
    if cov:
        out.print(f"quantized {cov['layers']} conv/linear layers" + (f"; {len(cov['skipped'])} stay float "
                  f"(coverage {cov['coverage']:.0%}): " + "; ".join(cov["skipped"]) if cov["skipped"] else
                  " (every conv/linear layer of the model)"))
    mixed = (result.fidelity or {}).get("mixed")
    weights = (f"mixed weight bit-widths per {mixed['granularity']}, {mixed['code_bytes']:,} bytes of weight codes"
               if mixed else f"{result.config.bits}-bit weights")
    out.print(f"wrote {result.onnx_path} ({size:,} bytes; {result.config.method}, {weights}{kind})")
    if result.checkpoint_path:
        out.print(f"wrote {result.checkpoint_path} (the calibrated quantized model, for `qexport validate`)")
    if result.report is not None:
        print_report(result.report, title="parity (plain ONNX Runtime)" if export_format == "qdq" else "parity")
        out.print(f"wrote {result.report_path}")
        if not result.report.passed:
            raise typer.Exit(1)


BUDGET_HELP = ("Mixed precision: a size for the packed weight codes of all quantized layers, e.g. 40KB, 0.5MB, "
               "or an average such as 2.5bits; the body layers' weight bit-widths are then allocated to fit it "
               "(--bits sets the activations).")


def _mixed_options(size_budget: str | None, bit_choices: str | None, granularity: str):
    """The MixedOptions of --size-budget / --bit-choices / --granularity (None without a budget)."""
    from . import MixedOptions, parse_budget

    if size_budget is None:
        if bit_choices is not None:
            _fail("--bit-choices needs --size-budget")
        return None
    granularity = granularity.strip().lower()
    if granularity not in ("channel", "layer"):
        _fail(f"unknown --granularity {granularity!r}: choose channel or layer")
    try:
        budget = parse_budget(size_budget)
        choices = None
        if bit_choices is not None:
            choices = tuple(int(b) for b in bit_choices.replace(" ", "").split(",") if b)
            if not choices or any(b < 2 or b > 8 for b in choices):
                raise ValueError(f"--bit-choices {bit_choices!r}: expected bit-widths in 2..8, e.g. 2,3,4")
    except ValueError as exc:
        _fail(str(exc))
    return MixedOptions(budget, choices, granularity)


@app.command()
def inspect(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="A qexport model (from `qexport convert` or `qexport export`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON instead of a table."),
) -> None:
    """Per layer: op, weight codec, bit-widths (a histogram when they vary per channel or, for per-parameter formats, per weight), parameters, packed bytes; totals and the ratio to float32; versions and ops."""
    from . import inspect_model

    if not model.is_file():
        _fail(f"{model} not found")
    try:
        info = inspect_model(model)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(info.to_dict(), indent=2, sort_keys=True))
        return
    table = Table(title=f"{model.name}: {info.file_bytes:,} bytes, written by qexport {info.qexport_version or '?'}"
                        f"{', ' + info.method if info.method else ''}")
    for col in ("layer", "op", "weights", "bits", "act", "params", "codes (B)", "scales/bias/adapter (B)"):
        table.add_column(col, justify="right" if col in ("params", "codes (B)", "scales/bias/adapter (B)") else "left")
    for layer in info.layers:
        adapter = f" (adapter {layer.adapter_params:,} params)" if layer.adapter_params else ""
        table.add_row(layer.name, layer.op, layer.weights, layer.bits_text, f"{layer.act} {layer.act_bits}b", f"{layer.params:,}",
                      f"{layer.weight_bytes:,}", f"{layer.other_bytes:,}{adapter}")
    out.print(table)
    t = info.totals()
    out.print(f"quantized layers: {t['quantized_params']:,} parameters, {t['weight_bytes']:,} bytes of weight codes + "
              f"{t['scale_bias_adapter_bytes']:,} bytes of scales, biases and adapters: {t['ratio_to_float']:.1f}x "
              f"smaller than the same parameters in float32 ({t['float32_bytes_of_these_params']:,} bytes)")
    if not info.ops:
        out.print(f"standard ONNX only (--format qdq: 8-bit integer storage, scales in Mul nodes); opsets {info.opset}; "
                  "runs in a plain onnxruntime without the qexport library")
        return
    out.print("ai.qexport ops: " + ", ".join(f"{op} x{n}" for op, n in info.ops.items()) +
              f"; opsets {info.opset}")
    if info.missing_ops is None:
        out.print("library: not found here (`qexport build-ops` builds it); cannot tell whether it runs this file")
    elif info.missing_ops:
        out.print(f"[red]the installed library does not register {', '.join(info.missing_ops)}: "
                  f"update qexport to run this file[/]")
    else:
        out.print("the installed library registers every op of this file")


@app.command()
def report(
    model: Path = typer.Argument(..., metavar="MODEL.pt", help="The quantized qexport checkpoint (from `qexport train` or `qexport convert`)."),
    onnx_model: Path = typer.Argument(..., metavar="MODEL.onnx", help="Its ONNX export."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The .html to write (default: <MODEL>.report.html beside MODEL.onnx)."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP.replace("Inputs for calibration and validation", "Inputs to measure on").replace(
        ", default)", "; the default for models that take 1x28x28 inputs, others need --data)")),
    limit: int = typer.Option(512, "--limit", help="Use only the first N samples of --data."),
    batch_size: int = typer.Option(128, "--batch-size", help="Samples per run."),
) -> None:
    """One self-contained HTML page of what quantization did: per-layer weight and activation SQNR, bit-widths, the size split, ASQ step factors, parity and top-1 (docs/report.md). Exits 1 when parity fails."""
    from . import inspect_model
    from .report import measure, prepare, write_report_html
    from .runtime.bench import input_shape

    for path in (model, onnx_model):
        if not path.is_file():
            _fail(f"{path} not found")
    try:
        inspect_model(onnx_model)  # a file that is not a qexport model is refused before any data is read
    except ValueError as exc:
        _fail(str(exc))
    if data is None:
        try:
            shape = input_shape(onnx_model)
        except ValueError:
            shape = None
        if shape != [1, 28, 28]:
            _fail(f"{onnx_model.name} takes inputs of shape {shape or 'unknown'}, not the shipped samples' 1x28x28: "
                  f"give --data (an .npz with x (N, ...) in the model's input convention)")
        data = "samples"
    x, y = _load_data(data, limit)
    output = output or onnx_model.with_name(onnx_model.stem + ".report.html")
    try:
        inputs = prepare(model, onnx_model, x)  # a float checkpoint, data the model does not take: before any run
        with _progress("", f"parity and statistics, 2 passes over {len(x):,} samples", 2 * len(x)) as (_, advance):
            result = measure(inputs, y, data_name=data, batch_size=batch_size, progress=advance,
                             say=lambda msg: console.print(f"[dim]{msg}[/]"))
    except ValueError as exc:
        _fail(str(exc))
    write_report_html(output, result)
    sqnr = [s.weight_sqnr_db for s in result.layers.values()]
    out.print(f"wrote {output} ({output.stat().st_size:,} bytes): {len(result.layers)} layers, weight SQNR "
              f"{min(sqnr):.1f}..{max(sqnr):.1f} dB, {result.samples:,} samples; "
              + ("[bold green]parity: PASS[/]" if result.passed else "[bold red]parity: FAIL[/]"))
    if not result.passed:
        raise typer.Exit(1)


def _arch_args(text: str | None) -> dict | None:
    """--arch-args: a JSON object of architecture arguments (None when not given)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        _fail(f"--arch-args is not valid JSON ({exc}): give an object, e.g. '{{\"width\": 16}}'")
    if not isinstance(value, dict):
        _fail(f"--arch-args must be a JSON object, got {text!r}")
    return value


def _fit_options(steps: int | None, batch: int | None):
    """The user's fit options, or None: convert sizes the fit to the model (``plan_work``)."""
    from . import FitOptions

    if steps is None and batch is None:
        return None
    return FitOptions(**({} if steps is None else {"steps": steps}), **({} if batch is None else {"batch_size": batch}))


@app.command()
def convert(
    model: Path = typer.Argument(..., help="A qexport checkpoint (float or quantized), a torch.export program (.pt2, no model code needed), a state dict (with --arch), or a pickled nn.Module (with --trust-pickle)."),
    bits: Optional[int] = typer.Option(None, "--bits", "-b", help="Weight bit-width of the body layers (default 4; POST/POT: 2..4)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="lsq, asq, lsq+pot, lsq+post, asq+pot, asq+post (default asq+post)."),
    act_bits: Optional[int] = typer.Option(None, "--act-bits", help="Activation bit-width of the body layers (default: --bits)."),
    first_last_bits: int = typer.Option(8, "--first-last-bits", help="Bit-width of the first and last layers (uniform LSQ); 0: quantize them like the body."),
    override: Optional[List[str]] = typer.Option(None, "--override", help=OVERRIDE_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The .onnx to write (default: <model>_<method>_w<bits>.onnx here)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Zoo architecture of a plain state dict (see `qexport models`)."),
    arch_args: Optional[str] = typer.Option(None, "--arch-args", help="With --arch: JSON object of the architecture's arguments, e.g. '{\"width\": 16}'."),
    data: str = typer.Option("samples", "--data", help=DATA_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples of --data."),
    calib_samples: int = typer.Option(512, "--calib-samples", help="Samples used to calibrate and fit a float model (the rest of --data, or else its last eighth, measures fidelity)."),
    fit_steps: Optional[int] = typer.Option(None, "--fit-steps", help="Steps of the post-training fit to the float model (steps, adapters, scales, weight rounding); 0 skips it. Default 200 (or $QEXPORT_FIT_STEPS), fewer for large models (see docs/design.md, 'Work budget')."),
    fit_batch: Optional[int] = typer.Option(None, "--fit-batch-size", help="Samples per fitting step (default 32, fewer for large models)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow loading a pickled nn.Module (runs code from the file: only for files you trust)."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check parity with PyTorch after export (default on)."),
    max_mismatch_rate: float = typer.Option(0.0, "--max-code-mismatch-rate", help="Per-layer fraction of activation codes allowed to differ."),
    min_agreement: float = typer.Option(1.0, "--min-top1-agreement", help="Minimum top-1 agreement with PyTorch."),
    export_format: str = typer.Option("qexport", "--format", help=FORMAT_HELP),
    size_budget: Optional[str] = typer.Option(None, "--size-budget", help=BUDGET_HELP),
    bit_choices: Optional[str] = typer.Option(None, "--bit-choices", help="Candidate weight bit-widths for --size-budget, e.g. 2,3,4 (default 2,3,4,8 where the format has them)."),
    granularity: str = typer.Option("channel", "--granularity", help="--size-budget allocates bit-widths per output 'channel' (default) or per 'layer'."),
    module_path: Optional[List[Path]] = typer.Option(None, "--module-path", help="With --trust-pickle: a folder holding the Python module of the pickled model's classes (the current folder and the model file's folder are searched too)."),
) -> None:
    """Quantize (if float) and export a model to ONNX with ai.qexport ops (or standard ONNX with --format qdq), then check parity."""
    from . import CheckpointError, ConvertError, ExportError, convert_model as run

    method = _method(method)
    export_format = _check_format(export_format)
    _check_bits(bits)
    if calib_samples < 1 or (fit_steps is not None and fit_steps < 0) or (fit_batch is not None and fit_batch < 1):
        _fail("--calib-samples and --fit-batch-size must be >= 1, --fit-steps >= 0")
    overrides = _overrides(override)
    model_args = _arch_args(arch_args)
    x, y = _load_data(data, limit)
    with _progress("fitting", f"validating on {len(x):,} samples", len(x)) as (fit_progress, advance):
        try:
            result = run(model, x=x, y=y, output=output, method=method, bits=bits, act_bits=act_bits,
                         first_last_bits=first_last_bits or None, arch=arch, trust_pickle=trust_pickle,
                         calib_samples=calib_samples, validate=validate, data_name=data,
                         tolerances=_tolerances(max_mismatch_rate, min_agreement),
                         fit_options=_fit_options(fit_steps, fit_batch),
                         overrides=overrides, export_format=export_format,
                         mixed=_mixed_options(size_budget, bit_choices, granularity), validate_progress=advance,
                         module_path=tuple(str(p) for p in module_path or ()), arch_args=model_args,
                         progress=fit_progress.status, fit_progress=fit_progress)
        except (CheckpointError, ConvertError, ExportError) as exc:
            _fail(str(exc))
    _print_result(result, export_format)


@app.command()
def export(
    model: Path = typer.Argument(..., help="A quantized qexport checkpoint (from `qexport train` or `qexport convert`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The .onnx to write (default: <model>_<method>_w<bits>[_qdq].onnx here)."),
    export_format: str = typer.Option("qexport", "--format", help=FORMAT_HELP),
    data: str = typer.Option("samples", "--data", help=DATA_HELP.replace("Inputs for calibration and validation",
                                                                          "Inputs for the example batch and the parity check")),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples of --data."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check parity with PyTorch after export (default on)."),
    max_mismatch_rate: float = typer.Option(0.0, "--max-code-mismatch-rate", help="Per-layer fraction of activation codes allowed to differ."),
    min_agreement: float = typer.Option(1.0, "--min-top1-agreement", help="Minimum top-1 agreement with PyTorch."),
) -> None:
    """Export a quantized checkpoint as it is (no calibration, no fitting) to ONNX, then check parity."""
    from . import CheckpointError, ConvertError, ExportError, convert_model as run

    export_format = _check_format(export_format)
    x, y = _load_data(data, limit)
    try:
        result = run(model, x=x, y=y, output=output, validate=validate, data_name=data,
                     tolerances=_tolerances(max_mismatch_rate, min_agreement), export_format=export_format,
                     require_quantized=True, first_last_bits=None,
                     progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except (CheckpointError, ConvertError, ExportError) as exc:
        _fail(str(exc))
    _print_result(result, export_format)


@app.command()
def validate(
    model: Path = typer.Argument(..., help="The quantized qexport checkpoint (from `qexport train` or `qexport convert`)."),
    onnx_model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The exported ONNX model."),
    data: str = typer.Option("samples", "--data", help=DATA_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples of --data."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the report as JSON here."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per ONNX run (default 128, fewer for large inputs; --target aarch64: all at once, one emulator start per CPU)."),
    max_mismatch_rate: float = typer.Option(0.0, "--max-code-mismatch-rate", help="Per-layer fraction of activation codes allowed to differ."),
    min_agreement: float = typer.Option(1.0, "--min-top1-agreement", help="Minimum top-1 agreement with PyTorch."),
    target: str = typer.Option("x86_64", "--target", help="x86_64: ONNX Runtime in this process; aarch64: the aarch64 qexport-run runner and op library under qemu-aarch64 (docs/deploy-arm.md)."),
    cpu: str = typer.Option("cortex-a76,cortex-a53", "--cpu", help="--target aarch64: comma-separated qemu CPU models to check on (cortex-a76: NEON+dotprod, cortex-a53: NEON only)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads of ONNX Runtime / the runner (default: ONNX Runtime's; the runner's: all CPUs)."),
    dist: Optional[Path] = typer.Option(None, "--dist", help="--target aarch64: folder written by `qexport build-ops --target aarch64` (default: build it now into build/dist-aarch64 of the source tree)."),
) -> None:
    """Run the PyTorch model and the ONNX model on the same inputs and compare codes and outputs.

    Exits 1 when parity fails, 2 on unusable inputs."""
    import onnx

    from . import CheckpointError, build_model_from_checkpoint, check_parity, load_checkpoint, write_report

    try:
        ckpt = load_checkpoint(model)
        if not ckpt.get("quant"):
            _fail(f"{model} is a float model; validate compares the quantized model with its export. Pass the "
                  f"quantized checkpoint (`qexport convert` writes one beside the .onnx).")
        qmodel = build_model_from_checkpoint(ckpt)
    except CheckpointError as exc:
        _fail(str(exc))
    context = {"onnx": str(onnx_model), "model": str(model), "data": data,
               "method": ckpt["quant"].get("method"), "bits": ckpt["quant"].get("bits")}
    try:
        proto = onnx.load(str(onnx_model))
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input file
        _fail(f"{onnx_model}: not a valid ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    x, y = _load_data(data, limit)
    qdq = any(p.key == "qexport.format" and p.value == "qdq" for p in proto.metadata_props)
    if qdq and target != "x86_64":
        _fail(f"{onnx_model} is a standard-ONNX (qdq) model: it needs no qexport library on the device; validate it "
              f"here (--target x86_64) and run it with any onnxruntime")
    if target != "x86_64":
        _validate_on_target(qmodel, proto, x, y, target=target, cpus=cpu, threads=threads, dist=dist,
                            batch_size=batch_size, tolerances=_tolerances(max_mismatch_rate, min_agreement),
                            report=report, context=context)
        return
    try:
        from . import make_session

        with _progress("", f"validating on {len(x):,} samples", len(x)) as (_, advance):
            if qdq:
                from . import check_qdq_parity

                result = check_qdq_parity(qmodel, proto, x, y, batch_size=batch_size, threads=threads,
                                          tolerances=_tolerances(max_mismatch_rate, min_agreement), progress=advance)
            else:
                result = check_parity(qmodel, proto, x, y, batch_size=batch_size,
                                      tolerances=_tolerances(max_mismatch_rate, min_agreement),
                                      session_factory=lambda data_: make_session(data_, threads), progress=advance)
    except ValueError as exc:
        _fail(str(exc))
    print_report(result, title="parity (plain ONNX Runtime)" if qdq else "parity")
    if report:
        write_report(result, report, context)
    if not result.passed:
        raise typer.Exit(1)


def _validate_on_target(qmodel, proto, x, y, *, target: str, cpus: str, threads: Optional[int], dist: Optional[Path],
                        batch_size: Optional[int], tolerances, report: Optional[Path], context: dict) -> None:
    """validate --target aarch64: parity of the runner under qemu-aarch64, once per --cpu."""
    import time

    from . import DeployError, build_ops, validate_on_runner
    from .deploy import dist_files, fetch_qemu, source_dir  # device-deploy helpers of `qexport build-ops`
    from .io import atomic_write_text

    if target != "aarch64":
        _fail(f"unknown --target {target!r}: choose x86_64 or aarch64")
    cpu_list = [c.strip() for c in cpus.split(",") if c.strip()]
    if not cpu_list:
        _fail("--cpu names no CPU")
    say = lambda msg: console.print(f"[dim]{msg}[/]")  # noqa: E731
    try:
        if dist is None:
            dist = source_dir().parent / "build" / "dist-aarch64"
            built = build_ops("aarch64", dist, progress=say)
            say(f"built {dist} in {built.seconds:.1f} s")
        runner, ops, ort = dist_files(dist, "aarch64")
        qemu = fetch_qemu(say=say)
        t0 = time.perf_counter()
        runs = validate_on_runner(qmodel, proto, x, y, runner=runner, ops=ops, ort=ort, qemu=qemu, cpus=cpu_list,
                                  threads=threads, batch_size=batch_size, tolerances=tolerances,
                                  on_cpu=lambda c: say(f"running {len(x)} samples on qemu-aarch64 -cpu {c}"))
    except (DeployError, ValueError) as exc:
        _fail(str(exc))
    for run in runs:
        print_report(run.report, title=f"parity, aarch64 -cpu {run.cpu}")
        out.print(f"emulated run (-cpu {run.cpu}): {run.seconds:.1f} s wall"
                  + (f", session.Run {run.runner_ms / 1000:.1f} s" if run.runner_ms is not None else ""))
    failed = [r.cpu for r in runs if not r.report.passed]
    out.print(f"aarch64 parity on {', '.join(r.cpu for r in runs)}: "
              + ("[bold green]PASS[/]" if not failed else f"[bold red]FAIL[/] on {', '.join(failed)}")
              + f" ({time.perf_counter() - t0:.0f} s)")
    if report:
        payload = {**context, "target": target, "threads": threads, "passed": not failed,
                   "cpus": {r.cpu: {**r.report.to_dict(), "emulated_seconds": r.seconds} for r in runs}}
        atomic_write_text(report, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    if failed:
        raise typer.Exit(1)


@app.command("build-ops")
def build_ops_cmd(
    target: str = typer.Option("aarch64", "--target", help="x86_64 or aarch64 (cross-compiled with Debian's g++-aarch64-linux-gnu)."),
    output: Path = typer.Option(Path("dist"), "--output", "-o", help="Folder for qexport-run, libqexport_ops.so and libonnxruntime.so.1."),
    source: Optional[Path] = typer.Option(None, "--source", help="The custom_ops/ folder (default: the one of this source tree)."),
    build_dir: Optional[Path] = typer.Option(None, "--build-dir", help="CMake build folder (default: build/qexport-<target>)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel compile jobs."),
    with_ort: bool = typer.Option(True, "--ort/--no-ort", help="Also put ONNX Runtime's library for the target (from its onnxruntime wheel, same version as installed) in the folder."),
) -> None:
    """Build the custom-op library and the qexport-run runner for a target CPU: the files to copy to a device."""
    from . import DeployError, build_ops

    try:
        result = build_ops(target, output, source=source, build_dir=build_dir, jobs=jobs, with_ort=with_ort,
                           progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except DeployError as exc:
        _fail(str(exc))
    for path in result.files:
        out.print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    out.print(f"built for {target} in {result.seconds:.1f} s (build folder {result.build_dir}). On the device: "
              f"./qexport-run model.onnx --input input=x.npy --output-dir out/ (docs/deploy-arm.md)")


@app.command()
def train(
    output: Path = typer.Option(..., "--output", "-o", help="The checkpoint to write after every epoch (self-describing: arch, config, weights, metrics, training state); the best epoch's model also goes to <stem>.best.pt."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Zoo architecture (default: the --from checkpoint's, else small_cnn)."),
    arch_args: Optional[str] = typer.Option(None, "--arch-args", help="JSON object of model arguments, e.g. '{\"width\": 16}'."),
    method: str = typer.Option("asq+post", "--method", "-m", help="float, lsq, asq, lsq+pot, lsq+post, asq+pot, asq+post; lsq+perparam, asq+perparam, lsq+perparam_post, asq+perparam_post: a bit-width per weight (Khoram and Li; docs/perparam.md)."),
    bits: int = typer.Option(4, "--bits", "-b", help="Weight bit-width of the body layers (activations too unless --act-bits); per-parameter methods: the widest width a weight may have."),
    act_bits: Optional[int] = typer.Option(None, "--act-bits", help="Activation bit-width of the body layers."),
    first_last_bits: int = typer.Option(8, "--first-last-bits", help="Bit-width of the first and last layers (uniform LSQ); 0: quantize them like the body."),
    override: Optional[List[str]] = typer.Option(None, "--override", help=OVERRIDE_HELP),
    epochs: int = typer.Option(3, "--epochs", "-e"),
    batch_size: int = typer.Option(128, "--batch-size", help="Global batch; under torchrun each of N processes takes batch-size/N."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate; default 0.01 with --from, else 0.1."),
    schedule: str = typer.Option("cosine", "--schedule", help="Learning-rate schedule per step: cosine, linear or constant."),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs", help="Linear warm-up over this many epochs."),
    momentum: float = typer.Option(0.9, "--momentum"),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="Not applied to step sizes and alphas."),
    seed: int = typer.Option(0, "--seed", help="Seeds model init, calibration batches, subsets and the per-epoch data order."),
    data: str = typer.Option("fashion-mnist", "--data", help="fashion-mnist, digits, an .npz (x_train/y_train/x_test/y_test, or x/y), or a folder: train/ and test/ ImageFolder trees (<class>/<image or .npy>) or train.npz/test.npz."),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="Evaluate on this dataset (its test split) instead of --data's."),
    from_checkpoint: Optional[Path] = typer.Option(None, "--from", help="Start QAT from this float model: a qexport checkpoint or a torch.export program (.pt2; the checkpoints written name it, keep it beside them)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run at --output from its last complete epoch (same settings); a finished run is left as is, a missing file starts afresh."),
    keep_best: bool = typer.Option(True, "--keep-best/--no-keep-best", help="Also keep the best epoch's model (test top-1) at <stem>.best.pt."),
    metrics_json: Optional[Path] = typer.Option(None, "--metrics-json", help="Write the metrics (per epoch: loss, accuracy, lr, times) here, updated every epoch."),
    distill: bool = typer.Option(False, "--distill", help="Knowledge distillation from the float teacher (--teacher, default the --from model)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Float qexport checkpoint to distil from (implies --distill)."),
    distill_weight: float = typer.Option(0.5, "--distill-weight", help="Weight w of the distillation term: (1-w) CE + w T^2 KL."),
    distill_temperature: float = typer.Option(2.0, "--distill-temperature", help="Softmax temperature T of the distillation term."),
    calib_batches: int = typer.Option(8, "--calib-batches", help="Training batches used to calibrate the quantizers."),
    calib_refine_samples: int = typer.Option(128, "--calib-refine-samples", help="Samples of calibration's output-aware step refinement (0: off; cost: layers x 6 forward passes)."),
    augment: bool = typer.Option(False, "--augment", help="Random horizontal flips."),
    limit_train: Optional[int] = typer.Option(None, "--limit-train", help="Train on a seeded random subset of this size."),
    limit_test: Optional[int] = typer.Option(None, "--limit-test", help="Evaluate on the first N test samples."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    size_budget: Optional[str] = typer.Option(None, "--size-budget", help=BUDGET_HELP.replace("allocated", "searched (Cheng et al.) after calibration")),
    bit_choices: Optional[str] = typer.Option(None, "--bit-choices", help="Candidate weight bit-widths of the --size-budget search, e.g. 2,3,4."),
    granularity: str = typer.Option("channel", "--granularity", help="--size-budget searches a bit-width per output 'channel' (default) or per 'layer'."),
    search_steps: int = typer.Option(300, "--search-steps", help="Steps of the --size-budget search."),
    perparam_rounds: int = typer.Option(10, "--perparam-rounds", help="Per-parameter methods: at most this many rounds of margins + retraining."),
    perparam_steps: int = typer.Option(200, "--perparam-steps", help="Per-parameter methods: retraining steps per round."),
    perparam_tolerance: float = typer.Option(0.5, "--perparam-tolerance", help="Per-parameter methods: keep shrinking while accuracy on held-out training samples stays within this many points of the float model's."),
) -> None:
    """Train a float model or run quantization-aware training (SGD, momentum 0.9, cosine).

    Under torchrun (`torchrun --nproc_per_node N -m qexport.cli train ...`) the same command
    trains with DistributedDataParallel: gloo on CPU, nccl on CUDA; rank 0 writes the files."""
    # Over 80 lines because of its option declarations (typer reads them from the signature); the
    # body only builds a TrainConfig and calls qexport.train_model.
    import os

    from . import CheckpointError, TrainConfig, train_model as run

    method = _method(method)
    if method != "float":
        _check_bits(bits)
    quant_args = {"first_last_bits": first_last_bits or None}
    if act_bits is not None:
        quant_args["act_bits"] = act_bits
    if override:
        quant_args["overrides"] = [list(o) for o in _overrides(override)]
    mixed = _mixed_options(size_budget, bit_choices, granularity)
    try:
        model_args = _arch_args(arch_args) or {}
        config = TrainConfig(arch=arch, arch_args=model_args, method=method, bits=bits,
                             quant_args=quant_args if method != "float" else {}, epochs=epochs, batch_size=batch_size,
                             lr=lr, schedule=schedule, warmup_epochs=warmup_epochs, momentum=momentum,
                             weight_decay=weight_decay, seed=seed, data=data, test_data=test_data,
                             from_checkpoint=str(from_checkpoint) if from_checkpoint else None, output=str(output),
                             resume=resume, keep_best=keep_best, metrics_json=str(metrics_json) if metrics_json else None,
                             distill=distill, teacher=str(teacher) if teacher else None, distill_weight=distill_weight,
                             distill_temperature=distill_temperature, calib_batches=calib_batches,
                             calib_refine_samples=calib_refine_samples, augment=augment,
                             limit_train=limit_train, limit_test=limit_test, progress=progress,
                             size_budget=size_budget, bit_choices=mixed.choices if mixed else None,
                             granularity=mixed.granularity if mixed else "channel", search_steps=search_steps,
                             perparam_rounds=perparam_rounds, perparam_steps=perparam_steps,
                             perparam_tolerance=perparam_tolerance)
        metrics = run(config)
    except (CheckpointError, ValueError, FileNotFoundError, ImportError) as exc:
        _fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:
        out.print(f"wrote {output}: test top-1 {metrics['final_test_acc']:.2f}% (best {metrics['best_test_acc']:.2f}% "
                  f"at epoch {metrics['best_epoch']}), {metrics['wall_time_s']:.0f} s")
        search = metrics.get("bit_search")
        if search:
            out.print(f"bit-width search: {search['code_bytes']:,} bytes of weight codes (limit "
                      f"{search['limit_bytes']:,.0f} for the searched layers); mean bits per layer: " + ", ".join(
                          f"{n} {v['mean_bits']:.2f}" for n, v in search["layers"].items()))
        pp = metrics.get("perparam")
        if pp:
            fin = pp["final"]
            out.print(f"per-parameter precision: {len([r for r in pp['rounds'] if r['accepted']])} rounds kept, "
                      f"{fin['mean_bits']:.2f} bits per weight, {100 * fin['pruned']:.1f}% pruned, "
                      f"{fin['stream_bytes']:,} bytes of entropy-coded weights (at the end of the rounds)")


@app.command()
def bench(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="A qexport model (from `qexport convert`)."),
    float_model: Optional[Path] = typer.Option(None, "--float", help="The float ONNX export of the same network, timed with ONNX Runtime alongside."),
    int8_model: Optional[Path] = typer.Option(None, "--int8", help="An ONNX Runtime int8 (QDQ) model of the same network, timed alongside."),
    batch: list[int] = typer.Option([1, 32], "--batch", help="Batch sizes (repeat the option)."),
    threads: list[int] = typer.Option([1, 2], "--threads", help="Intra-op thread counts (repeat the option)."),
    rounds: int = typer.Option(20, "--rounds", help="Interleaved rounds per configuration (3 timed runs each at batch < 8)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Also measure peak memory (a subprocess per configuration)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the records here."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Without --float/--int8: build ONNX Runtime's float and int8 (QDQ) models of the network the model was converted from (its checkpoint beside it names the source), once, and time them alongside."),
    plain: bool = typer.Option(False, "--plain", help="Time an ONNX file that has no ai.qexport ops (refused otherwise: it is not a qexport model)."),
) -> None:
    """Time a qexport model in ONNX Runtime, interleaved with ONNX Runtime's float and int8 models of the same network (benchmarks/bench.py runs the whole suite)."""
    from .io import atomic_write_text
    from . import bench_model, qexport_op_count

    for path in [model, float_model, int8_model]:
        if path is not None and not path.is_file():
            _fail(f"{path} does not exist")
    try:
        has_ops = qexport_op_count(model) > 0
    except ValueError as exc:
        _fail(str(exc))
    if not has_ops and not plain:
        _fail(f"{model} has no ai.qexport ops: it is not a qexport model. Pass --plain to time it as a plain ONNX "
              f"Runtime model anyway")
    if has_ops and baselines and float_model is None and int8_model is None:
        from . import baselines_for

        try:
            float_model, int8_model = baselines_for(model, say=lambda msg: console.print(f"[dim]{msg}[/]"))
        except ValueError as exc:
            console.print(f"[yellow]note: no ONNX Runtime baselines: {exc}[/]")
    try:
        records = bench_model(model, float_model=float_model, int8_model=int8_model, batches=batch, threads=threads,
                              rounds=rounds, memory=memory, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except (ValueError, RuntimeError, OSError) as exc:
        _fail(str(exc))
    # Columns only for what was measured; why the others are missing is said below the table.
    label = "qexport" if records[0]["qexport_ops"] else "plain ONNX"
    cols = [("batch", "batch", "d"), ("threads", "threads", "d"), (label, "qexport_ms", ".3f"),
            ("ORT float", "ort_float_ms", ".3f"), ("ORT int8", "ort_int8_ms", ".3f"),
            ("vs float", "qexport_vs_float", ".2f"), ("vs int8", "qexport_vs_int8", ".2f"),
            ("GOPS", "qexport_gops", ".1f")]
    cols = [c for c in cols if all(c[1] in r for r in records)]
    table = Table(title=f"{model.name}: median latency (ms), interleaved in one process")
    for name, _, _ in cols:
        table.add_column(name, justify="right")
    if memory:
        table.add_column("peak MB", justify="right")
    for r in records:
        cells = [format(r[key], spec) for _, key, spec in cols]
        if memory:
            cells.append(f"{r['qexport_memory']['peak_mb']:.0f}")
        table.add_row(*cells)
    out.print(table)
    if not records[0]["qexport_ops"]:
        out.print(f"note: {model.name} has no ai.qexport ops, so it was timed as a plain ONNX Runtime model (column "
                  f"'{label}'); GOPS are counted from ai.qexport convs and gemms only")
    elif not any("qexport_gops" in r for r in records):
        out.print("note: no GOPS: the graph does not record the input shapes of its ai.qexport convs")
    missing = {kind: flag for kind, flag, path in (("float", "--float FLOAT.onnx (the same network in float)", float_model),
                                                   ("int8", "--int8 INT8.onnx (ONNX Runtime's int8 QDQ model of it)", int8_model))
               if path is None}
    if missing:
        out.print(f"note: no ONNX Runtime {' or '.join(missing)} column: pass {' and '.join(missing.values())} to time "
                  f"them alongside (a qexport model converted here gets both built from its source by default; "
                  f"benchmarks/bench.py builds them for the zoo models, docs/performance.md)")
    out.print(f"file sizes: {label} {model.stat().st_size:,} B"
              + (f", float {float_model.stat().st_size:,} B" if float_model else "")
              + (f", int8 {int8_model.stat().st_size:,} B" if int8_model else ""))
    if json_out:
        atomic_write_text(json_out, json.dumps(records, indent=2) + "\n")
        out.print(f"wrote {json_out}")


@app.command()
def models() -> None:
    """List the zoo architectures and their default arguments."""
    from .models import MODELS, default_arch_args  # the model zoo's registry

    for name in sorted(MODELS):
        out.print(f"{name}: {json.dumps(default_arch_args(name))}")


@app.command()
def library() -> None:
    """Print the path of the compiled custom-op library (for onnxruntime's register_custom_ops_library)."""
    from . import library_path

    try:
        out.print(str(library_path()))
    except FileNotFoundError as exc:
        _fail(str(exc))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
