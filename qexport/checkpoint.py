"""Self-describing checkpoints, and safe loading of every model file ``qexport`` accepts.

A qexport checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings, lists,
dicts only), so it loads with ``weights_only=True``: no code can run while reading it.
A pickled ``nn.Module`` is Python code; it is only loaded when the caller says it trusts the
file (``trust_pickle=True``, the CLI's ``--trust-pickle``). See docs/security.md.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .io import atomic_save

FORMAT = "qexport.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, arch: str, arch_args: dict | None = None,
                    quant: Any = None, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically. ``quant`` is a QuantConfig, its dict, or None (float)."""
    quant_dict = quant.to_dict() if hasattr(quant, "to_dict") else quant
    payload = {
        "format": FORMAT, "version": VERSION, "qexport_version": __version__,
        "arch": arch, "arch_args": dict(arch_args or {}), "quant": quant_dict,
        "state_dict": OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items()),
        "metrics": dict(metrics or {}), "extra": dict(extra or {}),
    }
    def write_and_verify(tmp: Path) -> None:
        torch.save(payload, tmp)
        try:  # a checkpoint must load safely; catch e.g. a non-str object in metrics before it lands
            validate_checkpoint(torch.load(tmp, map_location="cpu", weights_only=True), path)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"refusing to write {path}: it would hold Python objects that only unpickling "
                                  f"can read ({_unpickler_detail(exc)}); keep metrics/extra to numbers, strings, "
                                  f"lists and dicts") from exc

    atomic_save(path, write_and_verify)
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torch_load_safe(path: Path) -> Any:
    """torch.load with weights_only=True, turning every failure into a specific message."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a .pt file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "global" in detail.lower():  # a class or function reference: Python objects, maybe code
            raise _UnsafePickle(detail) from exc
        raise CheckpointError(f"{path}: not a PyTorch checkpoint: it cannot be read as a torch.save file (the safe "
                              f"loader stopped: {detail}). {_expected_pt(path, pickle_note=True)}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        text = str(exc)
        if "failed finding central directory" in text or "zip archive" in text or isinstance(exc, (EOFError, zipfile.BadZipFile)):
            raise CheckpointError(f"{path}: truncated or corrupt (not a complete torch.save archive): {_first_line(exc)}") from exc
        if isinstance(exc, (KeyError, IndexError)):  # bytes that are no pickle at all (e.g. text): the detail is a bare number
            raise CheckpointError(f"{path}: not a PyTorch checkpoint: it cannot be read as a torch.save file. "
                                  f"{_expected_pt(path)}") from exc
        raise CheckpointError(f"{path}: cannot be read as a PyTorch file: {_first_line(exc)}") from exc


def _expected_pt(path: Path, pickle_note: bool = False) -> str:
    """What to pass instead of a file that is not a PyTorch checkpoint."""
    if path.suffix.lower() == ".onnx":
        return ("It looks like an ONNX model; this argument takes the .pt checkpoint (`qexport convert` writes "
                "one beside the .onnx).")
    return ("Pass a .pt file written by torch.save, `qexport train` or `qexport convert`."
            + (" A pickle not written by torch.save cannot be loaded, not even with `qexport convert --trust-pickle`."
               if pickle_note else ""))


class _UnsafePickle(Exception):
    pass


def _unpickler_detail(exc: BaseException) -> str:
    """The informative part of torch's weights_only error (it opens with a long preamble)."""
    text = " ".join(str(exc).split())
    for marker in ("Unsupported global:", "unsupported GLOBAL", "Unsupported operand", "WeightsUnpickler error:"):
        i = text.find(marker)
        if i >= 0:
            return text[i : i + 200].split(" Check the documentation")[0].split(" was not an allowed")[0].strip()
    return text[:200]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a qexport checkpoint (weights_only); raise CheckpointError otherwise."""
    path = Path(path)
    try:
        obj = _torch_load_safe(path)
    except _UnsafePickle as exc:
        raise CheckpointError(
            f"{path}: contains pickled Python objects (a whole nn.Module or arbitrary code), not a qexport checkpoint. "
            f"Refusing to unpickle it: loading it could run code from the file. Pass a qexport checkpoint (written by "
            f"`qexport train` or `qexport convert`). Detail: {exc}") from None
    return validate_checkpoint(obj, path)


def validate_checkpoint(obj: Any, path: Path | str = "<checkpoint>") -> dict:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: a plain state dict, not a qexport checkpoint; say which architecture it "
                                  f"belongs to with --arch NAME")
        raise CheckpointError(f"{path}: not a qexport checkpoint (no format tag {FORMAT!r})")
    version = obj.get("version")
    if version != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}; this qexport {__version__} reads version {VERSION}")
    for key, kind in (("arch", str), ("arch_args", dict), ("state_dict", dict), ("metrics", dict)):
        if not isinstance(obj.get(key), kind):
            raise CheckpointError(f"{path}: checkpoint field {key!r} is missing or not a {kind.__name__}")
    if obj.get("quant") is not None and not isinstance(obj["quant"], dict):
        raise CheckpointError(f"{path}: checkpoint field 'quant' must be a dict or None")
    bad = [k for k, v in obj["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries {bad[:3]} are not tensors")
    return obj


# The "architecture" of a checkpoint whose model came from a torch.export program (.pt2): its
# arch_args name the program file (absolute path, and the path relative to the checkpoint's folder)
# and its SHA-256; the model is rebuilt by lowering that file again, which needs no model code.
PROGRAM_ARCH = "torch.export"


def program_arch_args(program: str | os.PathLike, checkpoint: str | os.PathLike, sha256: str) -> dict:
    program, folder = Path(program).resolve(), Path(checkpoint).resolve().parent
    return {"program": str(program), "program_relative": os.path.relpath(program, folder), "sha256": sha256}


def _program_model(ckpt: dict, where: Path | None) -> nn.Module:
    from .lower.program import ProgramError, load_program

    args = ckpt["arch_args"]
    candidates = [Path(args.get("program", ""))]
    if where is not None and args.get("program_relative"):
        candidates.append(where.parent / args["program_relative"])
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CheckpointError(f"this checkpoint was made from the torch.export program {args.get('program')!r}, which "
                              f"is no longer there: put the .pt2 back (or beside the checkpoint, as "
                              f"{args.get('program_relative')!r}) to rebuild the model")
    if args.get("sha256") and file_sha256(found) != args["sha256"]:
        raise CheckpointError(f"{found} changed since this checkpoint was made from it (SHA-256 differs): convert the "
                              f"new program instead")
    try:
        return load_program(found)
    except ProgramError as exc:
        raise CheckpointError(str(exc)) from None


def build_model_from_checkpoint(ckpt: dict, path: str | os.PathLike | None = None) -> nn.Module:
    """The architecture with its arguments, quantized as the checkpoint says, weights loaded
    (``path``: where the checkpoint is, to find a torch.export source given relative to it)."""
    from .models import build_model
    from .nn import quantize_
    from .quant.config import QuantConfig

    if ckpt["arch"] == PROGRAM_ARCH:
        model = _program_model(ckpt, Path(path) if path is not None else None)
    else:
        try:
            model = build_model(ckpt["arch"], **ckpt["arch_args"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint architecture {ckpt['arch']!r} with {ckpt['arch_args']} cannot be built: {exc}") from exc
    if ckpt.get("quant"):
        try:
            quantize_(model, QuantConfig.from_dict(ckpt["quant"]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint quantization config {ckpt['quant']} is invalid: {exc}") from exc
    _load_state(model, ckpt["state_dict"], f"architecture {ckpt['arch']!r}")
    return model.eval()


def _load_state(model: nn.Module, state: dict, what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not fit {what}: {_first_line(exc)}") from exc


@dataclass
class LoadedModel:
    """A model ready to quantize or export, and what is known about where it came from."""

    model: nn.Module
    kind: str  # "checkpoint" | "state_dict" | "pickle"
    arch: str | None = None
    arch_args: dict = field(default_factory=dict)
    quant: dict | None = None
    metrics: dict = field(default_factory=dict)
    sha256: str = ""

    @property
    def is_quantized(self) -> bool:
        return bool(self.quant)


def _unpickle_module(path: Path, module_path: tuple[str, ...]):
    """torch.load of a trusted pickle with the current folder, the file's folder and
    ``module_path`` importable, and a hint when the model's class cannot be found."""
    import sys

    extra = [str(Path(p).resolve()) for p in (*module_path, path.parent, os.getcwd())]
    saved = list(sys.path)
    sys.path[:0] = [p for p in extra if p not in sys.path]
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        where = ", ".join(dict.fromkeys(extra))
        main = "'__main__'" in str(exc) or "__main__" in str(exc)
        hint = (" The class was defined in the script that saved the model (its __main__), which no other program "
                "can import: move the class into a module file (e.g. mynet.py), save again, and pass that file's "
                "folder with --module-path; or save model.state_dict() instead." if main else
                " Pass the folder that holds the model's Python module with --module-path DIR.")
        raise CheckpointError(f"{path}: could not unpickle: the model's class is not importable ({_first_line(exc)}; "
                              f"searched the installed packages and {where}).{hint}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported as such
        raise CheckpointError(f"{path}: could not unpickle ({_first_line(exc)})") from exc
    finally:
        sys.path[:] = saved


def load_model(path: str | os.PathLike, *, arch: str | None = None, arch_args: dict | None = None,
               trust_pickle: bool = False, module_path: tuple[str, ...] = ()) -> LoadedModel:
    """Load a qexport checkpoint, a state dict of a zoo architecture (``arch``), or — only with
    ``trust_pickle`` — a pickled nn.Module, whose classes are looked up in the importable
    modules plus the current folder, the model file's folder and ``module_path``."""
    path = Path(path)
    sha = file_sha256(path) if path.is_file() else ""
    from .lower.program import ProgramError, is_program, load_program

    if path.is_file() and (path.suffix == ".pt2" or is_program(path)):
        try:
            return LoadedModel(load_program(path), "program", sha256=sha)
        except ProgramError as exc:
            raise CheckpointError(str(exc)) from None
    try:
        obj = _torch_load_safe(path)
    except _UnsafePickle as exc:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: holds a pickled Python object (e.g. a whole nn.Module saved with torch.save(model)). "
                f"Unpickling can run arbitrary code, so qexport refuses by default. If you trust this file, pass "
                f"--trust-pickle; better, save model.state_dict() and pass --arch. Detail: {exc}") from None
        obj = _unpickle_module(path, module_path)
        if not isinstance(obj, nn.Module):
            raise CheckpointError(f"{path}: the pickle holds a {type(obj).__name__}, not an nn.Module")
        return LoadedModel(obj.eval(), "pickle", sha256=sha)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = validate_checkpoint(obj, path)
        if arch and arch != ckpt["arch"]:
            raise CheckpointError(f"{path}: is a {ckpt['arch']} checkpoint, but --arch {arch} was given")
        return LoadedModel(build_model_from_checkpoint(ckpt, path), "checkpoint", ckpt["arch"], ckpt["arch_args"],
                           ckpt.get("quant"), ckpt["metrics"], sha)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: neither a qexport checkpoint nor a state dict (found {type(obj).__name__})")
    if arch is None:
        raise CheckpointError(f"{path}: a plain state dict; say which architecture it belongs to with --arch NAME")
    from .models import build_model, default_arch_args
    args = {**default_arch_args(arch), **(arch_args or {})}
    model = build_model(arch, **args)
    _load_state(model, state, f"architecture {arch!r} with {args}")
    return LoadedModel(model.eval(), "state_dict", arch, args, None, {}, sha)
