"""TrainConfig: everything one training run depends on, as one serialisable dataclass."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..quant.config import METHODS as QUANT_METHODS

METHODS = ("float",) + QUANT_METHODS  # float training, or one of QuantConfig's methods
DEFAULT_ARCH = "small_cnn"
SCHEDULES = ("cosine", "linear", "constant")
# Fields that change how a run is shown or kept, not what it computes: a --resume may differ in them.
RUNTIME_FIELDS = ("resume", "progress", "metrics_json", "keep_best", "num_workers")


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
            "asq+post"; "lsq+perparam", "asq+perparam_post", ...: a bit-width per weight, Khoram
            and Li's adaptive quantization, run after calibration with the ``perparam_*`` fields,
            then the ``epochs`` train at the widths found; ``bits`` is the widest width).
        bits: weight (and, unless ``quant_args`` says otherwise, activation) bit-width.
        quant_args: further QuantConfig fields (act_bits, first_last_bits, adapter_reduction, skip).
        epochs, batch_size: the schedule runs over ``epochs * steps_per_epoch`` SGD steps.
            ``batch_size`` is the global batch: under torchrun each of the N ranks takes
            ``batch_size / N`` samples of every batch (it must divide).
        lr: peak learning rate; None: 0.01 when starting from a checkpoint, else 0.1.
        schedule: "cosine" (to 0, per step; the papers'), "linear" (to 0) or "constant".
        warmup_epochs: linear warm-up from lr/steps to lr over this many epochs (may be fractional).
        momentum, weight_decay: SGD; weight decay is not applied to step sizes and alphas.
        seed: seeds model init, the calibration batches, subsampling and shuffling.
        data: dataset spec for ``qexport.data.load_dataset``: "fashion-mnist", "digits", "samples",
            an .npz (``x_train``/``y_train``/``x_test``/``y_test``, or ``x``/``y``) or a folder
            (``train/`` and ``test/`` ImageFolder trees or .npz files, or one ImageFolder tree).
            The train split trains, the test split evaluates.
        test_data: evaluate on this dataset spec (its test split) instead of ``data``'s.
        from_checkpoint: a float qexport checkpoint to start from.
        output: where to save the checkpoint; written after every epoch (with the training
            state, so ``resume`` can continue), the best epoch's model also to ``<stem>.best.pt``.
        resume: continue from ``output`` if it holds an unfinished run of the same config
            (a finished one is returned as is; a missing file starts a fresh run).
        keep_best: also keep the best epoch's model (test top-1) at ``<stem>.best.pt``.
        metrics_json: write the metrics here (atomically) after every epoch.
        calib_batches: number of training batches (of ``batch_size``) used by ``calibrate``.
        calib_refine_samples: samples of calibrate()'s output-aware step refinement (0: off).
        distill: knowledge distillation from the float teacher (``teacher``, default the
            ``from_checkpoint`` model): loss = (1 - w) CE + w T^2 KL(teacher_T || student_T).
        teacher: a float qexport checkpoint to distil from (implies ``distill``).
        distill_weight, distill_temperature: w and T above.
        augment: random horizontal flips during training.
        limit_train, limit_test: use a seeded random subset of the training set / the first
            ``limit_test`` test samples (quick runs).
        num_workers: kept for the CLI; data are in-memory tensors, so only 0 is supported.
        progress: show a rich progress bar.
        size_budget: learned mixed precision (Cheng et al.; ``qexport.nn.mixed.search``): after
            calibration, search the body layers' weight bit-widths under this budget of packed
            weight codes ("40KB", "2.5bits", ...), then train the ``epochs`` at the found widths.
        bit_choices: the candidate widths of the search (None: 2, 3, 4, 8 where the format has them).
        granularity: "channel" (a width per output channel) or "layer".
        search_steps: steps of the search (batches of ``batch_size``).
        adapter_lr_scale: the ASQ adapters' learning rate is ``lr`` times this (1: as every weight).
        adapter_weight_decay: their weight decay (None: ``weight_decay``, as every weight).
        perparam_rounds: per-parameter methods: at most this many rounds of margins + retraining.
        perparam_steps: retraining steps per round (batches of ``batch_size``, cosine to 0).
        perparam_tolerance: a round is kept while the accuracy on ``perparam_val_samples``
            held-out training samples stays within this many points of the float model's (of the
            calibrated model's when there is no float start).
        perparam_growth: the loss budget eps grows by this factor each kept round.
        perparam_val_samples: training samples held out (seeded) to judge the rounds.
    """

    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    method: str = "float"
    bits: int = 4
    quant_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 128
    lr: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    data: str = "fashion-mnist"
    test_data: str | None = None
    from_checkpoint: str | None = None
    output: str | None = None
    resume: bool = False
    keep_best: bool = True
    metrics_json: str | None = None
    calib_batches: int = 8
    calib_refine_samples: int = 128
    distill: bool = False
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    augment: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    num_workers: int = 0
    progress: bool = True
    size_budget: str | None = None
    bit_choices: tuple[int, ...] | None = None
    granularity: str = "channel"
    search_steps: int = 300
    adapter_lr_scale: float = 1.0
    adapter_weight_decay: float | None = None
    perparam_rounds: int = 10
    perparam_steps: int = 200
    perparam_tolerance: float = 0.5
    perparam_growth: float = 4.0
    perparam_val_samples: int = 5000

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
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.warmup_epochs < 0 or self.calib_refine_samples < 0:
            raise ValueError("warmup_epochs and calib_refine_samples must be >= 0")
        if not 0.0 <= self.distill_weight <= 1.0 or self.distill_temperature <= 0:
            raise ValueError("distill_weight must be in [0, 1] and distill_temperature > 0")
        for name in ("from_checkpoint", "output", "teacher", "metrics_json", "test_data"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        if self.teacher is not None:
            self.distill = True
        if self.distill and self.teacher is None and self.from_checkpoint is None:
            raise ValueError("distill needs a teacher: pass teacher= (--teacher) or from_checkpoint= (--from)")
        if self.size_budget is not None:
            from ..nn.mixed import GRANULARITIES, parse_budget

            parse_budget(self.size_budget)  # refuses a malformed budget before any work
            if self.method == "float":
                raise ValueError("size_budget needs a quantized method (it searches weight bit-widths)")
            if self.granularity not in GRANULARITIES or self.search_steps < 1:
                raise ValueError(f"granularity must be one of {GRANULARITIES} and search_steps >= 1")
        if self.adapter_lr_scale <= 0 or (self.adapter_weight_decay is not None and self.adapter_weight_decay < 0):
            raise ValueError("adapter_lr_scale must be > 0 and adapter_weight_decay >= 0")
        if "perparam" in self.method:
            if self.size_budget is not None:
                raise ValueError("size_budget searches per-channel widths; a per-parameter method sets a width per weight itself")
            if self.perparam_rounds < 1 or self.perparam_steps < 0 or self.perparam_tolerance < 0 \
                    or self.perparam_growth <= 1 or self.perparam_val_samples < 1:
                raise ValueError("perparam_rounds and perparam_val_samples must be >= 1, perparam_steps and "
                                 "perparam_tolerance >= 0, perparam_growth > 1")
        if self.bit_choices is not None:
            self.bit_choices = tuple(int(b) for b in self.bit_choices)
        if self.resume and self.output is None:
            raise ValueError("resume needs output: the checkpoint to continue from and to keep writing")

    @property
    def teacher_path(self) -> str | None:
        return (self.teacher or self.from_checkpoint) if self.distill else None

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
