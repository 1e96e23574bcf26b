"""Parity between the PyTorch reference and the ONNX Runtime execution."""
from .parity import LayerParity, ParityReport, Tolerances, check_parity, top1

__all__ = ["LayerParity", "ParityReport", "Tolerances", "check_parity", "top1"]
