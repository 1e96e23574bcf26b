"""A torch.export program (``.pt2``) as a module tree the quantization pipeline can take.

``torch.export`` keeps no ``nn.Conv2d`` modules: its graph calls ``aten.conv2d`` with the weights
as attributes named by their original module paths (``features.0.0.weight``). ``from_program``
turns every such call whose weights are constant attributes back into a module at that path
(``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``, sharing
the same tensors), and a global average pooling (``adaptive_avg_pool2d(x, 1)`` or a mean over
all spatial dimensions) into ``nn.AdaptiveAvgPool2d(1)`` / ``GlobalMean``, which the lowering
replaces by the defined-order ``GlobalAvgPool``. The result is an ``fx.GraphModule`` that
``quantize_``, ``calibrate``, the fit and the exporter take like any model; the layers keep the
names of the model that was exported. What is not one of these calls stays as it was (float).
No Python code from the file runs: a .pt2 holds a graph and tensors, not pickled classes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.fx
from torch import nn

__all__ = ["GlobalMean", "ProgramError", "from_program", "load_program", "is_program"]

aten = torch.ops.aten


class ProgramError(ValueError):
    """The file is not a usable torch.export program."""


class GlobalMean(nn.Module):
    """x.mean over every dimension after (N, C) (keepdim or not): a global average pooling."""

    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=self.keepdim)


def is_program(path: str | Path) -> bool:
    """Whether ``path`` is a torch.export archive (a zip holding a serialized exported program)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(("serialized_exported_program.json", "models/model.json")) or "/models/" in n
                       for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_program(path: str | Path) -> nn.Module:
    """torch.export.load + ``from_program``; ProgramError with the reason when it cannot."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - deserialization errors have many types
        raise ProgramError(f"{path}: cannot be read as a torch.export program ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return from_program(program)


def _const(gm: torch.fx.GraphModule, node) -> torch.Tensor | None:
    if isinstance(node, torch.fx.Node) and node.op == "get_attr":
        return _get(gm, node.target)
    return None


def _get(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _install(gm: torch.fx.GraphModule, path: str, module: nn.Module, taken: set[str]) -> str:
    """Put ``module`` at ``path`` (replacing the plain container torch.export left there)."""
    name = path
    k = 1
    while name in taken:
        name, k = f"{path}_{k}", k + 1
    parent_path, _, leaf = name.rpartition(".")
    parent = gm.get_submodule(parent_path) if parent_path else gm
    setattr(parent, leaf, module)
    taken.add(name)
    return name


def _owner(weight_node) -> str:
    return weight_node.target.rpartition(".")[0] if isinstance(weight_node, torch.fx.Node) else ""


def _conv(args, w: torch.Tensor, b: torch.Tensor | None, dims: int) -> nn.Module:
    stride, padding, dilation, groups = (list(args[3:4] or [[1] * dims])[0], list(args[4:5] or [[0] * dims])[0],
                                         list(args[5:6] or [[1] * dims])[0], (args[6:7] or [1])[0])
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    conv = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride), padding=padding
               if isinstance(padding, str) else tuple(padding), dilation=tuple(dilation), groups=groups, bias=b is not None)
    conv.weight = w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)
    if b is not None:
        conv.bias = b if isinstance(b, nn.Parameter) else nn.Parameter(b, requires_grad=False)
    return conv


def _module_for(gm: torch.fx.GraphModule, node) -> tuple[str, nn.Module] | None:
    """(path, module) replacing one aten call, or None to leave it."""
    t, a = node.target, node.args
    if t in (aten.conv2d.default, aten.conv1d.default, aten.linear.default):
        w, b = _const(gm, a[1]), _const(gm, a[2]) if len(a) > 2 else None
        if w is None or (len(a) > 2 and a[2] is not None and b is None):
            return None  # weights computed at run time: not a layer qexport can quantize
        if t == aten.linear.default:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            lin.weight = w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)
            if b is not None:
                lin.bias = b if isinstance(b, nn.Parameter) else nn.Parameter(b, requires_grad=False)
            return _owner(a[1]), lin
        if any(isinstance(v, torch.fx.Node) for v in a[3:]):
            return None
        return _owner(a[1]), _conv(a, w, b, 2 if t == aten.conv2d.default else 1)
    if t == aten.batch_norm.default:
        w, b, mean, var = (_const(gm, v) for v in a[1:5])
        training, eps = a[5], a[7]
        rank = node.meta["val"].dim() if "val" in node.meta else 4
        if training or mean is None or var is None or rank not in (3, 4):
            return None
        bn = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(mean.shape[0], eps=eps, affine=w is not None)
        bn.running_mean, bn.running_var = mean, var
        if w is not None:
            bn.weight, bn.bias = nn.Parameter(w, requires_grad=False) if not isinstance(w, nn.Parameter) else w, \
                nn.Parameter(b, requires_grad=False) if not isinstance(b, nn.Parameter) else b
        return _owner(a[1]) or _owner(a[3]), bn.eval()
    if t in (aten.sigmoid.default, aten.silu.default, aten.silu_.default) and len(a) == 1:
        return "", nn.Sigmoid() if t == aten.sigmoid.default else nn.SiLU()
    if t == aten.adaptive_avg_pool2d.default and list(a[1]) == [1, 1]:
        return "", nn.AdaptiveAvgPool2d(1)
    if t == aten.mean.dim and "val" in a[0].meta:
        rank = a[0].meta["val"].dim()
        dims = sorted(d % rank for d in a[1])
        if rank >= 3 and dims == list(range(2, rank)) and len(a) < 4:
            return "", GlobalMean(bool(a[2]) if len(a) > 2 else False)
    return None


def from_program(program) -> torch.fx.GraphModule:
    """The program's graph with its layers as modules (see the module docstring)."""
    try:
        gm = program.module()
    except Exception as exc:  # noqa: BLE001 - torch's unlifting fails in many ways
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = ""
        clash = sorted({part for name, _ in program.named_parameters() for part in name.split(".")[:-1]}
                       & {"meta", "graph", "code", "training"})
        if clash:
            hint = (f" The model has a submodule named {clash[0]!r}, which torch.export's module() cannot rebuild "
                    f"(a torch.fx.GraphModule attribute has that name): rename it before exporting.")
        raise ProgramError(f"torch.export could not rebuild the program as a module ({first}).{hint}") from None
    graph = gm.graph
    taken = {name for name, _ in gm.named_modules()} - {""}
    # containers torch.export left at a layer's path (holding only its tensors) may be replaced
    replaceable = {name for name, m in gm.named_modules() if type(m) is nn.Module}
    converted, skipped = 0, []
    layer_ops = (aten.conv2d.default, aten.conv1d.default, aten.linear.default)
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)  # shape guards of the export: the batch size may differ
            continue
        if node.op != "call_function":
            continue
        found = _module_for(gm, node)
        if found is None:
            if node.target in layer_ops:
                skipped.append(f"{node.name} ({node.target.__name__}): its weights are not constant or its "
                               f"arguments are computed at run time; it stays float")
            continue
        path, module = found
        if not path:
            path = f"{'act' if isinstance(module, (nn.Sigmoid, nn.SiLU)) else 'pool'}_{converted}"
        if path in replaceable:  # the container torch.export left there: the module takes its place
            replaceable.discard(path)
            taken.discard(path)
        name = _install(gm, path, module, taken)
        with graph.inserting_before(node):
            new = graph.call_module(name, (node.args[0],))
        new.meta = {k: v for k, v in node.meta.items() if k in ("val", "tensor_meta")}
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        converted += 1
    # A plain GraphModule (the unflattened program refuses .eval()/.train()), called with the
    # program's inputs positionally and returning its single output as a tensor.
    graph._codegen = torch.fx.graph.CodeGen()
    out = next(n for n in graph.nodes if n.op == "output")
    results = out.args[0]
    if isinstance(results, (tuple, list)):
        if len(results) != 1:
            raise ProgramError(f"the program has {len(results)} outputs; qexport converts models with one output")
        out.args = (results[0],)
    graph.eliminate_dead_code()
    for node in graph.nodes:  # the program's module stacks would name its modules, not the lowered ones
        node.meta = {k: v for k, v in node.meta.items() if k in ("val", "tensor_meta")}
    plain = torch.fx.GraphModule(gm, graph)
    plain.recompile()
    plain.delete_all_unused_submodules()
    if not any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) for m in plain.modules()):
        raise ProgramError("the program has no conv or linear layer with constant weights to quantize")
    plain.qexport_skipped = skipped  # what stays float and why (convert reports it)
    return plain.eval()
