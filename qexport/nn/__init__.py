"""Quantized layers, the module swap that applies a QuantConfig, and their integer deploy form."""
from .layers import QConv2d, QLinear
from .swap import calibrate, layer_plan, quant_layers, quant_parameters, quantize_

__all__ = ["QConv2d", "QLinear", "calibrate", "layer_plan", "quant_layers", "quant_parameters", "quantize_"]
