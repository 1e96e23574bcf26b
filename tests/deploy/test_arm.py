"""ARM edge deployment: the cross-built library and runner, the runner's errors, parity under qemu.

Needs Debian's g++-aarch64-linux-gnu and `file` (.ci/run installs them): without them these
tests fail with the install hint rather than skip. The qemu tests fetch qemu-user >= 10 into
the cache on first use; they skip only when QEXPORT_SKIP_ARM=1. The full 512-sample check at
3 and 4 bits on both emulated CPUs is .ci/arm_parity.sh.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from qexport.cli import app
from qexport.deploy import (AARCH64_SYSROOT, DeployError, RunnerError, RunnerSession, build_ops, dist_files,
                            elf_machine, fetch_qemu, validate_on_runner)
from qexport.runtime import KERNEL_ISA_ENV, KERNEL_TRACE_ENV, make_session, parse_kernel_trace
from shared import REPO

pytestmark = pytest.mark.arm

SKIP_QEMU = os.environ.get("QEXPORT_SKIP_ARM") == "1"
needs_qemu = pytest.mark.skipif(SKIP_QEMU, reason="QEXPORT_SKIP_ARM=1")


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"'{tool}' not found: install it with `apt-get install {package}` (.ci/run does)")


@pytest.fixture(scope="module")
def x86_dist(tmp_path_factory):
    root = tmp_path_factory.mktemp("x86")
    return build_ops("x86_64", root / "dist", source=REPO / "custom_ops", build_dir=root / "build")


@pytest.fixture(scope="module")
def a64_dist(tmp_path_factory):
    _require("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")
    root = tmp_path_factory.mktemp("aarch64")
    return build_ops("aarch64", root / "dist", source=REPO / "custom_ops", build_dir=root / "build")


@pytest.fixture(scope="module")
def qemu():
    if SKIP_QEMU:
        pytest.skip("QEXPORT_SKIP_ARM=1")
    return fetch_qemu()


@pytest.fixture(scope="module")
def model(converted_sample):
    """The 3-bit ASQ+POST export of the shipped float sample (tests/conftest.py) and its checkpoint."""
    path, _ = converted_sample(3)
    return path, path.with_suffix(".pt")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, samples):
    d = tmp_path_factory.mktemp("inputs")
    x = samples[0][:8]
    files = {"x": d / "x.npy", "f64": d / "f64.npy", "shape": d / "shape.npy", "rank": d / "rank.npy",
             "fortran": d / "fortran.npy", "bigendian": d / "be.npy", "notnpy": d / "not.npy", "truncated": d / "trunc.npy"}
    np.save(files["x"], x)
    np.save(files["f64"], x.astype(np.float64))
    np.save(files["shape"], x[:, :, :27])
    np.save(files["rank"], x[:, 0])
    np.save(files["fortran"], np.asfortranarray(x[:, 0, :, :].reshape(8, 28, 28).transpose(2, 1, 0)))
    np.save(files["bigendian"], x.astype(">f4"))
    files["notnpy"].write_text("hello")
    files["truncated"].write_bytes(files["x"].read_bytes()[:1000])
    return x, files


def _ort_x86() -> Path:
    import onnxruntime

    return sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.1*"))[0]


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


# -- the build ---------------------------------------------------------------------------------

def test_cross_built_files_are_aarch64(a64_dist):
    _require("file", "file")
    assert {p.name for p in a64_dist.files} == {"qexport-run", "libqexport_ops.so", "libonnxruntime.so.1"}
    for path in a64_dist.files:
        desc = _run(["file", "-L", path]).stdout
        assert "ARM aarch64" in desc, desc
        assert elf_machine(path) == "aarch64"
    assert dist_files(a64_dist.outdir, "aarch64") == (a64_dist.runner, a64_dist.ops, a64_dist.ort)
    with pytest.raises(DeployError, match="not x86_64"):
        dist_files(a64_dist.outdir, "x86_64")


def test_x86_build_is_x86(x86_dist):
    assert all(elf_machine(p) == "x86_64" for p in x86_dist.files)
    assert _run([x86_dist.runner, "--version"]).stdout.startswith("qexport-run ")


def test_missing_cross_compiler_says_which_package(tmp_path, monkeypatch):
    # Only cmake (and make) on PATH: build_ops and the toolchain file both name the package.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cmake", "make"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(DeployError, match=r"apt-get install g\+\+-aarch64-linux-gnu"):
        build_ops("aarch64", tmp_path / "dist")
    proc = _run(["cmake", "-S", REPO / "custom_ops", "-B", tmp_path / "b", "-G", "Unix Makefiles",
                 f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'custom_ops/toolchains/aarch64-linux-gnu.cmake'}"],
                env={**os.environ, "PATH": str(bin_dir)})
    assert proc.returncode != 0
    assert "apt-get install g++-aarch64-linux-gnu" in " ".join(proc.stderr.split())


def test_build_ops_cli_help_and_unknown_target(tmp_path):
    for cmd in (["build-ops", "--help"], ["validate", "--help"]):
        result = CliRunner().invoke(app, cmd)
        assert result.exit_code == 0 and "--target" in result.output
    result = CliRunner().invoke(app, ["build-ops", "--target", "riscv64", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown target" in result.output + (result.stderr if result.stderr_bytes is not None else "")


# -- the runner on x86 -------------------------------------------------------------------------

def test_x86_runner_matches_onnxruntime_python(x86_dist, model, inputs, tmp_path):
    onnx_path, _ = model
    x, files = inputs
    proc = _run([x86_dist.runner, onnx_path, "--ops", x86_dist.ops, "--ort", _ort_x86(), "--input",
                 f"input={files['x']}", "--output-dir", tmp_path / "out", "--repeat", 3, "--threads", 2])
    assert proc.returncode == 0, proc.stderr
    assert "threads: 2 intra-op" in proc.stdout
    assert proc.stdout.count(" ms\n") >= 3 and "time: median" in proc.stdout and "over 3 runs" in proc.stdout
    table = (tmp_path / "out" / "outputs.tsv").read_text().split("\t")
    got = np.load(tmp_path / "out" / table[1])
    want = make_session(str(onnx_path)).run(None, {"input": x})[0]
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_runner_finds_its_libraries_beside_itself(x86_dist, model, inputs):
    # dist/ holds qexport-run, libqexport_ops.so, libonnxruntime.so.1: no --ops/--ort needed.
    onnx_path, _ = model
    proc = _run([x86_dist.runner, onnx_path, "--input", inputs[1]["x"], "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert "threads:" in proc.stdout and "time: median" in proc.stdout


ERRORS = {
    # case: (arguments after the model, expected exit status, expected message parts)
    "missing model": (None, 1, ["model file", "not found"]),
    "missing ops library": (["--ops", "/nonexistent/libqexport_ops.so"], 1, ["custom-op library", "not found"]),
    "missing ORT library": (["--ort", "/nonexistent/libonnxruntime.so.1"], 1, ["ONNX Runtime library", "not found"]),
    "wrong shape": (["--input", "input={shape}"], 1, ["has shape (8, 1, 27, 28)", "the model wants (", "1, 28, 28)"]),
    "wrong rank": (["--input", "input={rank}"], 1, ["has shape (8, 28, 28)", "the model wants"]),
    "wrong dtype": (["--input", "input={f64}"], 1, ["the model wants float32", "holds float64"]),
    "unknown option": (["--frobnicate"], 2, ["unknown option '--frobnicate'", "usage:"]),
    "missing input": ([], 1, ["missing input 'input'", "float32"]),
    "unknown input name": (["--input", "image={x}"], 1, ["no input named 'image'", "input: float32"]),
    "not npy": (["--input", "{notnpy}"], 1, ["not a .npy file"]),
    "truncated npy": (["--input", "{truncated}"], 1, ["truncated"]),
    "fortran order": (["--input", "{fortran}"], 1, ["Fortran-ordered"]),
    "big endian": (["--input", "{bigendian}"], 1, ["big-endian"]),
    "bad threads": (["--input", "{x}", "--threads", "0"], 2, ["--threads needs an integer"]),
    "missing npy": (["--input", "/nonexistent/x.npy"], 1, ["cannot open"]),
}


def _error_args(case, files, model_path, runner, ops, ort):
    args, code, parts = ERRORS[case]
    if args is None:
        return [runner, "/nonexistent/model.onnx", "--ops", ops, "--ort", ort, "--input", files["x"]], code, parts
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    cmd = [runner, model_path, *args]
    if "--ops" not in args:
        cmd += ["--ops", ops]
    if "--ort" not in args:
        cmd += ["--ort", ort]
    if case in ("missing ops library", "missing ORT library"):
        cmd += ["--input", files["x"]]
    return cmd, code, parts


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_runner_errors_are_clear(case, x86_dist, model, inputs):
    cmd, code, parts = _error_args(case, inputs[1], model[0], x86_dist.runner, x86_dist.ops, _ort_x86())
    proc = _run(cmd)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "qexport-run: error:" in proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "terminate called" not in proc.stderr


def test_runner_without_ort_beside_it_says_how_to_fix(x86_dist, model, inputs, tmp_path):
    lonely = tmp_path / "qexport-run"
    shutil.copy2(x86_dist.runner, lonely)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = _run([lonely, model[0], "--ops", x86_dist.ops, "--input", inputs[1]["x"]], env=env)
    assert proc.returncode == 1
    assert "could not load ONNX Runtime" in proc.stderr and "--ort" in proc.stderr


def test_runner_reads_and_writes_integer_npy(x86_dist, tmp_path):
    # A model of standard ops with int64 and uint8 inputs (dynamic first dimension) and outputs.
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["a_out"]), helper.make_node("Identity", ["b"], ["b/out:0"]),
         helper.make_node("Cast", ["b"], ["b_f"], to=TensorProto.FLOAT)],
        "io", [helper.make_tensor_value_info("a", TensorProto.INT64, ["n", 3]),
               helper.make_tensor_value_info("b", TensorProto.UINT8, [2])],
        [helper.make_tensor_value_info("a_out", TensorProto.INT64, ["n", 3]),
         helper.make_tensor_value_info("b/out:0", TensorProto.UINT8, [2]),
         helper.make_tensor_value_info("b_f", TensorProto.FLOAT, [2])])
    path = tmp_path / "io.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    a = np.arange(-6, 9, dtype=np.int64).reshape(5, 3) * (1 << 40)
    b = np.array([7, 255], dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    proc = _run([x86_dist.runner, path, "--input", f"a={tmp_path / 'a.npy'}", "--input", f"b={tmp_path / 'b.npy'}",
                 "--output-dir", tmp_path / "out"])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in (tmp_path / "out" / "outputs.tsv").read_text().splitlines()]
    files = {r[0]: np.load(tmp_path / "out" / r[1]) for r in rows}
    assert [r[1] for r in rows] == ["a_out.npy", "b_out_0.npy", "b_f.npy"]
    assert files["a_out"].dtype == np.int64 and np.array_equal(files["a_out"], a)
    assert files["b/out:0"].dtype == np.uint8 and np.array_equal(files["b/out:0"], b)
    assert files["b_f"].dtype == np.float32 and np.array_equal(files["b_f"], b.astype(np.float32))
    # two inputs: an unnamed --input is ambiguous
    proc = _run([x86_dist.runner, path, "--input", tmp_path / "a.npy"])
    assert proc.returncode == 1 and "name each one" in proc.stderr


def test_runner_session_native_parity(x86_dist, model, samples):
    """The RunnerSession behind check_parity, natively on x86: exact parity."""
    from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint

    onnx_path, ckpt = model
    x, y = samples
    qmodel = build_model_from_checkpoint(load_checkpoint(ckpt))
    (run,) = validate_on_runner(qmodel, onnx.load(str(onnx_path)), x[:16], y[:16], runner=x86_dist.runner,
                                ops=x86_dist.ops, ort=x86_dist.ort, threads=1)
    assert run.report.passed, run.report.failures
    assert all(layer.mismatches == 0 and layer.codes > 0 for layer in run.report.layers)


# -- under qemu-aarch64 ------------------------------------------------------------------------

@needs_qemu
@pytest.mark.parametrize("case", ["missing model", "missing ops library", "wrong shape", "wrong dtype", "unknown option"])
def test_runner_errors_under_qemu(case, qemu, a64_dist, model, inputs):
    cmd, code, parts = _error_args(case, inputs[1], model[0], a64_dist.runner, a64_dist.ops, a64_dist.ort)
    proc = _run([qemu, "-cpu", "cortex-a53", "-L", AARCH64_SYSROOT, *cmd])
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    for part in parts:
        assert part in proc.stderr, proc.stderr


@needs_qemu
def test_parity_under_qemu_both_cpus(qemu, a64_dist, model, tmp_path):
    """`qexport validate --target aarch64` on a few samples, -cpu cortex-a76 (dotprod) and cortex-a53 (NEON only)."""
    onnx_path, ckpt = model
    report = tmp_path / "arm.json"
    result = CliRunner().invoke(app, ["validate", str(ckpt), str(onnx_path), "--target", "aarch64", "--dist",
                                      str(a64_dist.outdir), "--limit", "24", "--threads", "2", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "aarch64 parity on cortex-a76, cortex-a53: " in result.output and "PASS" in result.output
    data = json.loads(report.read_text())
    assert data["passed"] and set(data["cpus"]) == {"cortex-a76", "cortex-a53"}
    for cpu, rep in data["cpus"].items():
        assert rep["samples"] == 24 and rep["passed"], (cpu, rep["failures"])
        assert all(layer["mismatches"] == 0 for layer in rep["layers"])
        post = [layer for layer in rep["layers"] if layer["weights"] == "post"]
        assert post and all(layer["codes"] > 0 for layer in post)
        assert rep["vs_deploy"]["top1_agreement"] == 1.0


@needs_qemu
def test_emulated_session_outputs_equal_x86(qemu, a64_dist, model, inputs):
    """Single thread, NEON-only CPU: the same logits as ONNX Runtime on x86, bit for bit."""
    onnx_path, _ = model
    x = inputs[0]
    with RunnerSession(onnx_path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu,
                       cpu="cortex-a53", threads=1) as sess:
        assert [i.name for i in sess.get_inputs()] == ["input"]
        (got,) = sess.run(None, {"input": x})
        assert "threads: 1 intra-op" in sess.last_stdout
    want = make_session(str(onnx_path)).run(None, {"input": x})[0]
    assert np.array_equal(got, want)


@needs_qemu
def test_kernel_error_comes_back_as_a_message_under_qemu(qemu, a64_dist, tmp_path):
    """A kernel's refusal (an exception inside the aarch64 op library) reaches the user as a message."""
    from kernel_graphs import single_node_model

    model = single_node_model("GlobalAvgPool", {"X": np.zeros((2, 3, 4, 4), np.float32)}, [("Y", TensorProto.FLOAT)],
                              {}, free_shapes=True)
    path = tmp_path / "pool.onnx"
    onnx.save(model, str(path))
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    proc = _run([qemu, "-cpu", "cortex-a53", "-L", AARCH64_SYSROOT, a64_dist.runner, path, "--input", tmp_path / "x.npy"])
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "inference failed" in proc.stderr and "must have rank >= 3" in proc.stderr, proc.stderr


