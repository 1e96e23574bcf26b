"""Mixed precision: how many weight bits each layer, or each output channel, of a model gets.

One budget for both ways (``parse_budget``): the bytes of the packed weight codes of all the
quantized layers (what bit-widths control; scales, biases and adapters come on top), or an
average number of bits per weight. Layers the config fixes (the first and last layer at
``first_last_bits``) keep their width and count against the budget.

* ``allocate`` (post-training, ``qexport convert --size-budget``): a sensitivity-based greedy
  allocation. The cost of quantizing weight w_k to q_k is estimated by the diagonal Fisher
  information of the model's own predictions, sum_k F_k (q_k - w_k)^2 (the second-order term of
  the loss change, which the calibration data give without labels); each group (a channel or a
  layer) starts at the smallest candidate and the upgrade with the best cost saving per bit is
  taken while the budget allows.
* ``search`` (training, ``qexport train --size-budget``): Cheng et al.'s differentiable search. Each
  group keeps logits over the candidate bit-widths; the layer's weights are the softmax-weighted
  mixture of the candidates' quantizations (each candidate with its own learned per-channel
  scale); the loss adds ``penalty * relu(expected code bits / budget - 1)``; after the search
  each group takes its most probable width, repaired greedily to fit the budget.

Both return QuantConfig overrides (``bits``: an int per layer, or a list per output channel).
"""
from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quant.base import WEIGHT_QUANTIZERS, WeightQuantizer
from ..quant.config import QuantConfig
from ..spec import reference as R
from .swap import layer_plan

DEFAULT_CHOICES = (2, 3, 4, 8)
GRANULARITIES = ("channel", "layer")


@dataclass(frozen=True)
class Budget:
    """A size budget: ``code_bytes`` of packed weight codes, or ``bits_per_weight`` on average."""

    code_bytes: float | None = None
    bits_per_weight: float | None = None

    def limit_bits(self, weights: int) -> float:
        return self.code_bytes * 8 if self.code_bytes is not None else self.bits_per_weight * weights

    def __str__(self) -> str:
        if self.code_bytes is not None:
            return f"{self.code_bytes / 1000:g} kB of weight codes"
        return f"{self.bits_per_weight:g} bits per weight"


