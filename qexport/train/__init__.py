"""Float training and quantization-aware training (one process, or N under torchrun with DDP).

Example:
    >>> from qexport.train import TrainConfig, train
    >>> metrics = train(TrainConfig(arch="small_cnn", epochs=3, output="out/small_cnn_float.pt"))
"""
from .config import METHODS, TrainConfig
from .loop import best_path, distill_loss, evaluate, evaluate_loss, fit_epoch, make_optimizer, prepare_model, train

__all__ = ["METHODS", "TrainConfig", "best_path", "distill_loss", "evaluate", "evaluate_loss", "fit_epoch",
           "make_optimizer", "prepare_model", "train"]
