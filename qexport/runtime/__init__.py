"""Run exported qexport models in the stock onnxruntime wheel.

The ``ai.qexport`` ops live in a compiled custom-op library, ``libqexport_ops.so``, built from
custom_ops/ by ``pip install .`` and installed inside the ``qexport`` package. This module finds
it, registers it with ONNX Runtime and creates sessions. It never imports torch.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import sys
from functools import lru_cache
from typing import NamedTuple
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

__all__ = ["LIBRARY_ENV", "KERNEL_ISA_ENV", "KERNEL_TRACE_ENV", "KernelPath", "library_name", "library_path",
           "op_names", "kernel_isas", "parse_kernel_trace", "session_options", "make_session"]

#: Environment variable that, when set, names the custom-op library to use.
LIBRARY_ENV = "QEXPORT_OPS_LIBRARY"

#: Environment variable that forces the kernels' instruction-set path (read when a session
#: creates its kernels): one of kernel_isas(), or "auto" / unset for the fastest.
KERNEL_ISA_ENV = "QEXPORT_KERNEL_ISA"

#: Environment variable: "1" when a session creates its kernels makes each kernel write the path it
#: ran to stderr, once per path (parse_kernel_trace reads those lines; docs/ops.md, "Kernel paths").
KERNEL_TRACE_ENV = "QEXPORT_KERNEL_TRACE"

_TRACE_LINE = re.compile(r"^qexport: (\S+) (\S+) path=(\S+) selected=(\S+)(?: reason=(\S+))?$")


class KernelPath(NamedTuple):
    """One line of the kernel-path trace: the node (None if unnamed), its op, the path whose code
    it ran, the path selected for it, and why those differ (None when they do not)."""

    node: str | None
    op: str
    path: str
    selected: str
    reason: str | None


def parse_kernel_trace(text: str) -> list[KernelPath]:
    """The kernel-path lines (``qexport: <node> <op> path=... selected=...[ reason=...]``) in a
    process's stderr, in order; other lines are ignored."""
    out = []
    for line in text.splitlines():
        m = _TRACE_LINE.match(line.strip())
        if m:
            node, op, path, selected, reason = m.groups()
            out.append(KernelPath(None if node == "-" else node, op, path, selected, reason))
    return out


def library_name() -> str:
    """File name of the custom-op library on this platform."""
    if sys.platform == "win32":
        return "qexport_ops.dll"
    if sys.platform == "darwin":
        return "libqexport_ops.dylib"
    return "libqexport_ops.so"


def _from_distribution(name: str) -> Path | None:
    """The library as recorded in the installed distribution's file list (RECORD).

    This also covers editable installs by scikit-build-core, where the compiled library lands in
    site-packages while the Python sources stay in the source tree.
    """
    try:
        files = importlib.metadata.files("qexport")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files or ():
        if entry.name == name and entry.parent.name == "qexport":
            path = Path(entry.locate()).resolve()
            if path.is_file():
                return path
    return None


def library_path() -> Path:
    """Path of ``libqexport_ops``.

    Looked up in order: the environment variable ``QEXPORT_OPS_LIBRARY``; the files of the
    installed ``qexport`` distribution; the folder of the ``qexport`` package.

    Raises:
        FileNotFoundError: no library was found (or the environment variable names a missing file).
    """
    name = library_name()
    env = os.environ.get(LIBRARY_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{LIBRARY_ENV}={env!r} does not name a file")
        return path.resolve()
    found = _from_distribution(name)
    if found is not None:
        return found
    beside = Path(__file__).resolve().parent.parent / name
    if beside.is_file():
        return beside
    raise FileNotFoundError(
        f"the qexport custom-op library {name} was not found (looked in the installed qexport "
        f"distribution and in {beside.parent}). Build and install it from the repository root with "
        f"`pip install .` (or `pip install -e . --no-build-isolation` for development), "
        f"or set {LIBRARY_ENV} to its path."
    )


@lru_cache(maxsize=None)
def _load(path: str) -> ctypes.CDLL:
    return ctypes.CDLL(path)


def op_names() -> list[str]:
    """Names of the ops the library registers in the ``ai.qexport`` domain (``qexport_op_names``)."""
    lib = _load(str(library_path()))
    fn = lib.qexport_op_names
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn()
    return raw.decode("ascii").split(",") if raw else []


def kernel_isas() -> list[str]:
    """The kernel paths the library and this CPU support, slowest first ("scalar" always; e.g.
    ["scalar", "avx2", "avx512vnni", "amx"]); the last one is what sessions use by default.
    ``QEXPORT_KERNEL_ISA=<name>`` set before a session is created forces one (docs/ops.md)."""
    lib = _load(str(library_path()))
    fn = lib.qexport_kernel_isas
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn()
    return raw.decode("ascii").split(",") if raw else ["scalar"]


def session_options(threads: int | None = None) -> "onnxruntime.SessionOptions":
    """``onnxruntime.SessionOptions`` with the qexport custom-op library registered.

    Args:
        threads: intra-op thread count (the kernels split their work over these threads);
            None keeps ONNX Runtime's default.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = int(threads)
    opts.register_custom_ops_library(str(library_path()))
    return opts


def make_session(model: str | os.PathLike | bytes, threads: int | None = None) -> "onnxruntime.InferenceSession":
    """An ``onnxruntime.InferenceSession`` (CPUExecutionProvider) for a model path or serialized model."""
    import onnxruntime as ort

    if not isinstance(model, (bytes, bytearray)):
        model = os.fspath(model)
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
