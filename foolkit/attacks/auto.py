"""The default minimum-norm attack of ``foolkit attack``: the best of foolkit's methods for a norm.

1. a primary minimum-norm attack: DDN for L2, iterating on the 8-bit grid (as in the DDN paper)
   so that the smallest adversarial it keeps is one that survives saving; FMN for L1 and L∞;
2. a fallback on the samples still not adversarial (FMN for L2, DeepFool for L∞ — a different
   geometry often gets past where the first one stalled), costing nothing when all succeed;
3. a boundary search: bisection of the segment between the clean image and each adversarial,
   shortening the perturbation to just past the decision boundary (forward passes only).

8-bit quantisation and its repair are done by the base class, as for every attack.
"""

from __future__ import annotations

import torch

from foolkit.attacks.base import Attack, Problem, check_norm, check_positive, per_sample
from foolkit.attacks.ddn import DDN
from foolkit.attacks.deepfool import DeepFool
from foolkit.attacks.fmn import FMN


class AutoMinNorm(Attack):
    """``norm``: "l1" | "l2" | "linf"; ``steps``: iterations of the primary attack (the fallback gets
    the same on the few samples it sees); ``search_steps``: bisection steps of the boundary search
    (default 0 for L2, where DDN on the grid already ends on the boundary, and 6 otherwise)."""

    name = "auto"

    def __init__(self, *, norm: str = "l2", steps: int = 100, search_steps: int | None = None, quantize: bool = True,
                 seed: int = 0):
        self.norm = check_norm(norm, ("l1", "l2", "linf"))
        check_positive("steps", steps)
        search_steps = (0 if norm == "l2" else 6) if search_steps is None else search_steps
        check_positive("search_steps", search_steps, allow_zero=True)
        self.steps = int(steps)
        self.search_steps = int(search_steps)
        self.quantize = quantize
        self.seed = seed

    def _stages(self) -> list[Attack]:
        if self.norm == "l2":
            return [DDN(steps=self.steps, init_epsilon=2.0, grid=self.quantize), FMN(norm="l2", steps=self.steps)]
        if self.norm == "linf":
            return [FMN(norm="linf", steps=self.steps), DeepFool(norm="linf", steps=self.steps)]
        return [FMN(norm="l1", steps=self.steps), FMN(norm="l1", steps=self.steps, alpha_init=10.0)]

    def run(self, p: Problem) -> torch.Tensor:
        primary, fallback = self._stages()
        adv = primary.run(p)
        with torch.no_grad():
            ok = p.is_adversarial(p.logits(adv))
        idx = (~ok).nonzero().flatten()
        if len(idx):
            sub = p.sub(idx)
            cand = fallback.run(sub)
            with torch.no_grad():
                fixed = p.is_adversarial(p.logits(cand), sub.labels)
            adv[idx[fixed]] = cand[fixed]
            ok[idx[fixed]] = True
        return self._boundary_search(p, adv, ok) if self.search_steps else adv

    @torch.no_grad()
    def _boundary_search(self, p: Problem, adv: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """Shrink ``adv − x`` towards x while it stays adversarial: bisection on the scale in [0, 1]."""
        x = p.x
        d = adv - x
        lo = torch.zeros(len(x), device=x.device)
        hi = torch.ones(len(x), device=x.device)
        for _ in range(self.search_steps):
            mid = (lo + hi) / 2
            is_adv = p.is_adversarial(p.logits(p.clip(x + per_sample(mid, x) * d)))
            hi = torch.where(is_adv & ok, mid, hi)
            lo = torch.where(is_adv & ok, lo, mid)
        return p.clip(x + per_sample(hi, x) * d)
