"""Paths, data choices and helpers shared by the test folders (fixtures: tests/conftest.py, which
also puts this folder on sys.path). Importing this module imports neither torch nor qexport's
torch-side, so the kernel tests stay torch-free (.ci/sanitize.sh runs them under ASan)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qexport.data.loaders import FASHION_MNIST_DIR

REPO = Path(__file__).resolve().parent.parent
SAMPLE_MODEL = REPO / "samples" / "small_cnn_float.pt"  # the shipped float small CNN
SAMPLES_NPZ = REPO / "samples" / "fashion_mnist_512.npz"  # its 512 shipped test images (x, y)
HAVE_FASHION_MNIST = all((FASHION_MNIST_DIR / f"{split}-images-idx3-ubyte.gz").is_file() for split in ("train", "t10k"))
#: The data of the tiny training runs: the real Fashion-MNIST when installed (CI installs it),
#: else the shipped samples.
TRAIN_DATA = "fashion-mnist" if HAVE_FASHION_MNIST else "samples"
CHANCE = 10.0  # top-1 (%) of guessing among Fashion-MNIST's 10 classes


def timeless(obj, drop: tuple[str, ...] = ()):
    """Training metrics without wall times (keys ending in _s), which differ between identical
    runs, and without the keys in ``drop``."""
    if isinstance(obj, dict):
        return {k: timeless(v, drop) for k, v in obj.items() if not k.endswith("_s") and k not in drop}
    if isinstance(obj, list):
        return [timeless(v, drop) for v in obj]
    return obj


def subprocess_env(**extra: str) -> dict:
    """The environment for a Python subprocess that imports qexport from this checkout: this
    process's, without torchrun's rank variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run_cli(*args) -> tuple[int, str]:
    """``qexport <args>`` in this process: (exit code, stdout + stderr). An exception that escapes
    the command would reach the user as a traceback, so it fails the test."""
    from typer.testing import CliRunner

    from qexport.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, text)
    assert "Traceback" not in text, text
    return result.exit_code, text


def varint(v: int) -> bytes:
    """Unsigned LEB128, as the entropy-coded weight stream stores frequencies (docs/ops.md)."""
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def rans_stream(entries, state: int, payload: bytes = b"", n: int | None = None) -> np.ndarray:
    """An entropy-coded weight stream written by hand: the table (code, frequency or raw varint
    bytes), the coder state, the payload."""
    head = bytearray([(len(entries) if n is None else n) - 1])
    for code, f in entries:
        head.append(code)
        head += f if isinstance(f, bytes) else varint(f)
    return np.frombuffer(bytes(head) + state.to_bytes(4, "little") + payload, np.uint8).copy()
