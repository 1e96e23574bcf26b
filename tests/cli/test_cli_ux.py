"""The first five minutes (issue 15): the README as written, clear errors instead of tracebacks,
honest advice, --version, plain --help, the parity report's provenance, what bench says."""
import json
import re
import subprocess
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from shared import REPO, SAMPLE_MODEL
from shared import run_cli as run  # an exception that escapes a command fails the test (a traceback for the user)

README = (REPO / "README.md").read_text()
DEFAULT_NAME = "small_cnn_float_asq-post_w3"  # convert's default output name for --bits 3, asq+post


@pytest.fixture(scope="module")
def readme_converted(tmp_path_factory):
    """The README's first command, from another folder, with the method spelled as the README does."""
    import os

    folder = tmp_path_factory.mktemp("readme")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        code, text = run("convert", SAMPLE_MODEL, "--method", "ASQ + POST", "--bits", 3, "--limit", 64)
    finally:
        os.chdir(cwd)
    assert code == 0, text
    return folder, text


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory):
    """A valid ONNX model without ai.qexport ops."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 4, 4])])
    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# --- 1. the README, word for word ------------------------------------------------------------

def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def test_readme_two_commands_make_a_venv_and_say_how_long_tests_take():
    section = _section("Two commands")
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 2, blocks
    first, second = (b.strip() for b in blocks)
    assert "\n" not in first  # one command (a chain)
    steps = [s.strip() for s in first.split("&&")]
    venv = steps.index("python3 -m venv .venv")
    assert steps[venv + 1] == ". .venv/bin/activate"
    assert all(not s.startswith("pip") for s in steps[:venv])  # nothing pip-installed outside the venv
    assert "python3-venv" in first  # Debian's python3 needs it for `python3 -m venv`
    assert steps[-1] == "qexport convert samples/small_cnn_float.pt --bits 3"
    assert second == "python -m pytest -q"
    # CI runs the first line that starts with `python -m pytest`
    assert next(line for line in README.splitlines() if line.startswith("python -m pytest")) == "python -m pytest -q"
    assert re.search(r"about [\d.]+ minutes on a quiet 2-core machine", section)


def test_readme_python_example_runs_as_written(readme_converted, capsys):
    folder, _ = readme_converted
    assert (folder / f"{DEFAULT_NAME}.onnx").is_file()
    samples = folder / "samples"
    if not samples.exists():
        samples.symlink_to(REPO / "samples")
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    import os

    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for block in blocks:
            namespace: dict = {}
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "input ['batch', 1, 28, 28] tensor(float)" in printed
    assert namespace["logits"].shape == (8, 10) and namespace["logits"].dtype == np.float32
    assert "InferenceSession(path, so)" in blocks[0]  # the "by hand" branch makes its own session


def test_gitignore_covers_what_the_first_command_leaves():
    names = [f"{DEFAULT_NAME}.onnx", f"{DEFAULT_NAME}.pt", f"{DEFAULT_NAME}.parity.json", ".venv/bin/python"]
    proc = subprocess.run(["git", "-C", str(REPO), "check-ignore", *names], capture_output=True, text=True)
    if proc.returncode == 128:
        pytest.skip("not a git checkout")
    assert proc.stdout.split() == names, proc.stdout
    # tracked results elsewhere stay visible
    kept = subprocess.run(["git", "-C", str(REPO), "check-ignore", "benchmarks/results/models/x.onnx",
                           "samples/x.pt"], capture_output=True, text=True)
    assert kept.stdout.strip() == ""


# --- 2. tracebacks never reach the user -------------------------------------------------------

@pytest.mark.parametrize("payload", [b"hello, not an onnx file\n", b""])
def test_bench_on_a_non_onnx_file(tmp_path, payload):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(payload)
    code, text = run("bench", bad, "--no-memory")
    assert code == 2 and "not an ONNX model" in text, text


@pytest.mark.parametrize("option", ["--batch", "--threads", "--rounds"])
def test_bench_refuses_zero(plain_onnx, option):
    code, text = run("bench", plain_onnx, "--plain", option, 0, "--no-memory")
    assert code == 2 and "must be >= 1" in text, text


def test_convert_refuses_no_samples(tmp_path):
    code, text = run("convert", SAMPLE_MODEL, "--limit", 0, "-o", tmp_path / "x.onnx")
    assert code == 2 and "no samples" in text, text
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 28, 28), np.float32))
    code, text = run("convert", SAMPLE_MODEL, "--data", empty, "-o", tmp_path / "x.onnx")
    assert code == 2 and "no samples" in text, text
    assert not (tmp_path / "x.onnx").exists()


def test_validate_refuses_zero_samples(readme_converted, tmp_path):
    folder, _ = readme_converted
    onnx_path, ckpt = folder / f"{DEFAULT_NAME}.onnx", folder / f"{DEFAULT_NAME}.pt"
    code, text = run("validate", ckpt, onnx_path, "--limit", 0)
    assert code == 2 and "no samples" in text and "PASS" not in text, text
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 28, 28), np.float32))
    code, text = run("validate", ckpt, onnx_path, "--data", empty)
    assert code == 2 and "no samples" in text and "PASS" not in text, text


# --- 3. advice that fits the command ------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["validate", "convert"])
def test_onnx_file_where_a_checkpoint_belongs(plain_onnx, tmp_path, cmd):
    args = [plain_onnx, plain_onnx] if cmd == "validate" else [plain_onnx, "-o", tmp_path / "x.onnx"]
    code, text = run(cmd, *args)
    assert code == 2, text
    assert "--trust-pickle" not in text  # validate has no such flag, and it would not load an ONNX file anyway
    assert "not a PyTorch checkpoint" in text and "ONNX model" in text, text


@pytest.mark.parametrize("cmd", ["validate", "convert"])
def test_text_file_named_pt(plain_onnx, tmp_path, cmd):
    text_file = tmp_path / "notes.pt"
    text_file.write_text("hello\n")
    args = [text_file, plain_onnx] if cmd == "validate" else [text_file, "-o", tmp_path / "x.onnx"]
    code, text = run(cmd, *args)
    assert code == 2 and "not a PyTorch checkpoint" in text, text
    assert not re.search(r": \d+\s*$", text.strip()), text  # no bare "101"


# --- 4. options -----------------------------------------------------------------------------------

def test_method_is_case_and_space_insensitive(readme_converted):
    folder, text = readme_converted
    assert "asq+post, 3-bit weights" in text
    assert (folder / f"{DEFAULT_NAME}.onnx").is_file()


@pytest.mark.parametrize("bits", [1, 0, 9])
@pytest.mark.parametrize("cmd", ["convert", "train"])
def test_bits_out_of_every_range(tmp_path, bits, cmd):
    args = [SAMPLE_MODEL, "-o", tmp_path / "x.onnx"] if cmd == "convert" else ["-o", tmp_path / "x.pt"]
    code, text = run(cmd, *args, "--bits", bits)
    assert code == 2 and f"--bits {bits}" in text and "2..8" in text, text
    assert "uniform weights at 5..8" not in text  # lsq/asq would refuse these bits too


def test_version():
    code, text = run("--version")
    assert code == 0 and text.strip() == f"qexport {version('qexport')}"


@pytest.mark.parametrize("cmd", [[], ["convert"], ["validate"], ["train"], ["bench"], ["build-ops"]])
def test_help_shows_no_bool_type(cmd):
    code, text = run(*cmd, "--help")
    assert code == 0 and "Usage" in text
    assert "<bool>" not in text, text
    if not cmd:
        assert "--version" in text


# --- 5. the parity report says what produced it ---------------------------------------------------

def _strict_json(path: Path) -> dict:
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _check_provenance(report: dict) -> None:
    assert report["qexport_version"] == version("qexport")
    assert report["onnxruntime_version"] == onnxruntime.__version__
    assert report["method"] == "asq+post" and report["bits"] == 3
    written = datetime.fromisoformat(report["created_utc"])
    assert written.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - written) < timedelta(hours=1)
    # ONNX vs the deploy model is bit-exact: infinite SQNR, stored as null plus a flag
    assert report["vs_deploy"]["sqnr_db"] is None and report["vs_deploy"]["sqnr_infinite"] is True
    assert isinstance(report["vs_trained"]["sqnr_db"], float) and report["vs_trained"]["sqnr_infinite"] is False


def test_convert_report_has_versions_method_and_time(readme_converted):
    folder, _ = readme_converted
    report = _strict_json(folder / f"{DEFAULT_NAME}.parity.json")
    assert report["passed"] and report["samples"] == 64
    _check_provenance(report)


def test_validate_report_has_versions_method_and_time(readme_converted, tmp_path):
    folder, _ = readme_converted
    out = tmp_path / "report.json"
    code, text = run("validate", folder / f"{DEFAULT_NAME}.pt", folder / f"{DEFAULT_NAME}.onnx", "--limit", 16,
                     "--report", out)
    assert code == 0 and "parity: PASS" in text, text
    report = _strict_json(out)
    assert report["samples"] == 16
    _check_provenance(report)


# --- 7. bench says what it timed and what it could not ---------------------------------------------

def test_bench_refuses_a_plain_onnx_file_unless_asked_and_labels_it(plain_onnx):
    code, text = run("bench", plain_onnx, "--batch", 1, "--threads", 1, "--rounds", 1, "--no-memory")
    assert code == 2 and "not a qexport model" in text and "--plain" in text, text
    code, text = run("bench", plain_onnx, "--plain", "--batch", 1, "--threads", 1, "--rounds", 1, "--no-memory")
    assert code == 0, text
    assert "plain ONNX" in text and "no ai.qexport ops" in text, text
    assert not re.search(r"│\s+-\s+│", text)  # no unexplained "-" cells
    assert "ORT float" not in text and "pass --float" in text, text


def test_bench_builds_onnx_runtime_baselines_of_a_converted_model(readme_converted):
    """bench of a model `qexport convert` wrote: ONNX Runtime's float and int8 models of its source
    are built beside it (once) and timed alongside, with the ratios."""
    folder, _ = readme_converted
    model = folder / f"{DEFAULT_NAME}.onnx"
    code, text = run("bench", model, "--batch", 1, "--threads", 1, "--rounds", 1, "--no-memory")
    assert code == 0, text
    assert "qexport" in text and "plain ONNX" not in text and "GOPS" in text, text
    assert "ORT float" in text and "ORT int8" in text and "vs int8" in text, text
    assert (folder / f"{DEFAULT_NAME}.ort_float.onnx").is_file() and (folder / f"{DEFAULT_NAME}.ort_int8.onnx").is_file()
    code, text = run("bench", model, "--no-baselines", "--batch", 1, "--threads", 1, "--rounds", 1, "--no-memory")
    assert code == 0 and "ORT float" not in text and "pass --float" in text, text
