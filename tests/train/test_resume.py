"""Interruption: a training run killed with SIGKILL mid-epoch resumes with --resume from its last
complete checkpoint and ends with exactly the metrics (times excluded) and the weights of an
uninterrupted run with the same seed."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
from qexport.train import TrainConfig, train
from shared import CHANCE, SAMPLE_MODEL, subprocess_env, timeless
from shared import TRAIN_DATA as DATA
# QAT of the shipped float model (ASQ adapters, POST alphas, BatchNorm, momentum: every kind of
# state), 3 epochs of 1,536 samples: an epoch takes a few seconds, long enough to kill inside one.
ARGS = ["-m", "qexport.cli", "train", "--from", str(SAMPLE_MODEL), "--method", "asq+post", "--bits", "3",
        "--epochs", "3", "--data", DATA, "--limit-train", "1536", "--limit-test", "300", "--batch-size", "64",
        "--calib-batches", "2", "--no-progress"]


def _epoch_of(path: Path) -> int | None:
    try:
        return int(load_checkpoint(path)["extra"]["train_state"]["epoch"])
    except Exception:  # noqa: BLE001 - not there yet
        return None


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    # The uninterrupted run.
    full = subprocess.run([sys.executable, *ARGS, "-o", "full.pt", "--metrics-json", "full.json"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]

    # The same run, killed with SIGKILL once epoch 1's checkpoint exists and epoch 2 is under way.
    victim = subprocess.Popen([sys.executable, *ARGS, "-o", "run.pt", "--metrics-json", "run.json"], cwd=tmp_path,
                              env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while _epoch_of(tmp_path / "run.pt") != 1:
            assert victim.poll() is None, "the run ended before its first checkpoint could be seen"
            assert time.monotonic() < deadline, "no first-epoch checkpoint within 240 s"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside epoch 2 (an epoch takes seconds)
        assert victim.poll() is None, "the run finished before it could be interrupted"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    killed = load_checkpoint(tmp_path / "run.pt")  # the last complete checkpoint, intact
    state = killed["extra"]["train_state"]
    assert state["epoch"] == 1 and not state["complete"]
    assert len(killed["metrics"]["epochs"]) == 1

    # Resume: continues with epoch 2 and ends where the uninterrupted run ended.
    resumed = subprocess.run([sys.executable, *ARGS, "-o", "run.pt", "--metrics-json", "run.json", "--resume"],
                             cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "full.json").read_text())
    b = json.loads((tmp_path / "run.json").read_text())
    assert [e["epoch"] for e in b["epochs"]] == [1, 2, 3]
    assert timeless(b, drop=("config",)) == timeless(a, drop=("config",))  # accuracies, losses, learning rates: identical
    assert b["final_test_acc"] > 7 * CHANCE, b["epochs"]  # a run worth resuming: 3-bit QAT of the shipped model
    ca, cb = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "run.pt")
    assert cb["extra"]["train_state"]["complete"] and cb["extra"]["train_state"]["resumes"] == [1]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    # The model-only consumers read these files as usual.
    assert build_model_from_checkpoint(cb)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


TINY = dict(data=DATA, limit_train=256, limit_test=128, batch_size=64, progress=False, arch_args={"width": 8})


def test_resume_of_a_finished_run_and_of_other_settings(tmp_path):
    out = tmp_path / "f.pt"
    first = train(TrainConfig(**TINY, epochs=2, output=str(out)))
    mtime = out.stat().st_mtime_ns
    again = train(TrainConfig(**TINY, epochs=2, output=str(out), resume=True))
    assert again == first  # the finished run's own metrics, read back
    assert out.stat().st_mtime_ns == mtime  # a finished run is not rerun
    with pytest.raises(ValueError, match="other settings.*lr"):
        train(TrainConfig(**TINY, epochs=2, output=str(out), resume=True, lr=0.5))
    fresh = tmp_path / "none.pt"  # nothing to resume: starts afresh
    m = train(TrainConfig(**TINY, epochs=1, output=str(fresh), resume=True))
    assert fresh.is_file() and len(m["epochs"]) == 1


def test_resume_from_another_folder_is_the_same_run(tmp_path, monkeypatch):
    """--resume compares paths as the files they name: the run started in one folder with relative
    paths resumes from another folder that names the same files differently (and a different
    starting checkpoint is still refused)."""
    import shutil

    from qexport.train import TrainConfig, train

    repo = Path(__file__).resolve().parents[2]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(repo / "samples" / "small_cnn_float.pt", a / "float.pt")
    common = dict(method="lsq", bits=4, data="samples", epochs=1, batch_size=64, limit_train=128, progress=False,
                  calib_batches=1, calib_refine_samples=0, resume=True)
    monkeypatch.chdir(a)
    first = train(TrainConfig(from_checkpoint="float.pt", output="run.pt", **common))
    monkeypatch.chdir(b)
    again = train(TrainConfig(from_checkpoint="../a/float.pt", output=str(a / "run.pt"), **common))
    assert again["final_test_acc"] == first["final_test_acc"]  # the finished run, not a new one
    shutil.copy(a / "float.pt", b / "other.pt")
    with pytest.raises(ValueError, match="other settings.*from_checkpoint"):
        train(TrainConfig(from_checkpoint="other.pt", output=str(a / "run.pt"), **common))
