"""The trainer: tiny float and QAT runs, checkpoints, determinism, optimizer groups."""
from __future__ import annotations

import math

import pytest
import torch

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
from qexport.train import TrainConfig, make_optimizer, train
from shared import CHANCE
from shared import TRAIN_DATA as DATA
from shared import timeless as _timeless

# One epoch of 32 steps: the float small CNN (width 8) goes from chance (10%) to about 38% top-1.
TINY = dict(data=DATA, epochs=1, limit_train=512, limit_test=256, batch_size=16, progress=False,
            arch_args={"width": 8})


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
    assert {k: v for k, v in m["data"].items() if k != "test_is_train"} == {"name": DATA, "train_samples": 512, "test_samples": 256}
    for key in ("train_loss", "train_acc", "test_acc", "lr", "time_s"):
        assert math.isfinite(m["epochs"][0][key])
    assert m["final_test_acc"] == m["epochs"][0]["test_acc"] == metrics["final_test_acc"]
    assert m["best_test_acc"] >= m["final_test_acc"] and m["wall_time_s"] > 0
    assert m["config"] == TrainConfig(**TINY, output=str(out)).to_dict()
    # it learned: well above chance (about 38%), and the loss fell below guessing's log(10)
    assert m["final_test_acc"] > 2.5 * CHANCE and m["epochs"][0]["train_loss"] < math.log(10) - 0.1, m["epochs"]
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
    # QAT learns: above the calibrated start (about 37% -> 47%) and well above chance
    assert metrics["final_test_acc"] > max(metrics["calibrated_test_acc"], 3 * CHANCE), metrics["epochs"]
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


def test_checkpoint_every_epoch_best_and_metrics_json(tmp_path):
    import json

    from qexport.train import best_path

    out, mj = tmp_path / "run.pt", tmp_path / "m" / "metrics.json"
    m = train(TrainConfig(**{**TINY, "epochs": 2}, output=str(out), metrics_json=str(mj)))
    ckpt = load_checkpoint(out)
    state = ckpt["extra"]["train_state"]
    assert state["epoch"] == 2 and state["complete"] and state["optimizer"]["state"]  # momentum buffers kept
    assert state["best_epoch"] == m["best_epoch"] and state["best_test_acc"] == m["best_test_acc"]
    best = load_checkpoint(best_path(out))
    assert best_path(out).name == "run.best.pt" and "train_state" not in best["extra"]
    assert best["metrics"]["final_test_acc"] == m["best_test_acc"]
    assert json.loads(mj.read_text()) == json.loads(json.dumps(m))
    assert all("test_loss" in e for e in m["epochs"])
    train(TrainConfig(**{**TINY, "epochs": 1}, output=str(tmp_path / "nb.pt"), keep_best=False))
    assert not best_path(tmp_path / "nb.pt").exists()


def test_lr_schedules():
    from qexport.train.loop import lr_factor

    assert [lr_factor("cosine", s, 4) for s in range(5)] == pytest.approx([1, 0.8535534, 0.5, 0.1464466, 0])
    assert [lr_factor("linear", s, 4) for s in range(5)] == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    assert [lr_factor("constant", s, 4) for s in range(5)] == [1.0] * 5
    assert [lr_factor("cosine", s, 6, warmup=2) for s in range(7)] == pytest.approx([0.5, 1, 1, 0.8535534, 0.5, 0.1464466, 0])
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_distill_loss_gradient_closed_form():
    # d/ds [w T^2 KL(p_t || p_s)] = w T (softmax(s/T) - softmax(t/T)) / N; CE part: (1-w)(softmax(s) - onehot) / N
    from qexport.train import distill_loss

    torch.manual_seed(0)
    s = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64)
    y = torch.randint(0, 7, (5,))
    w, T = 0.7, 3.0
    distill_loss(s, t, y, w, T).backward()
    onehot = torch.nn.functional.one_hot(y, 7).double()
    expect = (w * T * (torch.softmax(s.detach() / T, 1) - torch.softmax(t / T, 1))
              + (1 - w) * (torch.softmax(s.detach(), 1) - onehot)) / 5
    assert torch.allclose(s.grad, expect, atol=1e-12)
    assert float(distill_loss(t.clone(), t, y, 1.0, T)) == pytest.approx(0.0, abs=1e-12)


