"""FGSM (Goodfellow et al. 2015): one signed (L∞) or normalised (L2) gradient step of size ε."""

from __future__ import annotations

import torch

from foolkit.attacks.base import Attack, Problem, check_norm, check_positive, normalize


class FGSM(Attack):
    """Fast gradient (sign) method: ``x + ε · normalize(∇ CE)`` (towards the target when targeted).

    ``eps``: budget in ``norm`` ("linf" or "l2"); ``steps`` is accepted and ignored (one step).
    """

    name = "fgsm"
    budget = True

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", steps: int | None = None, quantize: bool = True,
                 seed: int = 0):
        check_positive("eps", eps)
        self.eps = float(eps)
        self.norm = check_norm(norm, ("linf", "l2"))
        self.quantize = quantize
        self.seed = seed

    def run(self, p: Problem) -> torch.Tensor:
        _, g, _ = p.grad(p.gain, p.x)
        return p.clip(p.x + self.eps * normalize(g, self.norm))
