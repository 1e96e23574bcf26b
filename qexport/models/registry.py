"""The model registry: a decorator fills ``MODELS``; ``build_model`` looks names up there."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under ``name`` (its keyword arguments are the arch args)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = fn
        return fn

    return deco


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def default_arch_args(name: str) -> dict[str, Any]:
    """The keyword arguments of model ``name`` with their defaults (tuples become lists)."""
    sig = inspect.signature(_factory(name))
    out: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            continue
        out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def build_model(name: str, **arch_args: Any) -> nn.Module:
    """Build model ``name``; ``arch_args`` override the defaults of ``default_arch_args(name)``.

    Example:
        >>> model = build_model("small_cnn", width=16)
    """
    fn = _factory(name)
    known = default_arch_args(name)
    unknown = sorted(set(arch_args) - set(known))
    if unknown:
        raise TypeError(f"model {name!r} has no argument(s) {unknown}; it takes {sorted(known)}")
    return fn(**arch_args)
