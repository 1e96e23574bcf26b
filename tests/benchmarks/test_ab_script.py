"""benchmarks/ab.py: two op-library builds timed in one process. The A/A run end to end (in a
subprocess: the script sets the process-wide thread pool), the bitwise comparison that refuses to
time builds computing different bits, and its argument errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ab  # noqa: E402

MODEL = ROOT / "benchmarks/results/models/asq-post_w3_s0.onnx"  # the shipped Fashion-MNIST CNN, 3-bit


def run_ab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks/ab.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_same_library_on_both_sides(tmp_path):
    from qexport.runtime import library_path

    out = tmp_path / "ab.json"
    proc = run_ab(str(MODEL), "--lib-a", str(library_path()), "--threads", "2", "--batch", "4", "--rounds", "20",
                  "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["same_library"] and res["threads"] == 2 and res["batch"] == 4 and res["runs_each"] == 60
    for side in ("a_us", "b_us"):
        p = res[side]
        assert 0 < p["p10"] <= p["p25"] <= p["p50"]
    assert all(0.2 < r < 5 for r in res["b_over_a"].values())
    assert "| asq-post_w3_s0.onnx | 2 | 4 |" in proc.stdout


def test_first_difference_names_the_output():
    a = [np.zeros((2, 3), np.float32), np.arange(4, dtype=np.uint8)]
    assert ab.first_difference(a, [x.copy() for x in a], ["y", "q"]) is None
    b = [a[0].copy(), a[1].copy()]
    b[1][2] = 9
    assert ab.first_difference(a, b, ["y", "q"]) == "output 'q': 1 of 4 values differ"
    c = [np.full((2, 3), -0.0, np.float32), a[1]]  # -0.0 and +0.0 compare equal but are other bits
    assert ab.first_difference(a, c, ["y", "q"]) == "output 'y': 6 of 6 values differ"
    d = [a[0].reshape(3, 2), a[1]]
    assert "output 'y': float32[2, 3] against float32[3, 2]" == ab.first_difference(a, d, ["y", "q"])


@pytest.mark.parametrize("args,message", [(["--lib-a", "/nonexistent.so"], "no library file"),
                                          (["--lib-a", __file__, "--rounds", "0"], "must be >= 1")])
def test_argument_errors(args, message):
    proc = run_ab(str(MODEL), *args)
    assert proc.returncode == 2 and message in proc.stderr
