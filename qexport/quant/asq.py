"""ASQ (the ASQ paper, section 3.2): an adapter scales the activation step per input sample."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import ActQuantizer, register_act


@register_act("asq")
class AsqActQuantizer(ActQuantizer):
    """s' = s * beta(x), beta = 2 sigmoid(fc2(relu(fc1(mean_spatial(x))))).

    The adapter is Linear(C, max(1, C // reduction)) -> ReLU -> Linear(H, 1). fc2 starts at
    zero, so beta = 1 at the start ("initialised to produce output values close to 1").
    The gradient reaching beta is scaled by LSQ's g, like the step's (ours: it keeps the
    adapter's updates on the scale of the step's). Exported as ``ai.qexport.AsqQuantize``,
    which runs the adapter at inference time in float64.
    """

    def __init__(self, bits: int, channels: int, signed: bool | None = None, reduction: int = 16) -> None:
        super().__init__(bits, channels, signed)
        hidden = max(1, channels // max(1, int(reduction)))
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def factor(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        z = self.fc2(torch.relu(self.fc1(pooled))).squeeze(1)
        return 2.0 * torch.sigmoid(z)

    def deploy_params(self) -> dict:
        params = super().deploy_params()
        as_np = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        params.update(w1=as_np(self.fc1.weight), b1=as_np(self.fc1.bias),
                      w2=as_np(self.fc2.weight), b2=as_np(self.fc2.bias))
        return params
