"""A model's inputs for N samples: one array (the common case) or several (``Inputs``).

Every whole-model pass of the pipeline (calibration, the fit, fidelity, parity, export) takes
``x`` as either a single array/tensor with the samples on the first dimension, or an ``Inputs``:
one array per model input, in the order of the model's arguments, with their names (an .npz
holds them by name; the ONNX file's inputs get those names). ``Inputs`` indexes, splits and
concatenates like one array (every part with the same rows), so code that slices ``x[a:b]``
or counts ``len(x)`` works on both; the helpers here do what differs: calling the model
(``run``), feeding ONNX Runtime (``feeds``), describing the shapes (``sample_shapes``).
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn

__all__ = ["Inputs", "InputError", "bind_inputs", "cat", "feeds", "input_names", "model_input_names",
           "run", "sample_shapes", "split", "tensors", "to_device", "to_torch", "values_per_sample"]


class InputError(ValueError):
    """The data does not match the model's inputs; the message says what the model takes."""


class Inputs:
    """N samples of a model with several inputs: ``arrays`` (numpy or torch, one per input, all
    with N rows) and their ``names``, in the model's argument order."""

    __slots__ = ("arrays", "names")

    def __init__(self, arrays: Sequence[Any], names: Sequence[str]) -> None:
        arrays, names = tuple(arrays), tuple(str(n) for n in names)
        if not arrays or len(arrays) != len(names):
            raise InputError(f"Inputs needs one name per array, got {len(arrays)} arrays and {len(names)} names")
        if len(set(names)) != len(names):
            raise InputError(f"input names must differ, got {list(names)}")
        rows = {int(a.shape[0]) if a.ndim else -1 for a in arrays}
        if len(rows) != 1 or -1 in rows:
            raise InputError("every input needs the same number of samples on its first dimension, got "
                             + ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(names, arrays)))
        self.arrays, self.names = arrays, names

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def __getitem__(self, index) -> "Inputs":
        return Inputs([a[index] for a in self.arrays], self.names)

    def __repr__(self) -> str:
        return "Inputs(" + ", ".join(f"{n}={tuple(a.shape)}" for n, a in zip(self.names, self.arrays)) + ")"

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} holds several inputs: take one array by name (.select) instead of "
                        f"converting them to one array")

    def select(self, names: Sequence[str]) -> "Inputs":
        """The arrays named ``names``, in that order."""
        have = dict(zip(self.names, self.arrays))
        return Inputs([have[n] for n in names], names)


def _tensor(a: Any) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a if a.dtype == torch.float32 else a.float()
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def tensors(x: Any) -> tuple[torch.Tensor, ...]:
    """The model's positional arguments for the samples ``x``: float32 tensors."""
    return tuple(_tensor(a) for a in x.arrays) if isinstance(x, Inputs) else (_tensor(x),)


def to_torch(x: Any) -> Any:
    """``x`` with float32 torch tensors in place of its arrays (same structure)."""
    if isinstance(x, Inputs):
        return Inputs(tensors(x), x.names)
    return _tensor(x)


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Inputs):
        return Inputs([a.to(device) for a in x.arrays], x.names)
    return x.to(device)


def run(model: nn.Module, x: Any) -> torch.Tensor:
    """``model`` called on the samples ``x`` (several inputs: as positional arguments)."""
    return model(*tensors(x))


def split(x: Any, size: int) -> list[Any]:
    """``x`` in consecutive chunks of ``size`` samples (the last may be smaller)."""
    return [x[i:i + size] for i in range(0, len(x), size)]


def cat(parts: Sequence[Any]) -> Any:
    """Chunks (tensors, or ``Inputs`` of tensors) back into one."""
    if isinstance(parts[0], Inputs):
        return Inputs([torch.cat([p.arrays[k] for p in parts]) for k in range(len(parts[0].names))], parts[0].names)
    return torch.cat(list(parts))


def sample_shapes(x: Any) -> list[tuple[int, ...]]:
    """The shape of one sample of each input."""
    return [tuple(int(d) for d in a.shape[1:]) for a in (x.arrays if isinstance(x, Inputs) else (x,))]


def values_per_sample(x: Any) -> int:
    """Input values of one sample, over every input."""
    return sum(int(np.prod(s, dtype=np.int64)) for s in sample_shapes(x))


def input_names(x: Any, default: str = "input") -> list[str]:
    """The ONNX input names for ``x``: its names, or ``default`` for a single array."""
    return list(x.names) if isinstance(x, Inputs) else [default]


def feeds(names: Sequence[str], x: Any) -> dict[str, np.ndarray]:
    """An ONNX Runtime feed: the session's input ``names`` bound to the samples ``x`` (float32)."""
    arrays = x.arrays if isinstance(x, Inputs) else (x,)
    if len(arrays) != len(names):
        raise InputError(f"the ONNX model takes {len(names)} input(s) ({', '.join(names)}), the data has "
                         f"{len(arrays)}")
    out = {}
    for name, a in zip(names, arrays):
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        out[name] = np.ascontiguousarray(a, dtype=np.float32)
    return out


def model_input_names(model: nn.Module) -> list[str] | None:
    """The names of the inputs ``model`` requires, in order (a graph's placeholders, or
    ``forward``'s parameters without a default); None when its signature does not say
    (``*args``)."""
    if isinstance(model, torch.fx.GraphModule):
        return [n.target for n in model.graph.nodes if n.op == "placeholder"]
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names = []
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            names.append(p.name)
    return names


def bind_inputs(model: nn.Module, x: Any) -> Any:
    """``x`` arranged as ``model`` takes it: a single array for a one-input model, ``Inputs`` in
    the model's argument order (matched by name) for several; InputError saying which arrays
    the data needs when they do not match."""
    names = model_input_names(model)
    if names is None or (len(names) <= 1 and not isinstance(x, Inputs)):
        return x
    if not isinstance(x, Inputs):
        raise InputError(f"the model takes {len(names)} inputs ({', '.join(names)}); the data has one array. "
                         f"Pass --data an .npz with one array per input, named {', '.join(names)} (and y for "
                         f"labels, optional), each with the samples on its first dimension.")
    if len(names) == 1:
        if len(x.names) == 1:
            return x.arrays[0]
        if names[0] in x.names:
            return dict(zip(x.names, x.arrays))[names[0]]
        raise InputError(f"the model takes one input ({names[0]}); the data has {len(x.names)} arrays "
                         f"({', '.join(x.names)}): keep one, named x or {names[0]}")
    missing = [n for n in names if n not in x.names]
    if missing:
        if len(x.names) == len(names) and not set(x.names) & set(names):
            raise InputError(f"the model's inputs are named {', '.join(names)}; the data's arrays are "
                             f"{', '.join(x.names)}: rename them in the .npz to the model's input names")
        raise InputError(f"the model takes the inputs {', '.join(names)}; the data has no array "
                         f"{', '.join(missing)} (it has {', '.join(x.names)})")
    extra = [n for n in x.names if n not in names]
    if extra:
        raise InputError(f"the data's arrays {', '.join(extra)} are not inputs of the model "
                         f"(it takes {', '.join(names)})")
    return x.select(names)
