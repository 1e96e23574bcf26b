"""qexport report: one self-contained HTML page of what quantization did, checked as text and as
headless Chromium renders it."""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from PIL import Image

from shared import SAMPLES_NPZ, run_cli

SECTIONS = ("summary", "layers", "bits", "size", "asq", "parity", "accuracy")


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory):
    """An uncalibrated-for-accuracy small CNN, quick to make: 3-bit ASQ+POST with one layer of mixed
    per-channel widths (40x2, 24x4 bits) and one per-parameter layer (perparam_post, up to 4 bits),
    calibrated on 32 samples: (checkpoint, onnx path)."""
    import torch

    from qexport.checkpoint import save_checkpoint
    from qexport.data import load_samples
    from qexport.export import export_onnx
    from qexport.models import build_model
    from qexport.nn import calibrate, quantize_
    from qexport.quant.config import QuantConfig

    folder = tmp_path_factory.mktemp("report")
    x = load_samples()[0][:32]
    config = QuantConfig("asq+post", 3, overrides=[("features.2.0", {"bits": [2] * 40 + [4] * 24}),
                                                   ("features.3.0", {"method": "asq+perparam_post", "bits": 4})])
    model = quantize_(build_model("small_cnn"), config)
    calibrate(model, [torch.from_numpy(x)])
    export_onnx(model, torch.from_numpy(x[:2]), folder / "mixed.onnx")
    save_checkpoint(folder / "mixed.pt", model=model, arch="small_cnn", quant=config)
    return folder / "mixed.pt", folder / "mixed.onnx"


def _layer_names(onnx_path) -> list[str]:
    from qexport import inspect_model

    return [layer.name for layer in inspect_model(onnx_path).layers]


def _images(page: str) -> list[Image.Image]:
    """Check that the page needs nothing from outside and return its decoded images."""
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"https?://", page), "a URL in the page"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page.lower()
    tags = re.findall(r"<img\b[^>]*>", page)
    srcs = [re.search(r'\bsrc="([^"]*)"', tag).group(1) for tag in tags]
    assert srcs and all(src.startswith("data:image/png;base64,") for src in srcs), [s[:40] for s in srcs]
    images = []
    for src in srcs:
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        assert np.asarray(image.convert("L")).std() > 5  # a chart, not an empty canvas
        images.append(image)
    return images


def _error_message(code: int, text: str) -> str:
    """A user error: exit code 2 and one message, no traceback (run_cli's text may hold stderr twice,
    and rich wraps a long message at the console's width)."""
    assert code == 2, text
    assert text.lstrip().startswith("error:"), text
    messages = {" ".join(chunk.split()) for chunk in text.split("error:")[1:]}
    assert len(messages) == 1, text
    return messages.pop()


def test_report_of_the_converted_sample(converted_sample, tmp_path) -> None:
    onnx_path, _ = converted_sample(3)
    out = tmp_path / "report.html"
    code, text = run_cli("report", onnx_path.with_suffix(".pt"), onnx_path, "-o", out)
    assert code == 0 and "parity: PASS" in text and f"wrote {out}" in " ".join(text.split()), text
    page = out.read_text(encoding="utf-8")
    images = _images(page)
    assert len(images) >= 3 + 4  # SQNR, bits, size; a beta histogram per ASQ layer (4)
    names = _layer_names(onnx_path)
    assert len(names) == 6
    for name in names:
        assert name in page, name
    for fragment in ("parity: PASS", "asq+post", "3-bit weights", onnx_path.name, "512 samples", "CV (PyTorch)",
                     "ONNX model (ONNX Runtime)", "PyTorch quantized model", "weight codes", "act SQNR"):
        assert fragment in page, fragment
    assert len(re.findall(r'alt="histogram of beta of ', page)) == 4


def test_report_shows_mixed_and_per_parameter_bit_widths(quick_model, tmp_path) -> None:
    checkpoint, onnx_path = quick_model
    code, text = run_cli("report", checkpoint, onnx_path, "--limit", 48)  # default data: the shipped samples
    assert code == 0, text
    out = onnx_path.with_name("mixed.report.html")
    page = out.read_text(encoding="utf-8")
    _images(page)
    for name in _layer_names(onnx_path):
        assert name in page, name
    for fragment in ("2.75 avg (40x2, 24x4)", "avg per weight (0b", 'alt="histograms of weight bit-widths"',
                     "48 samples from samples", "perparam_post", "parity: PASS"):
        assert fragment in page, fragment
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section


