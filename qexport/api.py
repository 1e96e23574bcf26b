"""The stages of the pipeline as plain functions (what ``import qexport`` exposes).

Each takes numpy arrays or tensors as the user has them and returns the object the next stage
takes. See the ``qexport`` package docstring for the whole flow.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .checkpoint import LoadedModel, load_model
from .inputs import Inputs, split, to_torch
from .nn import calibrate as _calibrate
from .nn import quantize_
from .nn.fit import FitOptions
from .nn.fit import fit as _fit
from .quant.config import QuantConfig
from .validate import ParityReport, Tolerances
from .validate import check_parity as _check_parity


def load(path: str | os.PathLike, *, arch: str | None = None, trust_pickle: bool = False) -> LoadedModel:
    """Load a model file: a qexport checkpoint (float or quantized), a state dict of a zoo
    architecture (``arch``), or a pickled ``nn.Module`` (only with ``trust_pickle=True``).

    Example:
        >>> loaded = qexport.load("samples/small_cnn_float.pt")
        >>> loaded.model, loaded.is_quantized
    """
    return load_model(Path(path), arch=arch, trust_pickle=trust_pickle)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode (keep the float model as the teacher before quantizing in place).

    Example:
        >>> teacher = qexport.copy_model(float_model)
    """
    return copy.deepcopy(model).eval()


def quantize(model: nn.Module, config: QuantConfig | None = None) -> nn.Module:
    """Swap the model's Conv2d/Linear for quantized layers, in place (returns the model).

    Example:
        >>> model = qexport.quantize(model, qexport.QuantConfig("asq+post", bits=3,
        ...                          overrides=[("features.4.*", {"bits": 4})]))
    """
    return quantize_(model, config or QuantConfig())


def calibrate(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 128, **kwargs) -> nn.Module:
    """Initialise every quantizer from inputs ``x`` (steps, weight scales, ASQ adapters; see
    :func:`qexport.nn.calibrate` for the options). Returns the model in eval mode.

    Example:
        >>> qexport.calibrate(model, x[:512])
    """
    _calibrate(model, split(to_torch(x), batch_size), **kwargs)
    return model.eval()


def fit(model: nn.Module, teacher: nn.Module, x: np.ndarray | torch.Tensor, options: FitOptions | None = None,
        **kwargs) -> dict:
    """Fit a calibrated model to reproduce its float ``teacher`` on inputs ``x`` (no labels).
    Returns the fit's summary (reconstruction loss before/after).

    Example:
        >>> qexport.fit(model, teacher, x[:448], qexport.FitOptions(steps=300))
    """
    summary = _fit(model, teacher, to_torch(x), options, **kwargs)
    model.eval()
    return summary


def export_onnx(model: nn.Module, example: np.ndarray | torch.Tensor, path: str | os.PathLike, **kwargs) -> onnx.ModelProto:
    """Export a quantized model to ONNX with ai.qexport ops (written atomically to ``path``).

    Example:
        >>> proto = qexport.export_onnx(model, x[:2], "w3.onnx")
    """
    from .export import export_onnx as _export

    return _export(model, to_torch(example), path, **kwargs)


def check_parity(model: nn.Module, onnx_model: onnx.ModelProto | str | os.PathLike, x: np.ndarray,
             y: np.ndarray | None = None, tolerances: Tolerances | None = None, **kwargs) -> ParityReport:
    """Run the quantized PyTorch model and the ONNX model (ONNX Runtime + qexport's kernels) on
    ``x`` and compare every layer's codes and the outputs; ``report.passed`` says if they agree.

    Example:
        >>> report = qexport.check_parity(model, "w3.onnx", x, y)
        >>> report.passed, report.asq_steps
    """
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(os.fspath(onnx_model))
    x = x if isinstance(x, Inputs) else np.asarray(x, dtype=np.float32)
    return _check_parity(model, proto, x, y, tolerances=tolerances, **kwargs)
