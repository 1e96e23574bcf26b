"""qexport: low-bit quantized networks (ASQ activations, POST weights) exported to ONNX and run by
integer shift/table kernels inside ONNX Runtime."""
__version__ = "0.1.0"
