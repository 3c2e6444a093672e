"""The default minimum-norm attack of ``foolkit attack``: the best of foolkit's methods for a norm.

1. a primary minimum-norm attack: DDN for L2, iterating on the 8-bit grid (as in the DDN paper)
   so that the smallest adversarial it keeps is one that survives saving; FMN for L1 and L∞;
2. a fallback on the samples still not adversarial (FMN for L2, DeepFool for L∞ — a different
   geometry often gets past where the first one stalled), costing nothing when all succeed;
3. with an ``eps`` of interest (L2, L∞): PGD at that budget on the samples not yet fooled within
   it — a minimum-norm search can stall above a radius where a fixed-budget attack succeeds, and
   robust accuracy at ε should be no better for the "best" attack than for PGD;
4. a boundary search: bisection of the segment between the clean image and each adversarial,
   shortening the perturbation to just past the decision boundary (forward passes only).

8-bit quantisation and its repair are done by the base class, as for every attack.
"""

from __future__ import annotations

import torch

from foolkit.attacks.base import Attack, Problem, check_count, check_norm, check_positive, norm_of, per_sample, project, to_grid
from foolkit.attacks.ddn import DDN
from foolkit.attacks.deepfool import DeepFool
from foolkit.attacks.fmn import FMN
from foolkit.attacks.pgd import PGD


class AutoMinNorm(Attack):
    """``norm``: "l1" | "l2" | "linf"; ``steps``: iterations of the primary attack (the fallback gets
    the same on the few samples it sees); ``search_steps``: bisection steps of the boundary search
    (default 0 for L2, where DDN on the grid already ends on the boundary, and 6 otherwise); ``eps``:
    a radius of interest (L2, L∞), where PGD gets the samples still not fooled within it."""

    name = "auto"

    def __init__(self, *, norm: str = "l2", steps: int = 100, search_steps: int | None = None,
                 eps: float | None = None, quantize: bool = True, seed: int = 0):
        self.norm = check_norm(norm, ("l1", "l2", "linf"))
        check_count("steps", steps)
        if eps is not None:
            check_positive("eps", eps)
        self.eps = float(eps) if eps is not None else None
        search_steps = (0 if norm == "l2" else 6) if search_steps is None else search_steps
        check_count("search_steps", search_steps, allow_zero=True)
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
        if self.eps is not None and self.norm != "l1":
            self._within_eps(p, adv, ok)
        return self._boundary_search(p, adv, ok) if self.search_steps else adv

    def _within_eps(self, p: Problem, adv: torch.Tensor, ok: torch.Tensor) -> None:
        """PGD at ``eps`` on the samples not adversarial within it; what it finds (a shorter
        perturbation) replaces theirs, in place. On the 8-bit grid, rounded toward the clean image,
        so the perturbation stays within ε when saved."""
        assert self.eps is not None
        with torch.no_grad():
            far = ~ok | (norm_of(adv - p.x, self.norm) > self.eps)
        idx = far.nonzero().flatten()
        if len(idx) == 0:
            return
        sub = p.sub(idx)
        cand = sub.clip(sub.x + project(PGD(eps=self.eps, norm=self.norm, steps=self.steps, seed=self.seed).run(sub)
                                        - sub.x, self.eps, self.norm))
        if self.quantize:
            cand = to_grid(cand, sub.x, p.bounds, "toward")
        with torch.no_grad():
            won = p.is_adversarial(p.logits(cand), sub.labels)
        adv[idx[won]] = cand[won]
        ok[idx[won]] = True

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
