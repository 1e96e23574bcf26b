"""Edge deployment: cross-built op library + native runner, and parity under emulation.

* :func:`build_ops` builds ``libqexport_ops.so`` and the ``qexport-run`` runner for ``x86_64``
  or ``aarch64`` (Debian's g++-aarch64-linux-gnu) and collects the three files a device needs.
* :func:`fetch_ort_library` / :func:`fetch_qemu` bring ONNX Runtime's library for the target
  and a qemu-user that runs it, cached under ``${XDG_CACHE_HOME:-~/.cache}/qexport/``;
  :func:`fetch_qemu_plugins` a qemu-aarch64 that loads TCG plugins (instruction counts).
* :class:`RunnerSession` runs a model with qexport-run (natively or under qemu-aarch64) behind
  the InferenceSession surface that :func:`qexport.validate.check_parity` uses, and
  :func:`validate_on_runner` runs that parity check per emulated CPU.

See docs/deploy-arm.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from .build import TARGETS, BuildResult, build_ops, cross_compiler_hint, elf_machine, source_dir
from .fetch import (DeployError, QemuPlugins, cache_dir, fetch_ort_library, fetch_qemu, fetch_qemu_plugins, find_qemu,
                    find_qemu_plugins, ort_version, qemu_has_plugins)
from .session import AARCH64_SYSROOT, DEFAULT_CPUS, EmulatedRun, RunnerError, RunnerSession, validate_on_runner

__all__ = ["TARGETS", "BuildResult", "build_ops", "cross_compiler_hint", "elf_machine", "source_dir",
           "DeployError", "cache_dir", "fetch_ort_library", "fetch_qemu", "find_qemu", "ort_version",
           "QemuPlugins", "fetch_qemu_plugins", "find_qemu_plugins", "qemu_has_plugins",
           "AARCH64_SYSROOT", "DEFAULT_CPUS", "EmulatedRun", "RunnerError", "RunnerSession", "validate_on_runner",
           "dist_files"]


def dist_files(dist: str | os.PathLike, target: str) -> tuple[Path, Path, Path | None]:
    """(qexport-run, libqexport_ops.so, libonnxruntime.so.1 or None) of a ``build-ops`` output
    folder, checked to exist and to be built for ``target``."""
    d = Path(dist)
    runner, ops, ort = d / "qexport-run", d / "libqexport_ops.so", d / "libonnxruntime.so.1"
    for path in (runner, ops):
        if not path.is_file():
            raise DeployError(f"{path} not found: build it with `qexport build-ops --target {target} -o {d}`")
        arch = elf_machine(path)
        if arch != target:
            raise DeployError(f"{path} is built for {arch}, not {target}")
    if ort.is_file() and elf_machine(ort) != target:
        raise DeployError(f"{ort} is built for {elf_machine(ort)}, not {target}")
    return runner, ops, (ort if ort.is_file() else None)
