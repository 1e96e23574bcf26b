"""qexport: low-bit quantized networks (ASQ activations, POST weights) exported to ONNX and run by
integer shift/table kernels inside ONNX Runtime.

The Python API mirrors the command line: ``qexport convert`` is ``qexport.convert_model``,
``qexport validate`` is ``qexport.check_parity``, ``qexport train`` is ``qexport.train_model``
(the plain names ``convert``, ``export``, ``validate`` and ``train`` are qexport's modules)::

    import qexport
    from qexport.data import load_samples

    x, y = load_samples()                                   # (512, 1, 28, 28) float32 in [0, 1]
    loaded = qexport.load("samples/small_cnn_float.pt")     # a float model (qexport checkpoint)
    teacher = qexport.copy_model(loaded.model)
    model = qexport.quantize(loaded.model, qexport.QuantConfig("asq+post", bits=3))
    qexport.calibrate(model, x[:448])                       # steps, scales, ASQ adapters
    qexport.fit(model, teacher, x[:448])                    # reconstruct the float model
    proto = qexport.export_onnx(model, x[:2], "w3.onnx")    # ai.qexport custom ops
    report = qexport.check_parity(model, proto, x, y)       # ONNX Runtime vs PyTorch
    assert report.passed

    # or all of it, as the CLI does:
    result = qexport.convert_model("samples/small_cnn_float.pt", x=x, y=y, bits=3, output="w3.onnx")

Names are imported on first use, so ``import qexport.spec`` and ``import qexport.runtime`` stay
free of torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); each attribute has its own docstring with an example.
_API = {
    "QuantConfig": ("qexport.quant.config", "QuantConfig"),
    "load": ("qexport.api", "load"),
    "copy_model": ("qexport.api", "copy_model"),
    "quantize": ("qexport.api", "quantize"),
    "calibrate": ("qexport.api", "calibrate"),
    "fit": ("qexport.api", "fit"),
    "FitOptions": ("qexport.nn.fit", "FitOptions"),
    "Inputs": ("qexport.inputs", "Inputs"),  # the samples of a model with several inputs
    "export_onnx": ("qexport.api", "export_onnx"),
    "export_qdq": ("qexport.export.qdq", "export_qdq"),
    "check_parity": ("qexport.api", "check_parity"),
    "check_qdq_parity": ("qexport.export.qdq", "check_qdq_parity"),
    "convert_model": ("qexport.convert", "convert"),
    "train_model": ("qexport.train", "train"),
    "TrainConfig": ("qexport.train", "TrainConfig"),
    "make_session": ("qexport.runtime", "make_session"),
    # what the command line uses besides: each CLI command is these calls plus printing
    "MixedOptions": ("qexport.convert", "MixedOptions"),
    "parse_budget": ("qexport.nn.mixed", "parse_budget"),
    "parse_override": ("qexport.quant.config", "parse_override"),
    "load_dataset": ("qexport.data", "load_dataset"),
    "load_checkpoint": ("qexport.checkpoint", "load_checkpoint"),
    "build_model_from_checkpoint": ("qexport.checkpoint", "build_model_from_checkpoint"),
    "write_report": ("qexport.convert", "write_report"),
    "Tolerances": ("qexport.validate", "Tolerances"),
    "ParityReport": ("qexport.validate", "ParityReport"),
    "inspect_model": ("qexport.inspect", "inspect_model"),
    "build_report": ("qexport.report", "build_report"),
    "bench_model": ("qexport.runtime.bench", "bench_model"),
    "qexport_op_count": ("qexport.runtime.bench", "qexport_op_count"),
    "baselines_for": ("qexport.export.baselines", "baselines_for"),
    "build_ops": ("qexport.deploy", "build_ops"),
    "validate_on_runner": ("qexport.deploy", "validate_on_runner"),
    "library_path": ("qexport.runtime", "library_path"),
    "CheckpointError": ("qexport.checkpoint", "CheckpointError"),
    "ConvertError": ("qexport.convert", "ConvertError"),
    "ExportError": ("qexport.export", "ExportError"),
    "DeployError": ("qexport.deploy", "DeployError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qexport' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
