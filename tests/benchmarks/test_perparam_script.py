"""benchmarks/perparam.py end to end on a small slice: a record per model scored by its ONNX file,
the whole-file compression ratio, the plot and the markdown section docs/results.md includes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_perparam_script_smoke(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/perparam.py"), "--formats", "perparam", "--rounds", "1",
                           "--steps", "5", "--epochs", "0", "--limit-train", "2000", "--limit-test", "200",
                           "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = json.loads((out / "perparam.json").read_text())
    onnx_file = Path(rec["onnx_path"]) if Path(rec["onnx_path"]).is_absolute() else ROOT / rec["onnx_path"]
    assert onnx_file.is_file() and rec["onnx_bytes"] == onnx_file.stat().st_size
    assert rec["ratio"] == pytest.approx(rec["float_onnx_bytes"] / rec["onnx_bytes"])
    assert rec["test_samples"] == 200 and rec["onnx_top1"] > 0.6
    assert rec["stream_bytes"] < rec["fixed_width_bytes"]  # the rounds removed bits
    assert sum(sum(s["bits_histogram"].values()) for s in rec["layers"].values()) == rec["weights"]
    assert (out / "perparam.png").stat().st_size > 10_000
    assert "| lsq-perparam_s0 |" in proc.stdout and "Bits per parameter" in proc.stdout
