"""Determinism, concurrency, atomic outputs and specific errors for damaged files."""
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from qexport.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from qexport.convert import convert
from qexport.io import atomic_save, atomic_write_bytes
from qexport.models import build_model
from qexport.runtime import make_session
from shared import SAMPLE_MODEL, run_cli


@pytest.fixture(scope="module")
def onnx_w4(converted_sample):
    return converted_sample(4)[0]


@pytest.fixture(scope="module")
def X(samples):
    return samples[0]


def test_converting_the_same_checkpoint_twice_is_byte_identical(tmp_path, onnx_w4, X):
    # the shared conversion ran `qexport convert samples/small_cnn_float.pt --bits 4` (with parity)
    again = tmp_path / "again.onnx"
    code, text = run_cli("convert", SAMPLE_MODEL, "--bits", 4, "--no-validate", "-o", again)
    assert code == 0, text
    assert again.read_bytes() == onnx_w4.read_bytes()
    # from the quantized checkpoint convert wrote: the same graph (only qexport.source, the
    # sha256 of the input file, differs)
    third = tmp_path / "third.onnx"
    convert(onnx_w4.with_suffix(".pt"), x=X[:128], output=third, validate=False)
    a, b = onnx.load(str(onnx_w4)), onnx.load(str(third))
    assert a.graph == b.graph
    assert {m.key: m.value for m in a.metadata_props if m.key != "qexport.source"} == \
        {m.key: m.value for m in b.metadata_props if m.key != "qexport.source"}


def test_one_session_from_eight_threads_and_four_sessions_agree(onnx_w4, X):
    batches = [X[i * 16 : (i + 1) * 16] for i in range(8)]
    single = make_session(str(onnx_w4))
    expected = [single.run(None, {"input": b})[0] for b in batches]

    start = threading.Barrier(8)

    def shared(i):
        start.wait()
        return [single.run(None, {"input": batches[(i + k) % 8]})[0] for k in range(4)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(shared, range(8)))
    for i, outs in enumerate(results):
        for k, out in enumerate(outs):
            assert np.array_equal(out, expected[(i + k) % 8])

    sessions = [make_session(str(onnx_w4), threads=t) for t in (1, 2, 1, 2)]

    def own(i):
        return [sessions[i].run(None, {"input": b})[0] for b in batches]

    with ThreadPoolExecutor(4) as pool:
        for outs in pool.map(own, range(4)):
            assert all(np.array_equal(o, e) for o, e in zip(outs, expected))


def test_version_mismatch_and_missing_fields_are_specific(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, model=build_model("small_cnn", width=8), arch="small_cnn", arch_args={"width": 8})
    ckpt = torch.load(path, weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    ckpt["version"] = 1
    del ckpt["arch"]
    torch.save(ckpt, tmp_path / "noarch.pt")
    with pytest.raises(CheckpointError, match="'arch' is missing"):
        load_checkpoint(tmp_path / "noarch.pt")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.onnx"
    atomic_write_bytes(target, b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half of a new fi")
        raise KeyboardInterrupt  # an interruption mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_save(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary left behind


class _NotPlainData:
    pass


def test_a_checkpoint_that_would_need_unpickling_is_never_written(tmp_path):
    target = tmp_path / "m.pt"
    with pytest.raises(CheckpointError, match="refusing to write"):
        save_checkpoint(target, model=build_model("small_cnn", width=8), arch="small_cnn",
                        metrics={"version": _NotPlainData()})
    assert not target.exists() and not list(tmp_path.iterdir())
