"""ONNX Runtime's own paths for the same network, to compare qexport against: the float model
(torch.onnx.export, MLAS fp32) and ONNX Runtime's int8 QDQ model of it (quantize_static:
per-channel int8 weights, uint8 activations calibrated with MinMax, after quant_pre_process).
Used by ``qexport bench`` and benchmarks/bench.py (the single definition of both baselines)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .exporter import quiet_exporter

__all__ = ["export_float", "export_int8"]


def export_float(model: nn.Module, x: np.ndarray, path: str | Path) -> None:
    """The float model as ONNX (input "input", output "output", dynamic batch)."""
    with quiet_exporter("root"), torch.no_grad():
        torch.onnx.export(model.eval(), (torch.from_numpy(np.ascontiguousarray(x[:2], dtype=np.float32)),), str(path),
                          dynamo=True, external_data=False, input_names=["input"], output_names=["output"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)


def export_int8(float_path: str | Path, x: np.ndarray, path: str | Path) -> None:
    """ONNX Runtime's int8 QDQ model of ``float_path``, calibrated on ``x`` (batches of 8)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": np.ascontiguousarray(x[i:i + 8], dtype=np.float32)}
                                 for i in range(0, len(x), 8)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp, quiet_exporter("root"):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre))
        quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def baselines_for(model_path: str | Path, say=lambda msg: None) -> tuple[Path, Path]:
    """(float .onnx, int8 .onnx) of the network a qexport model was converted from, built once
    beside it (``<stem>.ort_float.onnx``, ``<stem>.ort_int8.onnx``) and reused while newer than
    the model. The float model is the one ``qexport convert`` recorded in the checkpoint it wrote
    beside the .onnx (``extra.source``, checked against its sha256); ONNX Runtime's int8 model is
    calibrated on 64 inputs of the data that checkpoint was calibrated on. ValueError says what is
    missing when the source cannot be found."""
    from ..checkpoint import CheckpointError, file_sha256, load_checkpoint, load_model
    from ..data import load_dataset

    model_path = Path(model_path)
    float_path = model_path.with_name(model_path.stem + ".ort_float.onnx")
    int8_path = model_path.with_name(model_path.stem + ".ort_int8.onnx")
    mtime = model_path.stat().st_mtime
    if all(p.is_file() and p.stat().st_mtime >= mtime for p in (float_path, int8_path)):
        return float_path, int8_path
    ckpt_path = model_path.with_suffix(".pt")
    try:
        ckpt = load_checkpoint(ckpt_path)
    except (CheckpointError, FileNotFoundError, OSError):
        raise ValueError(f"no checkpoint {ckpt_path.name} beside {model_path.name} (what `qexport convert` writes): "
                         "cannot tell which float network to build the ONNX Runtime baselines from; pass --float "
                         "and --int8, or --no-baselines") from None
    source, sha = ckpt.get("extra", {}).get("source"), ckpt.get("extra", {}).get("source_sha256")
    if not source or not Path(source).is_file() or (sha and file_sha256(Path(source)) != sha):
        raise ValueError(f"{ckpt_path.name} names its float source {source!r}, which is "
                         f"{'missing' if not source or not Path(source).is_file() else 'changed since'}: pass --float "
                         "and --int8, or --no-baselines")
    loaded = load_model(source)
    data = ckpt.get("metrics", {}).get("calibrated_on") or "samples"
    try:
        x = load_dataset(data, "train")[0][:64]
    except Exception:  # noqa: BLE001 - the data may not be here: random inputs in [0, 1] of the right shape
        x = None
    import onnx

    shape = [d.dim_value for d in onnx.load(str(model_path)).graph.input[0].type.tensor_type.shape.dim][1:]
    if x is None or list(x.shape[1:]) != shape:
        x = np.random.default_rng(0).random((64, *shape), dtype=np.float32)
        say(f"calibrating the int8 baseline on random inputs in [0, 1] of shape {shape} ({data!r} is not here)")
    say(f"building ONNX Runtime's float and int8 models of {Path(source).name} (once; kept beside the model)")
    export_float(loaded.model, x, float_path)
    export_int8(float_path, x, int8_path)
    return float_path, int8_path
