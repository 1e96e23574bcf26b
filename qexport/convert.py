"""The main job: model file -> quantized (calibrated) model -> ONNX -> parity report."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import LoadedModel, load_model, save_checkpoint
from .export import export_onnx
from .io import atomic_write_text
from .nn import calibrate, quantize_
from .quant.config import QuantConfig
from .validate import ParityReport, Tolerances, check_parity, top1


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


def _method_tag(method: str) -> str:
    return method.replace("+", "-")


def default_output(model_path: Path, config: QuantConfig) -> Path:
    return Path.cwd() / f"{model_path.stem}_{_method_tag(config.method)}_w{config.bits}.onnx"


def resolve_config(loaded: LoadedModel, method: str | None, bits: int | None, act_bits: int | None,
                   first_last_bits: int | None) -> QuantConfig:
    """A quantized checkpoint keeps its own config (explicit conflicting options are an error);
    a float model gets the options given (default asq+post, 4 bits)."""
    if loaded.is_quantized:
        cfg = QuantConfig.from_dict(loaded.quant)
        for name, given, have in (("--method", method, cfg.method), ("--bits", bits, cfg.bits),
                                  ("--act-bits", act_bits, cfg.effective_act_bits)):
            if given is not None and given != have:
                raise ConvertError(f"the checkpoint is already quantized ({cfg.method}, {cfg.bits}-bit weights, "
                                   f"{cfg.effective_act_bits}-bit activations); {name} {given} conflicts. Convert the "
                                   f"float model instead, or fine-tune with `qexport train --from`.")
        return cfg
    try:
        return QuantConfig(method=method or "asq+post", bits=4 if bits is None else bits, act_bits=act_bits,
                           first_last_bits=first_last_bits)
    except ValueError as exc:
        raise ConvertError(str(exc)) from exc


def check_input(model: nn.Module, x: np.ndarray) -> None:
    """Run one sample through the float/quantized model and explain a shape mismatch."""
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32)))
    except Exception as exc:  # noqa: BLE001 - reported with the input shape
        raise ConvertError(f"the model does not accept the data's input shape {tuple(x.shape[1:])}: {exc}. "
                           f"Pass --data with inputs in the model's own convention (an .npz with x of shape (N, C, H, W)).") from exc


def quantize_model(model: nn.Module, config: QuantConfig, x: np.ndarray, calib_samples: int = 512,
                   batch_size: int = 128) -> nn.Module:
    """quantize_ + calibrate on the first ``calib_samples`` inputs."""
    quantize_(model, config)
    xc = torch.from_numpy(np.ascontiguousarray(x[:calib_samples], dtype=np.float32))
    calibrate(model, list(torch.split(xc, batch_size)))
    return model.eval()


def convert(model_path: str | os.PathLike, *, x: np.ndarray, y: np.ndarray | None = None, output: str | os.PathLike | None = None,
            method: str | None = None, bits: int | None = None, act_bits: int | None = None, first_last_bits: int | None = 8,
            arch: str | None = None, trust_pickle: bool = False, calib_samples: int = 512, validate: bool = True,
            data_name: str = "", tolerances: Tolerances | None = None,
            progress: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert a model file to ONNX with ai.qexport ops, and check parity.

    A float model (qexport checkpoint, state dict + ``arch``, or trusted pickle) is quantized
    with ``method``/``bits`` and calibrated on ``x``; the calibrated model is saved beside the
    ONNX file (``.pt``) so ``qexport validate`` can re-check it later. A quantized checkpoint is
    exported as it is.
    """
    say = progress or (lambda msg: None)
    model_path = Path(model_path)
    loaded = load_model(model_path, arch=arch, trust_pickle=trust_pickle)
    config = resolve_config(loaded, method, bits, act_bits, first_last_bits)
    out = Path(output) if output else default_output(model_path, config)
    if out.suffix != ".onnx":
        raise ConvertError(f"output must end in .onnx, got {out}")
    if out.resolve() == model_path.resolve():
        raise ConvertError("output would overwrite the input model")
    check_input(loaded.model, x)
    model = loaded.model
    ckpt_path = None
    float_top1 = None
    if not loaded.is_quantized:
        if validate and y is not None:
            float_top1 = top1(model, x, y)
        say(f"quantizing ({config.method}, {config.bits}-bit) and calibrating on {min(len(x), calib_samples)} samples")
        model = quantize_model(model, config, x, calib_samples)
        if loaded.arch is not None:
            ckpt_path = out.with_suffix(".pt")
            save_checkpoint(ckpt_path, model=model, arch=loaded.arch, arch_args=loaded.arch_args, quant=config,
                            metrics={"calibrated_on": data_name, "calib_samples": int(min(len(x), calib_samples))},
                            extra={"source": str(model_path), "source_sha256": loaded.sha256})
    say(f"exporting {out}")
    meta = {"qexport.method": config.method, "qexport.source": loaded.sha256,
            "qexport.config": json.dumps(config.to_dict(), sort_keys=True),
            "qexport.input": json.dumps({"shape": ["N", *map(int, x.shape[1:])], "dtype": "float32",
                                         "convention": "the PyTorch model's own input (zoo models: pixels in [0, 1])"})}
    proto = export_onnx(model, torch.from_numpy(np.ascontiguousarray(x[:2], dtype=np.float32)), out, meta=meta)
    report = report_path = None
    if validate:
        say(f"validating on {len(x)} samples")
        report = check_parity(model, proto, x, y, tolerances=tolerances)
        if float_top1 is not None:
            report.accuracy = {"float": float_top1, **report.accuracy}
        report_path = out.with_suffix(".parity.json")
        write_report(report, report_path, {"onnx": str(out), "model": str(model_path), "data": data_name})
    return ConvertResult(out, ckpt_path, report_path, report, config, loaded)


def write_report(report: ParityReport, path: Path, context: dict) -> None:
    atomic_write_text(path, json.dumps({**context, **report.to_dict()}, indent=2, sort_keys=True) + "\n")