_UNITS = {"": 1, "b": 1, "kb": 1000, "k": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_budget(text: str) -> Budget:
    """``"40KB"``, ``"40kB"``, ``"0.5MB"``, ``"40960"`` (bytes; KiB/MiB binary) or ``"2.5bits"`` /
    ``"2.5bpw"`` (average bits per weight)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if m:
        value, unit = float(m.group(1)), m.group(2).lower()
        if unit in ("bits", "bit", "bpw") and value > 0:
            return Budget(bits_per_weight=value)
        if unit in _UNITS and value > 0:
            return Budget(code_bytes=value * _UNITS[unit])
    raise ValueError(f"size budget {text!r}: expected bytes such as 40KB, 0.5MB, 40960, or bits per weight such "
                     f"as 2.5bits")


def candidates(fmt: str, choices: Iterable[int] | None = None) -> list[int]:
    """The candidate bit-widths of a weight format: ``choices`` (default 2, 3, 4, 8) it supports."""
    allowed = R.WEIGHT_BITS[fmt]
    out = sorted({int(b) for b in (choices or DEFAULT_CHOICES) if int(b) in allowed})
    if not out:
        raise ValueError(f"none of the bit-widths {sorted(choices or DEFAULT_CHOICES)} is a {fmt} width "
                         f"({allowed.start}..{allowed.stop - 1})")
    return out


@dataclass
class _Layer:
    name: str
    fmt: str
    weight: torch.Tensor  # float weights (O, ...)
    choices: list[int]
    act_bits: int  # the layer's activation width, which the allocation keeps

    @property
    def per_channel(self) -> int:
        return int(self.weight[0].numel())


def _layers(entries: list[tuple[str, str, torch.Tensor, object, int]], first_last: bool, choices
            ) -> tuple[dict[str, _Layer], int, int]:
    """(searchable layers, code bits of the fixed ones, weights of all quantized layers) from
    (name, weight format, weight, bits, activation bits) of every quantized layer in order; with
    ``first_last`` the first and the last keep their bits."""
    fixed_bits, total, out = 0, 0, {}
    for i, (name, fmt, weight, bits, act_bits) in enumerate(entries):
        total += weight.numel()
        if first_last and (i == 0 or i == len(entries) - 1):
            per_channel = bits if isinstance(bits, list) else [bits] * weight.shape[0]
            fixed_bits += weight[0].numel() * sum(per_channel)
        else:
            out[name] = _Layer(name, fmt, weight.detach(), candidates(fmt, choices), int(act_bits))
    if not out:
        raise ValueError("no layer to allocate bit-widths to (every quantized layer is a fixed first/last layer)")
    return out, fixed_bits, total


def _planned(model: nn.Module, config: QuantConfig) -> list[tuple[str, str, torch.Tensor, object]]:
    """The entries of ``_layers`` for a float model about to be quantized with ``config``."""
    return [(name, spec["weights"], model.get_submodule(name).weight, spec["bits"], spec["act_bits"])
            for name, spec in layer_plan(model, config).items()]


def _quantized(model: nn.Module) -> list[tuple[str, str, torch.Tensor, object]]:
    """The entries of ``_layers`` for an already quantized model."""
    from .swap import quant_layers

    return [(name, m.weight_quant.fmt, m.weight, m.weight_quant.bits, m.act_quant.bits)
            for name, m in quant_layers(model).items()]


def fisher_diagonal(model: nn.Module, names: Iterable[str], x: torch.Tensor, batch_size: int = 32,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """The diagonal Fisher information of the named layers' weights, in its Kronecker-factored
    form: F[o, k] = P * E[g_o^2] * E[a_k^2], with g the gradient of the loss at the layer's output
    (per position), a its input patch values (per position) and P the output positions per sample.
    The loss is the cross-entropy of labels drawn from the model's own softmax (seeded; the true
    Fisher, which needs no labels). Averaging g^2 and a^2 over every sample and position, rather
    than squaring one gradient per batch, keeps the estimate steady on a few hundred images.
    Grouped convs fall back to the squared batch gradient of their weights."""
    mods = {name: model.get_submodule(name) for name in names}
    stats = {name: {"a": 0.0, "g": 0.0, "n": 0, "p": 1, "w2": 0.0} for name in mods}
    handles = []

    def grouped(m: nn.Module) -> bool:  # no Kronecker factors here: the squared batch gradient
        return not (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))

    for name, m in mods.items():
        def fwd(mod, inp, out, name=name):
            a = inp[0].detach()
            if isinstance(mod, nn.Conv2d) and not grouped(mod):
                a = F.unfold(a, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # (N, K, P)
                stats[name]["p"] = a.shape[2]
                stats[name]["a"] = stats[name]["a"] + (a ** 2).mean(dim=2).sum(0)
            elif isinstance(mod, nn.Linear):
                stats[name]["a"] = stats[name]["a"] + (a ** 2).sum(0)
            stats[name]["n"] += a.shape[0]

        def bwd(mod, grad_in, grad_out, name=name):
            g = grad_out[0].detach()
            g = g.reshape(g.shape[0], g.shape[1], -1)
            stats[name]["g"] = stats[name]["g"] + (g ** 2).mean(dim=2).sum(0)

        handles += [m.register_forward_hook(fwd), m.register_full_backward_hook(bwd)]
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            labels = torch.multinomial(torch.softmax(logits.detach().double(), 1), 1, generator=gen).flatten()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(logits, labels, reduction="sum").backward()
            for name, m in mods.items():
                if grouped(m) and m.weight.grad is not None:
                    stats[name]["w2"] = stats[name]["w2"] + m.weight.grad.detach() ** 2
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    out = {}
    for name, m in mods.items():
        st, n = stats[name], max(1, stats[name]["n"])
        if grouped(m):
            out[name] = st["w2"] / n
            continue
        outer = torch.outer(st["g"] / n, st["a"] / n) * st["p"]  # (O, K)
        out[name] = outer.reshape(m.weight.shape)
    return out


@torch.no_grad()
def quantization_costs(layer: _Layer, fisher: torch.Tensor) -> dict[int, torch.Tensor]:
    """{bits: (O,) Fisher-weighted squared error of each channel at that width} (MSE-initialised
    per-channel scales, as calibration sets them)."""
    out = {}
    for b in layer.choices:
        q = WEIGHT_QUANTIZERS[layer.fmt](b, layer.weight.shape[0])
        q.init_from(layer.weight)
        err = (q(layer.weight) - layer.weight) ** 2
        out[b] = (fisher * err).reshape(err.shape[0], -1).sum(1).double()
    return out


def greedy(costs: list[dict[int, float]], sizes: list[int], limit_bits: float, fill: bool = False) -> list[int]:
    """Bit-widths for groups (each with ``sizes[g]`` weights and a cost per candidate width) whose
    code bits stay within ``limit_bits``: start at the smallest width, then repeatedly take the
    upgrade (to any wider candidate) with the largest cost saving per added bit that fits; with
    ``fill``, also upgrades that save nothing (least loss first) while the budget lasts."""
    chosen = [min(c) for c in costs]
    used = sum(n * b for n, b in zip(sizes, chosen))
    if used > limit_bits + 1e-6:
        raise ValueError(f"the budget ({limit_bits / 8:.0f} bytes of codes) is below the smallest possible "
                         f"({used / 8:.0f} bytes at the narrowest candidate width everywhere)")

    def best_upgrade(g: int):
        here = chosen[g]
        options = [((costs[g][here] - costs[g][b]) / (sizes[g] * (b - here)), b) for b in costs[g] if b > here]
        return max(options) if options else None

    heap = []
    for g in range(len(costs)):
        up = best_upgrade(g)
        if up is not None:
            heapq.heappush(heap, (-up[0], g, up[1], chosen[g]))
    while heap:
        neg_ratio, g, b, frm = heapq.heappop(heap)
        if chosen[g] != frm:  # stale entry
            continue
        extra = sizes[g] * (b - frm)
        if used + extra > limit_bits + 1e-6 or (-neg_ratio <= 0 and not fill):
            continue
        chosen[g], used = b, used + extra
        up = best_upgrade(g)
        if up is not None:
            heapq.heappush(heap, (-up[0], g, up[1], chosen[g]))
    return chosen


def allocate(model: nn.Module, config: QuantConfig, x: torch.Tensor, budget: Budget, *,
             choices: Iterable[int] | None = None, granularity: str = "channel") -> list[tuple[str, dict]]:
    """Post-training allocation for a float ``model`` (see the module docstring): QuantConfig
    overrides that fit ``budget``. ``x``: calibration inputs (no labels)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    layers, fixed_bits, total = _layers(_planned(model, config), config.first_last_bits is not None, choices)
    fisher = fisher_diagonal(model, layers, x)
    costs, sizes, owners = [], [], []
    for name, layer in layers.items():
        per = quantization_costs(layer, fisher[name])
        if granularity == "layer":
            costs.append({b: float(v.sum()) for b, v in per.items()})
            sizes.append(int(layer.weight.numel()))
            owners.append((name, None))
        else:
            for o in range(layer.weight.shape[0]):
                costs.append({b: float(v[o]) for b, v in per.items()})
                sizes.append(layer.per_channel)
                owners.append((name, o))
    chosen = greedy(costs, sizes, budget.limit_bits(total) - fixed_bits)
    return _overrides(layers, owners, chosen)