@needs_qemu
@pytest.mark.parametrize("cpu,fastest,other", [("cortex-a76", "dotprod", "neon"), ("cortex-a53", "neon", "dotprod")])
def test_kernel_paths_under_qemu(cpu, fastest, other, qemu, a64_dist, model, inputs, monkeypatch):
    """Each emulated CPU runs its fastest path: every node of the model reports it through the runner
    (QEXPORT_KERNEL_TRACE=1), or, for a part that path has no kernel of its own for, the path
    docs/ops.md names, with reason=not_in_path. Forcing the other path runs it where the CPU has
    it (cortex-a76) and is refused where it does not (cortex-a53 has no dotprod)."""
    from kernel_graphs import expected_path

    onnx_path, _ = model
    nodes = {n.name: n.op_type for n in onnx.load(str(onnx_path)).graph.node if n.domain == "ai.qexport"}
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    for forced in (None, other):
        if forced is not None:
            monkeypatch.setenv(KERNEL_ISA_ENV, forced)
        selected = forced or fastest
        with RunnerSession(onnx_path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu, cpu=cpu,
                           threads=2) as sess:
            if forced == "dotprod":  # on cortex-a53
                with pytest.raises(RunnerError, match="QEXPORT_KERNEL_ISA='dotprod' is not available on this CPU"):
                    sess.run(None, {"input": inputs[0]})
                continue
            sess.run(None, {"input": inputs[0]})
            lines = parse_kernel_trace(sess.last_stderr)
        assert sorted(line.node for line in lines) == sorted(nodes), sess.last_stderr  # every node, once
        for line in lines:
            want = expected_path(selected, line.op)
            assert line.op == nodes[line.node] and line.selected == selected, line
            assert (line.path, line.reason) == (want, None if want == selected else "not_in_path"), line
        assert {line.path for line in lines if line.op.endswith(("Conv", "ConvFused"))} == {selected}