def test_qat_with_distillation_and_no_refinement(float_run):
    src, _ = float_run
    m = train(TrainConfig(**{**TINY, "arch_args": {}}, method="lsq", bits=4, from_checkpoint=str(src), distill=True,
                          calib_batches=2, calib_refine_samples=0))
    assert m["config"]["distill"]
    # learns from the teacher: above the calibrated start (about 38% -> 43%) and well above chance
    assert m["final_test_acc"] > max(m["calibrated_test_acc"], 3 * CHANCE), m["epochs"]
    with pytest.raises(ValueError, match="teacher"):
        TrainConfig(method="lsq", distill=True)
    assert TrainConfig(method="lsq", teacher="t.pt").distill  # a teacher implies distillation


def _write_dataset(root, fmt):
    """10 classes x 8 samples of 12x12 images whose class is the bright row: easy to learn."""
    import numpy as np

    rng = np.random.default_rng(0)
    xs, ys = [], []
    for c in range(10):
        for _ in range(8):
            img = (rng.random((12, 12)) * 40).astype(np.uint8)
            img[c + 1] = 250
            xs.append(img)
            ys.append(c)
    x, y = np.stack(xs)[:, None], np.array(ys)
    if fmt == "npz":
        np.savez(root, x_train=x, y_train=y, x_test=x[::2], y_test=y[::2])
        return
    for split, idx in (("train", range(len(y))), ("test", range(0, len(y), 2))):
        for i in idx:
            d = root / split / f"class_{y[i]:02d}"
            d.mkdir(parents=True, exist_ok=True)
            if fmt == "png":
                from PIL import Image

                Image.fromarray(x[i, 0]).save(d / f"{i}.png")
            else:
                np.save(d / f"{i}.npy", x[i, 0])


@pytest.mark.parametrize("fmt", ["npz", "npy-folder", "png"])
def test_training_on_user_data(tmp_path, fmt):
    if fmt == "png":
        pytest.importorskip("PIL")
    from qexport.data import load_dataset

    root = tmp_path / ("d.npz" if fmt == "npz" else "data")
    _write_dataset(root, {"npy-folder": "npy"}.get(fmt, fmt))
    x, y = load_dataset(str(root), "train")
    xt, yt = load_dataset(str(root), "test")
    assert x.shape == (80, 1, 12, 12) and xt.shape == (40, 1, 12, 12) and x.dtype.name == "float32"
    assert 0.0 <= x.min() and x.max() <= 1.0 and sorted(set(y.tolist())) == list(range(10))
    m = train(TrainConfig(data=str(root), arch_args={"width": 4}, epochs=3, batch_size=8, progress=False))
    assert m["arch_args"]["num_classes"] == 10 and m["data"]["test_samples"] == 40
    assert "test_is_train" not in m["data"]
    assert m["final_test_acc"] >= 7 * CHANCE, m["epochs"]  # it learns the bright row (about 90%)


def test_adapter_optimizer_options_make_their_own_group_and_default_to_none():
    """adapter_lr_scale / adapter_weight_decay put the ASQ adapters in a group of their own; by
    default the adapters train as every weight (one group with the other weights)."""
    from qexport.models import build_model
    from qexport.nn import quantize_
    from qexport.quant.config import QuantConfig
    from qexport.train.loop import make_optimizer

    model = quantize_(build_model("small_cnn"), QuantConfig("asq", 2))
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".act_quant.fc" in n)
    opt, _ = make_optimizer(model, TrainConfig(method="asq", bits=2, lr=0.01), 10)
    assert len(opt.param_groups) == 2
    opt, _ = make_optimizer(model, TrainConfig(method="asq", bits=2, lr=0.01, adapter_lr_scale=10,
                                               adapter_weight_decay=0.0), 10)
    group = opt.param_groups[-1]
    assert (group["lr"], group["weight_decay"]) == (0.1, 0.0)
    assert sum(p.numel() for p in group["params"]) == adapters > 0