def _overrides(layers: dict[str, _Layer], owners: list[tuple[str, int | None]], chosen: list[int]) -> list[tuple[str, dict]]:
    bits: dict[str, list[int]] = {name: [0] * layer.weight.shape[0] for name, layer in layers.items()}
    for (name, o), b in zip(owners, chosen):
        if o is None:
            bits[name] = [b] * len(bits[name])
        else:
            bits[name][o] = b
    # act_bits stated: an override's int bits would otherwise set the activations too
    # (QuantConfig.layer_spec), and the budget is about weights only
    return [(name, {"bits": b[0] if len(set(b)) == 1 else b, "act_bits": layers[name].act_bits})
            for name, b in bits.items()]


def code_bytes(model: nn.Module) -> int:
    """Bytes of the packed weight codes of a quantized model's layers (each layer's stream rounded
    up to a byte, as in the file; a variable-length format's stream is packed to be measured)."""
    from ..spec import codecs
    from .swap import quant_layers

    total = 0
    for layer in quant_layers(model).values():
        q = layer.weight_quant
        size = codecs.get(q.fmt).packed_length(np.array(q.channel_bits), layer.weight[0].numel())
        if size is None:  # variable length: known only from the weights
            size = R.pack_weights(q.integer_weights(layer.weight)[0], q.fmt, q.bits).size
        total += int(size)
    return total