def test_build_report_api(quick_model, tmp_path) -> None:
    import qexport
    from qexport.report import measure, prepare, write_report_html

    checkpoint, onnx_path = quick_model
    x = np.load(SAMPLES_NPZ)["x"][:16]
    page = qexport.build_report(checkpoint, onnx_path, x)  # no labels
    assert "No labels in the data" in page and page.rstrip().endswith("</html>")
    data = measure(prepare(str(checkpoint), onnx_path, x), data_name="16 images")
    assert data.passed and data.samples == 16 and set(data.layers) == set(_layer_names(onnx_path))
    for name, stats in data.layers.items():
        assert 0 < stats.weight_sqnr_db < 80 and stats.weight_sqnr_min_db <= stats.weight_sqnr_db, name
        assert stats.act_sqnr_db is not None and stats.act_sqnr_db > 0, name
        assert (stats.beta is not None) == (stats.act_kind == "asq"), name
        assert stats.beta is None or (stats.beta.shape == (16,) and (stats.beta > 0).all()), name
    path = write_report_html(tmp_path / "sub" / "r.html", data)
    assert "16 images" in path.read_text(encoding="utf-8")


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)


def _run_chromium(binary: str, page, profile, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file:// page, page console messages logged to stderr."""
    cmd = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, page.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium(quick_model, tmp_path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (.ci/run installs Debian's chromium)")
    checkpoint, onnx_path = quick_model
    page = tmp_path / "report.html"
    code, text = run_cli("report", checkpoint, onnx_path, "--limit", 32, "-o", page)
    assert code == 0, text
    # The console check must be able to fail: a page with an error is seen as one.
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><html><body><script>console.error('control-marker'); noSuchFunction();"
                       "</script></body></html>")
    seen = _console_lines(_run_chromium(binary, control, tmp_path / "profile", "--dump-dom").stderr)
    assert any("control-marker" in line for line in seen) and any("noSuchFunction" in line for line in seen), seen

    shot = tmp_path / "shot.png"
    result = _run_chromium(binary, page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,3000")
    assert _console_lines(result.stderr) == []
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (3000, 1200, 3)
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 200
    blue = np.all(np.abs(image.astype(int) - (0x3B, 0x6E, 0xA8)) < 12, axis=-1).sum()  # the charts' bars, drawn
    assert blue > 5000, blue

    dom = _run_chromium(binary, page, tmp_path / "profile", "--dump-dom")
    assert _console_lines(dom.stderr) == []
    assert dom.stdout.rstrip().endswith("</html>") and "</footer>" in dom.stdout
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom.stdout, section
    assert dom.stdout.count("<img ") == page.read_text(encoding="utf-8").count("<img ")


def test_report_refuses_unusable_inputs(quick_model, tiny_resnet, tmp_path) -> None:
    checkpoint, onnx_path = quick_model
    text = _error_message(*run_cli("report", tmp_path / "missing.pt", onnx_path))
    assert "missing.pt not found" in text
    text = _error_message(*run_cli("report", checkpoint, tmp_path / "missing.onnx"))
    assert "missing.onnx not found" in text

    from shared import SAMPLE_MODEL

    text = _error_message(*run_cli("report", SAMPLE_MODEL, onnx_path, "--limit", 4))
    assert "is a float model" in text and "quantized checkpoint" in text

    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(plain))
    text = _error_message(*run_cli("report", checkpoint, plain))
    assert "not exported by qexport" in text

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 3, 32, 32), np.float32))
    text = _error_message(*run_cli("report", checkpoint, onnx_path, "--data", wrong))
    assert "does not accept the data's input shape (3, 32, 32)" in text

    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 28, 28), np.float32))
    text = _error_message(*run_cli("report", checkpoint, onnx_path, "--data", empty))
    assert "no samples" in text

    other = tmp_path / "resnet.onnx"  # a qexport model of 3x12x12 inputs: the shipped samples do not fit
    onnx.save(tiny_resnet[2], str(other))
    text = _error_message(*run_cli("report", checkpoint, other))
    assert "give --data" in text
    assert not list(tmp_path.glob("*.html"))
