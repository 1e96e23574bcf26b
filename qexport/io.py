"""Atomic file output: write to a temporary file beside the target, fsync, rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` in one rename, else it is removed.

    A reader never sees a half-written file, and an interrupted write leaves any previous
    file at ``path`` intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a normal output follows the umask
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """Run ``save(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        save(tmp)


# Input values per batch when a whole model runs on many samples (calibration, fidelity, step
# statistics): 4M floats is 27 images of 3x224x224, and every Fashion-MNIST batch stays whole.
BATCH_INPUT_VALUES = 4 << 20


def batch_size_for(x, limit: int) -> int:
    """``limit``, or fewer samples per batch when ``x``'s samples are large (``BATCH_INPUT_VALUES``)."""
    from .inputs import values_per_sample

    per_sample = values_per_sample(x)
    return int(max(1, min(limit, BATCH_INPUT_VALUES // max(1, per_sample))))