def bits_summary(model: nn.Module) -> dict[str, dict]:
    """Per quantized layer: mean weight bits and the number of channels at each width."""
    from .swap import quant_layers

    out = {}
    for name, layer in quant_layers(model).items():
        bits = layer.weight_quant.channel_bits
        out[name] = {"mean_bits": float(np.mean(bits)),
                     "channels": {str(b): int(c) for b, c in zip(*np.unique(bits, return_counts=True))}}
    return out


# --------------------------------------------------------------------------- differentiable search
class SearchQuantizer(nn.Module):
    """A layer's weights during the search (Cheng et al.): ``sum_b p_b Q_b(w)`` with ``p`` the
    softmax of per-group logits over the candidate widths (groups: output channels or the layer);
    each candidate ``Q_b`` is a full weight quantizer with its own learned per-channel scale."""

    def __init__(self, fmt: str, choices: list[int], weight: torch.Tensor, granularity: str) -> None:
        super().__init__()
        self.fmt, self.choices, self.granularity = fmt, list(choices), granularity
        o = weight.shape[0]
        self.quantizers = nn.ModuleList([WEIGHT_QUANTIZERS[fmt](b, o) for b in choices])
        for q in self.quantizers:
            q.init_from(weight)
        self.logits = nn.Parameter(torch.zeros(o if granularity == "channel" else 1, len(choices)))
        self.register_buffer("widths", torch.tensor(choices, dtype=torch.float32), persistent=False)
        self.per_channel = int(weight[0].numel())
        self.out_channels = o

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)

    def expected_bits(self) -> torch.Tensor:
        """Expected code bits of the layer (differentiable in the logits)."""
        per_group = (self.probs() * self.widths).sum(1)
        return per_group.sum() * self.per_channel * (self.out_channels // per_group.numel())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        p = self.probs()
        shape = (p.shape[0],) + (1,) * (w.dim() - 1)
        return sum(p[:, i].reshape(shape) * q(w) for i, q in enumerate(self.quantizers))

    def decide(self) -> tuple[list[int], torch.Tensor]:
        """(bit-width per output channel by the largest probability, the probabilities (O, K))."""
        p = self.probs().detach()
        if p.shape[0] == 1:
            p = p.expand(self.out_channels, -1)
        return [self.choices[int(i)] for i in p.argmax(1)], p

    def finalize(self, bits: list[int]) -> WeightQuantizer:
        """The fixed quantizer of this assignment, each channel keeping its chosen candidate's scale."""
        q = WEIGHT_QUANTIZERS[self.fmt](bits, self.out_channels)
        with torch.no_grad():
            for o, b in enumerate(bits):
                q.param[o] = self.quantizers[self.choices.index(b)].param[o]
        q.initialized.fill_(True)
        return q


def search(model: nn.Module, config: QuantConfig, x: torch.Tensor, y: torch.Tensor, budget: Budget, *,
           choices: Iterable[int] | None = None, granularity: str = "channel", steps: int = 300,
           batch_size: int = 64, lr: float = 1e-3, logit_lr: float = 0.05, penalty: float = 2.0, seed: int = 0,
           progress: Callable[[int, float, float], None] | None = None) -> tuple[list[tuple[str, dict]], dict]:
    """Differentiable bit-width search on a quantized, calibrated ``model`` (its searchable layers'
    weight quantizers are replaced during the search and restored after). Returns the overrides
    of the found assignment (repaired to fit the budget) and a summary (expected size over the
    steps, final probabilities' entropy)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    from .swap import quant_layers

    qlayers = quant_layers(model)
    layers, fixed_bits, total = _layers(_quantized(model), config.first_last_bits is not None, choices)
    limit = budget.limit_bits(total) - fixed_bits
    originals = {name: qlayers[name].weight_quant for name in layers}
    searchers = {}
    for name, layer in layers.items():
        searchers[name] = SearchQuantizer(layer.fmt, layer.choices, qlayers[name].weight.detach(), granularity)
        qlayers[name].weight_quant = searchers[name]
    logits = [s.logits for s in searchers.values()]
    others = [p for n, p in model.named_parameters() if not any(p is lg for lg in logits)]
    opt = torch.optim.Adam([{"params": others, "lr": lr}, {"params": logits, "lr": logit_lr}])
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    try:
        for step in range(steps):
            idx = torch.randint(0, len(x), (batch_size,), generator=gen)
            task = F.cross_entropy(model(x[idx]), y[idx])
            size = sum(s.expected_bits() for s in searchers.values())
            # Two-sided: the expected size is drawn to the budget itself (a one-sided hinge
            # let the logits collapse to the narrowest width and leave the budget unused).
            loss = task + penalty * (size / limit - 1.0) ** 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(size.detach()) / 8)
            if progress:
                progress(step + 1, float(task.detach()), history[-1])
    finally:
        for name, q in originals.items():
            qlayers[name].weight_quant = q
    decided = {name: s.decide() for name, s in searchers.items()}
    # The discrete assignment: the greedy allocation with -log p(width) as each width's cost (from
    # the narrowest width it buys the upgrades that raise the probability most per bit, then, to
    # use the rest of the budget, those that lower it least): it fits the budget, uses it, and is
    # the argmax wherever the budget allows.
    owners, costs, sizes = [], [], []
    for name, (bits, p) in decided.items():
        s = searchers[name]
        groups = [None] if granularity == "layer" else range(len(bits))  # one group per layer, or per channel
        for o in groups:
            owners.append((name, o))
            costs.append({b: float(-torch.log(p[o or 0, i] + 1e-12)) for i, b in enumerate(s.choices)})
            sizes.append(s.per_channel * (s.out_channels if o is None else 1))
    argmax_bits = [decided[n][0][o or 0] for n, o in owners]
    used = sum(n * b for n, b in zip(sizes, argmax_bits))
    chosen = greedy(costs, sizes, limit, fill=True)
    overrides = _overrides(layers, owners, chosen)
    for name, o in overrides:  # carry the searched scales into the fixed quantizers
        bits = o["bits"] if isinstance(o["bits"], list) else [o["bits"]] * qlayers[name].weight.shape[0]
        qlayers[name].weight_quant = searchers[name].finalize(bits).to(qlayers[name].weight.device)
    entropy = float(np.mean([-(p * torch.log(p + 1e-12)).sum(1).mean().item() for _, p in decided.values()]))
    agree = float(np.mean([a == c for a, c in zip(argmax_bits, chosen)]))
    summary = {"expected_code_bytes": history[::max(1, steps // 20)] + history[-1:], "limit_bytes": limit / 8,
               "argmax_code_bytes": used / 8, "argmax_agreement": agree, "mean_entropy": entropy}
    return overrides, summary
