"""Lowering: a quantized module tree -> its integer form (deploy modules calling the ai.qexport
torch ops) and the typed description of its layers, which export writes and validate reads.

Dependencies run one way: export -> lower -> (quant, nn, spec); spec imports no torch.
"""
from .description import IntegerModel, LayerSpec, OnnxBinding, QuantizerSpec
from .modules import deploy_layers, lower, to_deploy

__all__ = ["IntegerModel", "LayerSpec", "OnnxBinding", "QuantizerSpec", "deploy_layers", "lower", "to_deploy"]
