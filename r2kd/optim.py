"""Momentum SGD with coupled weight decay, the recipe's optimiser (METHOD.md §7): bit-identical to
``torch.optim.SGD(momentum=m, weight_decay=wd)`` (tests/test_optim.py) without its first-use cost:
every ``torch.optim`` optimiser imports torch._dynamo on construction, ~2.5 s per pipeline stage.
"""

from __future__ import annotations

from typing import Iterable

import torch


class SGD:
    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        # `param_groups` lets torch.amp.GradScaler unscale gradients of this optimiser.
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = value

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient, with the arithmetic, in the same order,
        of ``torch.optim.SGD(foreach=True)`` (bit-equal to its per-parameter loop), in fewer calls."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [self.params[i].grad for i in live]
        if self.weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum != 0:
            bufs = [self.buffers[i] for i in live]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, grads)
            else:
                for k, i in enumerate(live):
                    if bufs[k] is None:
                        bufs[k] = self.buffers[i] = torch.clone(grads[k]).detach()
                    else:
                        bufs[k].mul_(self.momentum).add_(grads[k])
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum_buffers": [b if b is not None else torch.empty(0) for b in self.buffers],
                "has_buffer": [b is not None for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["momentum_buffers"]) != len(self.params):
            raise ValueError("optimiser state does not match the model's parameters")
        self.lr = state["lr"]
        self.buffers = [buf.to(p.device) if has else None
                        for p, buf, has in zip(self.params, state["momentum_buffers"], state["has_buffer"])]
