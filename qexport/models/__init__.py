"""The model zoo. Every model takes pixels in [0, 1] and normalises them itself.

Example:
    >>> from qexport.models import build_model, MODELS
    >>> model = build_model("small_cnn", width=32)
"""
from .common import BasicBlock, ConvBNReLU, Normalize
from .registry import MODELS, build_model, default_arch_args, register_model
from . import mobilenet, resnet, small_cnn  # noqa: F401  (fill the registry)

__all__ = ["MODELS", "build_model", "default_arch_args", "register_model", "Normalize", "ConvBNReLU", "BasicBlock"]
