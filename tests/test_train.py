"""The trainer: tiny float and QAT runs, checkpoints, determinism, optimizer groups."""
from __future__ import annotations

import math

import pytest
import torch

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
from qexport.data.loaders import FASHION_MNIST_DIR
from qexport.train import TrainConfig, make_optimizer, train

# Tiny runs: the real Fashion-MNIST when installed (CI installs it), else the shipped samples.
DATA = "fashion-mnist" if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() else "samples"
TINY = dict(data=DATA, epochs=1, limit_train=512, limit_test=256, batch_size=64, progress=False,
            arch_args={"width": 8})


def _timeless(metrics: dict) -> dict:
    """Metrics without wall times (keys ending in _s), which differ between identical runs."""
    if isinstance(metrics, dict):
        return {k: _timeless(v) for k, v in metrics.items() if not k.endswith("_s")}
    if isinstance(metrics, list):
        return [_timeless(v) for v in metrics]
    return metrics


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "float.pt"
    metrics = train(TrainConfig(**TINY, output=str(out)))
    return out, metrics


def test_float_run_writes_checkpoint(float_run):
    out, metrics = float_run
    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == "small_cnn" and ckpt["quant"] is None
    assert ckpt["arch_args"]["width"] == 8 and ckpt["arch_args"]["num_classes"] == 10
    m = ckpt["metrics"]
    assert m["method"] == "float" and len(m["epochs"]) == 1
    assert m["data"] == {"name": DATA, "train_samples": 512, "test_samples": 256}
    for key in ("train_loss", "train_acc", "test_acc", "lr", "time_s"):
        assert math.isfinite(m["epochs"][0][key])
    assert m["final_test_acc"] == m["epochs"][0]["test_acc"] == metrics["final_test_acc"]
    assert m["best_test_acc"] >= m["final_test_acc"] and m["wall_time_s"] > 0
    assert m["config"] == TrainConfig(**TINY, output=str(out)).to_dict()
    assert 0.0 <= m["final_test_acc"] <= 100.0 and m["epochs"][0]["train_loss"] < math.log(10) + 0.5
    model = build_model_from_checkpoint(ckpt)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_same_seed_same_metrics(float_run):
    _, first = float_run
    rng_before = torch.get_rng_state()
    again = train(TrainConfig(**TINY))
    assert torch.equal(torch.get_rng_state(), rng_before)  # no global RNG side effects
    assert _timeless(again) == _timeless({**first, "config": again["config"]})
    other = train(TrainConfig(**{**TINY, "seed": 1}))
    assert other["epochs"][0]["train_loss"] != first["epochs"][0]["train_loss"]


@pytest.fixture(scope="module")
def qat_run(float_run, tmp_path_factory):
    src, _ = float_run
    out = tmp_path_factory.mktemp("qat") / "q.pt"
    cfg = TrainConfig(**{**TINY, "arch_args": {}}, method="asq+post", bits=4, from_checkpoint=str(src),
                      output=str(out), calib_batches=2)
    return cfg, train(cfg)


def test_qat_from_float_checkpoint(float_run, qat_run):
    _, float_metrics = float_run
    cfg, metrics = qat_run
    assert metrics["lr"] == 0.01  # QAT from a checkpoint defaults to the fine-tuning rate
    assert metrics["init_float_test_acc"] == pytest.approx(float_metrics["final_test_acc"])
    assert metrics["calibrated_test_acc"] is not None and math.isfinite(metrics["final_test_acc"])
    ckpt = load_checkpoint(cfg.output)
    assert ckpt["quant"]["method"] == "asq+post" and ckpt["quant"]["bits"] == 4
    assert ckpt["arch_args"]["width"] == 8 and ckpt["metrics"]["final_test_acc"] == metrics["final_test_acc"]
    model = build_model_from_checkpoint(ckpt)  # quantized layers + weights load strictly
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_qat_is_deterministic(qat_run):
    cfg, first = qat_run
    again = train(TrainConfig(**{**cfg.to_dict(), "output": None}))
    assert _timeless(again) == _timeless({**first, "config": again["config"]})


def test_weight_decay_spares_quantizer_parameters():
    from qexport.models import build_model
    from qexport.nn import quant_parameters, quantize_
    from qexport.quant.config import QuantConfig

    model = quantize_(build_model("small_cnn", width=8), QuantConfig(method="asq+post", bits=4))
    opt, sched = make_optimizer(model, TrainConfig(method="asq+post", lr=0.05), total_steps=10)
    qids = {id(p) for p in quant_parameters(model)}
    assert qids
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= qids if group["weight_decay"] == 0 else not ids & qids
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05) and lrs[5] == pytest.approx(0.025) and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="int8")
    with pytest.raises(ValueError, match="limit_train"):
        TrainConfig(limit_train=0)
    assert TrainConfig.from_dict(TrainConfig(method="lsq").to_dict()) == TrainConfig(method="lsq")
    assert TrainConfig().effective_lr == 0.1 and TrainConfig(from_checkpoint="x.pt").effective_lr == 0.01


def test_rejects_quantized_start_and_arch_mismatch(tmp_path):
    from qexport.checkpoint import save_checkpoint
    from qexport.models import build_model, default_arch_args
    from qexport.nn import quantize_
    from qexport.quant.config import QuantConfig

    qcfg = QuantConfig(method="lsq", bits=4)
    model = quantize_(build_model("small_cnn"), qcfg)
    save_checkpoint(tmp_path / "q.pt", model=model, arch="small_cnn", arch_args=default_arch_args("small_cnn"), quant=qcfg)
    with pytest.raises(ValueError, match="quantized checkpoint"):
        train(TrainConfig(**TINY, method="lsq", from_checkpoint=str(tmp_path / "q.pt")))
    save_checkpoint(tmp_path / "f.pt", model=build_model("small_cnn"), arch="small_cnn",
                    arch_args=default_arch_args("small_cnn"))
    with pytest.raises(ValueError, match="holds 'small_cnn'"):
        train(TrainConfig(**{**TINY, "arch_args": {}}, arch="resnet20", from_checkpoint=str(tmp_path / "f.pt")))


def test_arch_args_fitted_to_data():
    # ResNet-20 defaults to 3 CIFAR channels; on 1-channel data it takes the data's channel
    # count and mean/std. epochs=0 just builds and evaluates.
    m = train(TrainConfig(**{**TINY, "arch_args": {}, "epochs": 0, "limit_test": 64}, arch="resnet20"))
    assert m["arch_args"]["in_channels"] == 1 and m["arch_args"]["num_classes"] == 10
    assert len(m["arch_args"]["mean"]) == 1 and 0.2 < m["arch_args"]["mean"][0] < 0.4
    assert m["epochs"] == [] and m["best_epoch"] == 0 and 0.0 <= m["final_test_acc"] <= 100.0
