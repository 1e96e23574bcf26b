"""ASQ (the ASQ paper, section 3.2): an adapter scales the activation step per input sample."""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ..spec import reference as R
from .base import ActQuantizer, register_act

# The adapter's size rule (docs/ops.md, "Adapter size"): at most MAX_GROUPS inputs (channel
# groups of the pooled activation), hidden width G // reduction, at most MAX_HIDDEN.
MAX_GROUPS = 64
MAX_HIDDEN = 16


def adapter_shape(channels: int, reduction: int = 4, max_groups: int = MAX_GROUPS) -> tuple[int, int]:
    """(groups G, hidden H) of the adapter of a ``channels``-channel input.

    G = min(C, max_groups) channel groups feed Linear(G, H) -> ReLU -> Linear(H, 1), with
    H = clamp(G // reduction, 1, MAX_HIDDEN). The authors use C/4 hidden units on all C channels;
    the caps keep a 25,088-feature classifier input from growing a 157 MB adapter.
    """
    groups = max(1, min(int(channels), int(max_groups)))
    hidden = max(1, min(groups // max(1, int(reduction)), MAX_HIDDEN))
    return groups, hidden


def group_mean(pooled: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C) -> (N, G): the mean of each channel group [floor(g C / G), floor((g + 1) C / G))."""
    c = pooled.shape[1]
    if groups == c:
        return pooled
    index, sizes = _group_index(c, groups, pooled.device)
    sums = torch.zeros(pooled.shape[0], groups, dtype=pooled.dtype, device=pooled.device).index_add_(1, index, pooled)
    return sums / sizes.to(pooled.dtype)


@functools.lru_cache(maxsize=None)
def _group_index(c: int, groups: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(the group of each channel, the size of each group) for ``group_mean``: one index_add
    instead of a mean per group (64 small ops per quantizer and pass)."""
    sizes = np.diff(R.adapter_group_bounds(c, groups))
    return (torch.from_numpy(np.repeat(np.arange(groups), sizes)).to(device),
            torch.from_numpy(sizes.astype(np.float64)).to(device))


@register_act("asq")
class AsqActQuantizer(ActQuantizer):
    """s' = s * beta(x) per sample, beta = max(fc2(relu(fc1(group_mean(mean_spatial(x))))), 1e-8).

    As in the authors' code: the adapter ends in a ReLU clamped at 1e-8, its last layer starts
    at weights N(0, 0.01) and bias 1 (beta close to 1), and the gradient reaching beta is LSQ's
    per-sample step gradient times s, not scaled by LSQ's g (g scales the step's own gradient
    only). Exported as ``ai.qexport.AsqQuantize`` (beta_map "relu"), which runs the adapter at
    inference time in float64.

    ``beta_map="sigmoid2"`` is qexport's first form (beta = 2 sigmoid(z), fc2 zero-initialised,
    hidden C // reduction, no groups), kept so that checkpoints written before it still load.
    """

    def __init__(self, bits: int, channels: int, signed: bool | None = None, reduction: int = 4,
                 beta_map: str = "relu", max_groups: int = MAX_GROUPS) -> None:
        super().__init__(bits, channels, signed)
        if beta_map not in R.BETA_MAPS:
            raise ValueError(f"beta_map must be one of {R.BETA_MAPS}, got {beta_map!r}")
        self.beta_map = beta_map
        if beta_map == "sigmoid2":
            self.groups, hidden = channels, max(1, channels // max(1, int(reduction)))
        else:
            self.groups, hidden = adapter_shape(channels, reduction, max_groups)
        self.fc1 = nn.Linear(self.groups, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.reset_adapter()

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """The last layer's initialisation: beta = 1 exactly (sigmoid2) or close to 1 (relu)."""
        if self.beta_map == "sigmoid2":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
        else:
            nn.init.normal_(self.fc2.weight, mean=0.0, std=0.01)
            nn.init.constant_(self.fc2.bias, 1.0)

    def adapter_input(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        return group_mean(pooled, self.groups)

    def factor(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta(self.adapter_input(x))

    def beta(self, features: torch.Tensor) -> torch.Tensor:
        """beta (N,) from the adapter's input features (N, G)."""
        z = self.fc2(torch.relu(self.fc1(features))).squeeze(1)
        if self.beta_map == "sigmoid2":
            return 2.0 * torch.sigmoid(z)
        return torch.clamp(torch.relu(z), min=R.BETA_MIN)

    def deploy_params(self) -> dict:
        params = super().deploy_params()
        as_np = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        params.update(w1=as_np(self.fc1.weight), b1=as_np(self.fc1.bias),
                      w2=as_np(self.fc2.weight), b2=as_np(self.fc2.bias), beta_map=self.beta_map,
                      groups=0 if self.groups == self.channels else self.groups)
        return params
