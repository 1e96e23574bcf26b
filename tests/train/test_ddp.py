"""`qexport train` under torchrun: 2 processes with DistributedDataParallel (gloo) vs one process.

What is and is not identical (also in docs/design.md):
* The data: every global batch is the single-process batch (rank r takes samples r, r + 2, ...),
  the per-rank losses are means over batch/2 samples and DDP averages the gradients, so a model
  without BatchNorm gets the single-process gradient up to float32 summation order. Tested
  below with a BatchNorm-free network: losses agree to 1e-4 relative, accuracies to one sample.
* BatchNorm: plain DDP normalises with per-rank batch statistics (batch/2 samples each), and
  SyncBatchNorm needs CUDA (this PyTorch refuses CPU tensors), so on CPU the run is a different,
  equally valid, training run. Stated tolerance for the small CNN (QAT, 2 epochs, 1,024 samples,
  global batch 64), measured 0.4 points and 4% apart: test top-1 within 1.5 points, test loss
  within 5% and train loss within 10% relative.
* Calibration runs on every rank on the same seeded batches, so both start from the same model
  (checked: the calibrated accuracy is identical).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qexport.checkpoint import load_checkpoint
from shared import CHANCE, SAMPLE_MODEL, subprocess_env
from shared import TRAIN_DATA as DATA

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def _env() -> dict:
    return subprocess_env(OMP_NUM_THREADS="1")


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _single(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_cli_train_under_torchrun_matches_single_process(tmp_path):
    args = ["train", "--from", str(SAMPLE_MODEL), "--method", "asq+post", "--bits", "4", "--epochs", "2",
            "--data", DATA, "--limit-train", "1024", "--limit-test", "500", "--batch-size", "64",
            "--calib-batches", "2", "--no-progress"]
    ddp = _torchrun("-m", "qexport.cli", *args, "-o", "ddp.pt", "--metrics-json", "ddp.json", cwd=tmp_path)
    assert ddp.stdout.count("wrote ddp.pt") == 1  # rank 0 alone reports (and writes)
    _single("-m", "qexport.cli", *args, "-o", "one.pt", "--metrics-json", "one.json", cwd=tmp_path)
    d = json.loads((tmp_path / "ddp.json").read_text())
    s = json.loads((tmp_path / "one.json").read_text())
    assert d["world_size"] == 2 and "world_size" not in s
    assert d["calibrated_test_acc"] == s["calibrated_test_acc"]  # same start on every rank
    for rd, rs in zip(d["epochs"], s["epochs"], strict=True):
        assert abs(rd["test_acc"] - rs["test_acc"]) <= 1.5
        assert rd["test_loss"] == pytest.approx(rs["test_loss"], rel=0.05)
        assert rd["train_loss"] == pytest.approx(rs["train_loss"], rel=0.10)
    assert min(d["final_test_acc"], s["final_test_acc"]) > 7 * CHANCE  # QAT of the shipped model: both learned
    ckpt = load_checkpoint(tmp_path / "ddp.pt")  # a normal checkpoint: no DDP "module." prefixes
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert ckpt["extra"]["train_state"]["world_size"] == 2 and ckpt["extra"]["train_state"]["complete"]
    assert (tmp_path / "ddp.best.pt").is_file()


WORKER = textwrap.dedent('''
    """A BatchNorm-free network trained by qexport.train.train (one process, or one torchrun rank);
    its linear classifier on the 5x5 feature maps learns fast (about 63% top-1 after 2 epochs)."""
    import json, sys
    import torch
    from torch import nn
    from qexport.models.registry import register_model
    from qexport.train import TrainConfig, train

    class Net(nn.Module):
        def __init__(self, in_channels=1, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 8, 5, stride=2)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(5)
            self.fc = nn.Linear(16 * 25, num_classes)
        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv(x - 0.3))))
            return self.fc(torch.flatten(self.pool(x), 1))

    register_model("nobn_test")(lambda in_channels=1, num_classes=10: Net(in_channels, num_classes))
    m = train(TrainConfig(arch="nobn_test", data=sys.argv[2], epochs=2, limit_train=1024, limit_test=500,
                          batch_size=64, lr=0.1, progress=False, output=sys.argv[1] + ".pt"))
    if torch.distributed.is_available() and int(__import__("os").environ.get("RANK", "0")) == 0:
        open(sys.argv[1] + ".json", "w").write(json.dumps(m))
''')


def test_ddp_without_batchnorm_equals_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _torchrun(str(script), "ddp", DATA, cwd=tmp_path)
    _single(str(script), "one", DATA, cwd=tmp_path)
    d = json.loads((tmp_path / "ddp.json").read_text())
    s = json.loads((tmp_path / "one.json").read_text())
    assert d["world_size"] == 2
    for rd, rs in zip(d["epochs"], s["epochs"], strict=True):
        assert rd["train_loss"] == pytest.approx(rs["train_loss"], rel=1e-4)
        assert rd["test_loss"] == pytest.approx(rs["test_loss"], rel=1e-4)
        assert abs(rd["test_acc"] - rs["test_acc"]) <= 100.0 / 500 + 1e-9  # at most one sample
        assert abs(rd["train_acc"] - rs["train_acc"]) <= 100.0 / 1024 + 1e-9
    assert s["final_test_acc"] > 4 * CHANCE, s["epochs"]  # equal runs of a model that learns
