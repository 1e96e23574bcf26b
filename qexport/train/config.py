"""TrainConfig: everything one training run depends on, as one serialisable dataclass."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

METHODS = ("float", "lsq", "asq", "lsq+pot", "lsq+post", "asq+pot", "asq+post")
DEFAULT_ARCH = "small_cnn"


@dataclass
class TrainConfig:
    """One training run (float, or quantization-aware training).

    Args:
        arch: model name in ``qexport.models.MODELS``; default: the checkpoint's arch when
            ``from_checkpoint`` is set, else "small_cnn".
        arch_args: overrides of ``default_arch_args(arch)``. ``in_channels``/``num_classes``
            not given are fitted to the data (and mean/std computed from it if the channel count
            changes).
        method: "float" or a QuantConfig method ("lsq", "asq", "lsq+pot", "lsq+post", "asq+pot",
            "asq+post").
        bits: weight (and, unless ``quant_args`` says otherwise, activation) bit-width.
        quant_args: further QuantConfig fields (act_bits, first_last_bits, adapter_reduction, skip).
        epochs, batch_size: the schedule is cosine over ``epochs * steps_per_epoch`` SGD steps.
        lr: peak learning rate; None: 0.01 when starting from a checkpoint, else 0.1.
        momentum, weight_decay: SGD; weight decay is not applied to step sizes and alphas.
        seed: seeds model init, the calibration batches, subsampling and shuffling.
        data: dataset spec for ``qexport.data.load_dataset`` (train split for training).
        from_checkpoint: a float qexport checkpoint to start from.
        output: where to save the final checkpoint (None: not saved).
        calib_batches: number of training batches (of ``batch_size``) used by ``calibrate``.
        augment: random horizontal flips during training.
        limit_train, limit_test: use a seeded random subset of the training set / the first
            ``limit_test`` test samples (quick runs).
        num_workers: kept for the CLI; data are in-memory tensors, so only 0 is supported.
        progress: show a rich progress bar.
    """

    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    method: str = "float"
    bits: int = 4
    quant_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    data: str = "fashion-mnist"
    from_checkpoint: str | None = None
    output: str | None = None
    calib_batches: int = 8
    augment: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.epochs < 0 or self.batch_size < 1 or self.calib_batches < 1:
            raise ValueError("epochs must be >= 0, batch_size and calib_batches >= 1")
        if self.num_workers != 0:
            raise ValueError("num_workers must be 0: the data are in-memory tensors")
        for name in ("limit_train", "limit_test"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {v}")
        if self.from_checkpoint is not None:
            self.from_checkpoint = str(self.from_checkpoint)
        if self.output is not None:
            self.output = str(self.output)

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 0.01 if self.from_checkpoint else 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)