@needs_qemu
@pytest.mark.parametrize("op", ["Sigmoid", "Silu"])
def test_activations_under_qemu_equal_the_reference(op, qemu, a64_dist, tmp_path):
    """ai.qexport.Sigmoid / Silu on aarch64 (its libm's rint and ldexp, no FMA contraction): the
    reference's bits, special values included."""
    from kernel_graphs import single_node_model

    from qexport.spec import reference as R

    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 3, 50, 50)) * 10.0 ** rng.uniform(-3, 2.2, size=(4, 3, 50, 50))).astype(np.float32)
    x.reshape(-1)[:11] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e38, -3e38, 110, -110, -120], np.float32)
    path = tmp_path / f"{op}.onnx"
    onnx.save(single_node_model(op, {"X": x}, [("Y", TensorProto.FLOAT)], {}), str(path))
    with RunnerSession(path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu,
                       cpu="cortex-a53", threads=1) as sess:
        (got,) = sess.run(None, {"X": x})
    want = R.sigmoid(x) if op == "Sigmoid" else R.silu(x)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@needs_qemu
@pytest.mark.parametrize("cpu,isa", [("cortex-a53", "neon"), ("cortex-a76", "dotprod")])
def test_depthwise_int16_bound_under_qemu(cpu, isa, qemu, a64_dist, tmp_path, monkeypatch):
    """The depthwise kernel's int16 variant on aarch64 at its bound: every code at its largest
    distance from the zero point, every weight +-64: 15 taps * 31 * 64 = 29760 in int16 lanes (mla
    by scalar, sxtl for the epilogue: negative sums included), and 9 * 63 * 64 = 36288, past the
    bound, in float32 (int16 lanes would wrap). Both give the reference's bits."""
    from kernel_graphs import weighted_model

    from qexport.spec import reference as R

    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    c, mult, h, w = 3, 2, 9, 21  # two output channels per input channel: the plane kernel
    for i, ((kh, kw), act_bits, zp, code, wcode) in enumerate([((3, 5), 5, 0, 31, 7), ((3, 5), 5, 31, 0, 7),
                                                                ((3, 3), 6, 0, 63, 15), ((3, 3), 6, 63, 0, 15)]):
        wcodes = np.full((c * mult, 1, kh, kw), wcode, dtype=np.uint8)  # post 4-bit: 7 is +64, 15 is -64
        inputs = {"X": np.full((1, c, h, w), code, dtype=np.uint8), "X_scale": np.array([0.01], np.float32),
                  "W": R.pack_codes(wcodes, 4), "W_scale": np.full(c * mult, 0.02, np.float32),
                  "B": np.zeros(c * mult, np.float32)}
        attrs = dict(bits=4, act_bits=act_bits, act_zero_point=zp, weight_shape=[c * mult, 1, kh, kw],
                     strides=[1, 1], pads=[kh // 2, kw // 2, kh // 2, kw // 2], dilations=[1, 1], group=c, relu=0)
        path = tmp_path / f"dw16_{i}.onnx"
        onnx.save(weighted_model("conv", "post", inputs, attrs, ("W", "W_scale", "B")), str(path))
        with RunnerSession(path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu, cpu=cpu,
                           threads=1) as sess:
            (got,) = sess.run(None, {"X": inputs["X"], "X_scale": inputs["X_scale"]})
            (line,) = parse_kernel_trace(sess.last_stderr)
        want = R.qconv(inputs["X"], inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"], fmt="post", bits=4,
                       act_bits=act_bits, act_zero_point=zp, weight_shape=attrs["weight_shape"], strides=[1, 1],
                       pads=attrs["pads"], dilations=[1, 1], group=c, relu=False)
        assert np.abs(want).max() == pytest.approx(kh * kw * abs(code - zp) * 64 * 0.01 * 0.02, rel=1e-6)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"case {i} on {cpu}"
        assert (line.path, line.reason) == (isa, "depthwise"), line


@needs_qemu
@pytest.mark.parametrize("cpu,isa", [("cortex-a53", "neon"), ("cortex-a76", "dotprod")])
def test_depthwise_convs_under_qemu_equal_the_reference(cpu, isa, qemu, a64_dist, tmp_path, monkeypatch):
    """The depthwise kernel on aarch64 (NEON vectors of the GCC vector extensions): MobileNet-like
    depthwise convs (large and small planes, strides 1 and 2, a channel multiplier of 2, dilation,
    POST and uniform weights) give the reference's bits on both ARM paths, and say they ran it."""
    from kernel_graphs import weighted_model

    from qexport.spec import reference as R

    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    cases = [  # (channels, multiplier, h, w, k, stride, pad, dilation, fmt, bits)
        (32, 1, 16, 16, 3, 1, 1, 1, "post", 4), (24, 1, 15, 15, 3, 2, 1, 1, "post", 3),
        (40, 1, 4, 4, 3, 1, 1, 1, "uniform", 4), (9, 1, 7, 7, 3, 2, 1, 1, "post", 4),
        (8, 2, 7, 9, 5, 2, 2, 2, "uniform", 8),
        # edges: a stride phase with no input row, a 1x1 plane, odd rows at stride 2 read up to the tensor's end
        (3, 2, 1, 5, 3, 3, 1, 1, "post", 4), (4, 1, 1, 1, 3, 1, 1, 1, "uniform", 4), (6, 1, 5, 17, 3, 2, 1, 1, "post", 4)]
    rng = np.random.default_rng(11)
    for i, (c, mult, h, w, k, s, p, d, fmt, bits) in enumerate(cases):
        o = c * mult
        values, valid = R.weight_lut(fmt, bits)
        levels = values[valid]
        w_int = levels[rng.integers(0, len(levels), size=(o, k * k))]
        inputs = {"X": rng.integers(0, 16, size=(2, c, h, w), dtype=np.uint8),
                  "X_scale": np.array([0.05, 0.07], np.float32),
                  "W": R.pack_weights(w_int, fmt, bits),
                  "W_scale": rng.uniform(0.01, 0.1, size=o).astype(np.float32),
                  "B": rng.normal(size=o).astype(np.float32)}
        attrs = dict(bits=bits, act_bits=4, act_zero_point=0 if i % 2 else 8, weight_shape=[o, 1, k, k],
                     strides=[s, s], pads=[p] * 4, dilations=[d, d], group=c, relu=i % 2)
        constant = ("W", "W_scale", "B")
        path = tmp_path / f"dw{i}.onnx"
        onnx.save(weighted_model("conv", fmt, inputs, attrs, constant), str(path))
        feed = {"X": inputs["X"], "X_scale": inputs["X_scale"]}
        with RunnerSession(path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu, cpu=cpu,
                           threads=1 + i % 2) as sess:
            (got,) = sess.run(None, feed)
            (line,) = parse_kernel_trace(sess.last_stderr)
        want = R.qconv(inputs["X"], inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"], fmt=fmt,
                       bits=bits, act_bits=4, act_zero_point=attrs["act_zero_point"], weight_shape=attrs["weight_shape"],
                       strides=attrs["strides"], pads=attrs["pads"], dilations=attrs["dilations"], group=c,
                       relu=bool(attrs["relu"]))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"case {cases[i]} on {cpu}"
        assert (line.path, line.reason) == (isa, "depthwise"), line


def _dense_conv_case(case, i, rng, *, cpu, isa, qemu, a64_dist, tmp_path, x=None, w_int=None):
    """Runs one conv (in channels, out channels, h, w, k, stride, pad, dilation, group, fmt, bits,
    act_bits, residual) under qemu on `cpu` and checks the reference's bits and that `isa` ran it.
    x, w_int: the codes and integer weights (default random)."""
    from kernel_graphs import weighted_model

    from qexport.spec import reference as R

    c, o, h, w, k, s, p, d, grp, fmt, bits, act_bits, residual = case
    if w_int is None:
        values, valid = R.weight_lut(fmt, bits)
        levels = values[valid]
        w_int = levels[rng.integers(0, len(levels), size=(o, c // grp * k * k))]
    if x is None:
        x = rng.integers(0, 1 << act_bits, size=(2, c, h, w), dtype=np.uint8)
    oh, ow = R.conv_output_size(h, k, s, p, p, d), R.conv_output_size(w, k, s, p, p, d)
    zp = 0 if i % 2 else 1 << (act_bits - 1)
    inputs = {"X": x, "X_scale": np.array([0.05, 0.07], np.float32),
              "W": R.pack_weights(w_int, fmt, bits),
              "W_scale": rng.uniform(0.01, 0.1, size=o).astype(np.float32),
              "B": rng.normal(size=o).astype(np.float32)}
    if residual:
        inputs["R"] = rng.normal(size=(2, o, oh, ow)).astype(np.float32)
    attrs = dict(bits=bits, act_bits=act_bits, act_zero_point=zp, weight_shape=[o, c // grp, k, k],
                 strides=[s, s], pads=[p] * 4, dilations=[d, d], group=grp, relu=1 - i % 2)
    path = tmp_path / f"conv{i}.onnx"
    onnx.save(weighted_model("conv_fused" if residual else "conv", fmt, inputs, attrs), str(path))
    feed = {name: inputs[name] for name in ("X", "X_scale", "R") if name in inputs}
    with RunnerSession(path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu, cpu=cpu,
                       threads=1 + i % 2) as sess:
        (got,) = sess.run(None, feed)
        (line,) = parse_kernel_trace(sess.last_stderr)
    conv = dict(fmt=fmt, bits=bits, act_bits=act_bits, act_zero_point=zp, weight_shape=attrs["weight_shape"],
                strides=attrs["strides"], pads=attrs["pads"], dilations=attrs["dilations"], group=grp,
                relu=bool(attrs["relu"]))
    args = (inputs["X"], inputs["X_scale"], inputs["W"], inputs["W_scale"], inputs["B"])
    want = R.qconv_fused(*args, inputs["R"], **conv)[0] if residual else R.qconv(*args, **conv)
    assert got.shape == (2, o, oh, ow), f"case {case} on {cpu}"
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"case {case} on {cpu}"
    assert (line.path, line.reason) == (isa, None), line


@needs_qemu
@pytest.mark.parametrize("cpu,isa", [("cortex-a53", "neon"), ("cortex-a76", "dotprod")])
def test_dense_convs_under_qemu_equal_the_reference(cpu, isa, qemu, a64_dist, tmp_path, monkeypatch):
    """The dense conv kernels on aarch64: the NEON re-layout (rows at stride 1 and 2 long enough
    for its vector loop and its tail, stride 3 left to the portable loop), the epilogue of whole
    vectors and of segments, with and without a residual and ReLU, 8-bit codes (stored as
    c - 128 for sdot), channel counts that are not a multiple of 4, a stem-like 7x7 conv, 1x1,
    dilation and groups, one-channel stems (the folded layout), rows of 8-15 cells: the
    reference's bits on both ARM paths, which say they ran them."""
    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    cases = [  # (in channels, out channels, h, w, k, stride, pad, dilation, group, fmt, bits, act_bits, residual)
        (16, 16, 12, 37, 3, 1, 1, 1, 1, "post", 3, 3, True), (8, 24, 11, 41, 3, 2, 1, 1, 1, "post", 4, 4, False),
        (7, 16, 9, 40, 3, 2, 0, 1, 1, "uniform", 4, 8, True), (3, 8, 20, 35, 7, 2, 3, 1, 1, "uniform", 8, 8, False),
        (12, 12, 10, 34, 1, 1, 0, 1, 1, "post", 3, 4, True), (8, 8, 9, 33, 3, 1, 2, 2, 2, "post", 4, 4, False),
        (4, 8, 6, 50, 3, 3, 1, 1, 1, "post", 2, 4, True),
        # one-channel stems in the folded layout; 1x1 and 3x3 on rows of 8-15 cells (the 8-cell tail)
        (1, 16, 28, 28, 3, 1, 1, 1, 1, "post", 4, 4, False), (1, 8, 15, 29, 3, 2, 1, 1, 1, "uniform", 8, 8, True),
        (16, 16, 8, 8, 1, 1, 0, 1, 1, "post", 4, 4, False), (8, 16, 8, 12, 3, 1, 1, 1, 1, "post", 4, 4, False)]
    rng = np.random.default_rng(12)
    for i, case in enumerate(cases):
        _dense_conv_case(case, i, rng, cpu=cpu, isa=isa, qemu=qemu, a64_dist=a64_dist, tmp_path=tmp_path)


@needs_qemu
def test_neon_int16_runs_under_qemu_equal_the_reference(qemu, a64_dist, tmp_path, monkeypatch):
    """The neon path's 8-bit dot product (codes of at most 7 bits: int16 sums over runs of
    32767 // (4 * max code * max |w|) steps, then int32): at its bound, with every code at its
    maximum and every weight at +-max |w| (a run one step longer overflows int16), runs that do
    and do not divide the steps, 7-bit codes (one step per run; code 127 as int8), formats with
    small weights (long runs), and random codes and weights with stride 2, groups and a residual."""
    from qexport.spec import reference as R

    monkeypatch.setenv(KERNEL_TRACE_ENV, "1")
    cases = [  # as _dense_conv_case; worst: None (random), +1 or -1 (max codes, weights +-max |w|)
        ((16, 8, 6, 9, 3, 1, 1, 1, 1, "post", 3, 3, False), +1),  # 36 steps, runs of 18
        ((20, 16, 5, 11, 3, 1, 1, 1, 1, "post", 3, 3, True), -1),  # 45 steps: 18 + 18 + 9
        ((24, 8, 7, 8, 3, 1, 1, 1, 1, "post", 4, 4, False), -1),  # 54 steps, runs of 8
        ((16, 8, 4, 12, 3, 1, 1, 1, 1, "post", 4, 4, True), +1),
        ((8, 8, 5, 10, 3, 1, 1, 1, 1, "post", 4, 7, False), +1),  # runs of 1
        ((12, 16, 6, 7, 3, 1, 1, 1, 1, "uniform", 4, 6, False), -1),  # |w| 8: runs of 16
        ((32, 8, 4, 9, 3, 1, 1, 1, 1, "pot", 3, 4, True), +1),  # runs of 136 > 72 steps
        ((24, 32, 13, 15, 3, 2, 1, 1, 2, "post", 4, 4, True), None), ((40, 8, 9, 9, 1, 1, 0, 1, 1, "post", 3, 3, False), None),
        ((16, 16, 8, 20, 3, 1, 1, 1, 1, "pot", 4, 5, False), None)]
    rng = np.random.default_rng(13)
    for i, (case, worst) in enumerate(cases):
        c, o, h, w, k, _, _, _, grp, fmt, bits, act_bits, _ = case
        x = w_int = None
        if worst is not None:
            values, valid = R.weight_lut(fmt, bits)
            wmax = int(np.abs(values[valid]).max())
            w_int = np.full((o, c // grp * k * k), worst * wmax, dtype=np.int64)
            x = np.full((2, c, h, w), (1 << act_bits) - 1, dtype=np.uint8)
        _dense_conv_case(case, i, rng, cpu="cortex-a53", isa="neon", qemu=qemu, a64_dist=a64_dist, tmp_path=tmp_path,
                         x=x, w_int=w_int)


@needs_qemu
@pytest.mark.parametrize("cpu", ["cortex-a53", "cortex-a76"])
def test_quantizers_under_qemu_equal_the_reference(cpu, qemu, a64_dist, tmp_path):
    """The ARM quantizer (fdiv, fcvtns, integer clamp) and means: LsqQuantize over a dense grid of
    quarter steps with ties, signed zeros, NaN, +-inf and extremes, at 2, 4 and 8 bits, signed and
    unsigned, and AsqQuantize on random activations: the reference's codes and scales."""
    from kernel_graphs import quantize_model

    from qexport.spec import reference as R

    step = 0.0625
    grid = np.arange(-4200, 4200, dtype=np.float32) * np.float32(step / 4)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(np.float32).max,
                         -np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -1e-45], dtype=np.float32)
    x = np.concatenate([grid, specials]).reshape(1, -1)
    for bits in (2, 4, 8):
        for signed in (0, 1):
            path = tmp_path / f"lsq{bits}{signed}.onnx"
            onnx.save(quantize_model("LsqQuantize", {"X": x}, dict(bits=bits, signed=signed, step=step)), str(path))
            with RunnerSession(path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu, cpu=cpu,
                               threads=1) as sess:
                codes, _ = sess.run(None, {"X": x})
            ref, _ = R.lsq_quantize(x, step, bits, bool(signed))
            assert np.array_equal(codes, ref), f"LsqQuantize {bits}-bit signed={signed} on {cpu}"
    rng = np.random.default_rng(5)
    a = (rng.normal(size=(3, 8, 13, 11)) * 2).astype(np.float32)
    inputs = {"X": a, "W1": rng.normal(size=(2, 8)).astype(np.float32), "B1": rng.normal(size=2).astype(np.float32),
              "W2": rng.normal(size=(1, 2)).astype(np.float32), "B2": np.array([1.5], np.float32)}
    attrs = dict(bits=4, signed=1, step=0.125, beta_map="relu")
    path = tmp_path / "asq.onnx"
    onnx.save(quantize_model("AsqQuantize", inputs, attrs, ("W1", "B1", "W2", "B2")), str(path))
    with RunnerSession(path, runner=a64_dist.runner, ops=a64_dist.ops, ort=a64_dist.ort, qemu=qemu, cpu=cpu,
                       threads=1) as sess:
        codes, scale = sess.run(None, {"X": a})
    ref_codes, ref_scale = R.asq_quantize(a, inputs["W1"], inputs["B1"], inputs["W2"], inputs["B2"], 0.125, 4, True,
                                          "relu")
    assert np.array_equal(codes, ref_codes) and np.array_equal(scale.view(np.uint32), ref_scale.view(np.uint32))
