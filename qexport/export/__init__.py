"""Export: torch.library ops + onnxscript translations + ONNX schemas, and the exporter."""
from .exporter import ExportError, export_onnx
from ..lower.ops import OPS, SCHEMAS, TRANSLATIONS

__all__ = ["ExportError", "export_onnx", "OPS", "SCHEMAS", "TRANSLATIONS"]
