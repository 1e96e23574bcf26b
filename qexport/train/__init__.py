"""Float training and quantization-aware training (single process).

Example:
    >>> from qexport.train import TrainConfig, train
    >>> metrics = train(TrainConfig(arch="small_cnn", epochs=3, output="out/small_cnn_float.pt"))
"""
from .config import METHODS, TrainConfig
from .loop import evaluate, fit_epoch, make_optimizer, prepare_model, train

__all__ = ["METHODS", "TrainConfig", "evaluate", "fit_epoch", "make_optimizer", "prepare_model", "train"]
