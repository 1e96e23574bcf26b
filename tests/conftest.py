"""Shared test configuration.

The test folders mirror the package (tests/spec, tests/quant, ..., tests/deploy) and have no
__init__.py: pytest imports each test module by its basename (so basenames must be unique), and
the helper modules in this folder (shared.py: paths, data choices, helpers; kernel_graphs.py:
single-node models of the ops) are importable because this folder is on sys.path. The fixtures
below are shared by several folders. Keep the top-level imports here torch-free: the kernel tests
also run under AddressSanitizer (.ci/sanitize.sh); fixtures import torch when they need it.

Markers (registered in pyproject.toml): slow (over ~20 s), arm (aarch64 cross-build and qemu),
ddp (torchrun). A test that uses a fixture in SLOW_FIXTURES (a full conversion of the shipped
model: a minute or more when the cores are shared) is marked slow here. `python -m pytest -q` (the
README's command: no test paths, no -m) runs the default suite, which leaves the marked tests out
(the summary says how many); `--all` adds them, `-m "slow or arm or ddp"` runs only them (CI runs
both commands: .ci/run), and naming test files or node IDs runs every test they hold.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# convert's post-training fit (200 steps by default) is the subject of tests/nn/test_fit.py; every
# other conversion in the suite fits briefly, or a CLI test would cost a minute on shared cores.
os.environ.setdefault("QEXPORT_FIT_STEPS", "10")
# One intra-op thread (torch's OpenMP pool; inherited by the CLI and torchrun subprocesses): the
# tests' tensors are small, and two threads spin-wait for each other when the machine's other
# core is busy. Measured on 2 cores with another CPU-bound job running: the quick suite took 11:12
# with the default threads, 4:21 with one (about the same as the default on an idle machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # pytest's default import mode adds it too; --import-mode=importlib does not
    sys.path.insert(0, str(TESTS))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shared import SAMPLE_MODEL, SAMPLES_NPZ, run_cli  # noqa: E402

SLOW_FIXTURES = {"converted_sample", "readme_converted"}


MARKED = ("slow", "arm", "ddp")  # left out of the default suite


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", default=False,
                     help="also run the tests marked slow, arm or ddp (left out when no test path and no -m is given)")


def default_suite(config: pytest.Config) -> bool:
    """True for the default suite: no --all, no -m, no test paths on the command line."""
    return not (config.getoption("all") or config.option.markexpr
                or config.args_source != pytest.Config.ArgsSource.TESTPATHS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if not default_suite(config):
        return
    kept, left = [], []
    for item in items:
        (left if any(item.get_closest_marker(m) for m in MARKED) else kept).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept
        config.stash[LEFT_OUT] = len(left)


LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    left = config.stash.get(LEFT_OUT, 0)
    if left:
        terminalreporter.write_line(
            f"default suite: {left} tests marked slow, arm or ddp were left out; "
            '`python -m pytest -q -m "slow or arm or ddp"` runs them (CI does), `--all` runs everything')


@pytest.fixture(scope="session")
def samples() -> tuple[np.ndarray, np.ndarray]:
    """The 512 shipped Fashion-MNIST test images (float32 (N, 1, 28, 28) in [0, 1]) and labels."""
    d = np.load(SAMPLES_NPZ)
    return d["x"], d["y"]


@pytest.fixture(scope="session")
def calib() -> np.ndarray:
    """64 random 28x28 images (seed 0), float32: calibration data for small exports."""
    import torch

    torch.manual_seed(0)
    return torch.rand(64, 1, 28, 28).numpy()


@pytest.fixture(scope="session")
def converted_sample(tmp_path_factory):
    """``converted_sample(bits)``: the shipped float model converted by the README's command
    (``qexport convert samples/small_cnn_float.pt --bits <bits>``: ASQ+POST, calibrated and fitted
    on the shipped samples, parity checked on all 512), once per session: (the .onnx path, the
    command's output). The fitted checkpoint is beside it (``path.with_suffix(".pt")``), and the
    parity report (``.parity.json``)."""
    done: dict[int, tuple[Path, str]] = {}

    def get(bits: int) -> tuple[Path, str]:
        if bits not in done:
            path = tmp_path_factory.mktemp(f"sample_w{bits}") / f"w{bits}.onnx"
            code, text = run_cli("convert", SAMPLE_MODEL, "--bits", bits, "-o", path)
            assert code == 0, text
            done[bits] = path, text
        return done[bits]

    return get


@pytest.fixture(scope="session")
def tiny_resnet():
    """A small ResNet (BasicBlocks with an identity and a projection shortcut), 4-bit ASQ+POST,
    calibrated on 32 of its 40 random inputs: (model, inputs, fused export, unfused export)."""
    import torch

    from qexport.convert import quantize_model
    from qexport.export import export_onnx
    from qexport.models.common import ConvBNReLU
    from qexport.models.resnet import ResNet
    from qexport.quant import QuantConfig

    torch.manual_seed(0)
    model = ResNet(ConvBNReLU(3, 8, 3), (8, 16), (1, 1), 8, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(40, 3, 12, 12).numpy()
    q = quantize_model(model, QuantConfig("asq+post", 4), x, 32)
    example = torch.from_numpy(x[:2])
    return q, x, export_onnx(q, example), export_onnx(q, example, fuse=False)
