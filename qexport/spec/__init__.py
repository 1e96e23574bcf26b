"""The definition of the integer model, torch-free: what every ``ai.qexport`` op computes.

``reference`` is the numpy definition of every op (docs/ops.md describes it in words); the C++
kernels in custom_ops/ reproduce it bit for bit, and the PyTorch deploy path calls it. Nothing in
this package imports torch (tests/spec/test_dependencies.py checks), so a runtime-only install can
check an ONNX Runtime result against the definition.
"""
from . import reference

__all__ = ["reference"]
