"""PGD (Madry et al. 2018) and BIM (Kurakin et al. 2017): iterated gradient steps projected on the ε-ball.

Both keep, per sample and across steps and restarts, the most adversarial point seen (lowest
logit margin), so the answer never gets worse than an intermediate iterate. Restarts only
re-run the samples that are not adversarial yet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from foolkit.attacks.base import Attack, Problem, check_count, check_norm, check_positive, normalize, norm_of, per_sample, project
from foolkit.errors import FoolkitError


class PGD(Attack):
    """Projected gradient descent within an ε-ball.

    ``eps``: budget in ``norm`` ("linf" | "l2"); ``steps``: iterations per restart;
    ``step_size``: default ``2.5 · eps / steps``; ``random_start``: start uniformly in the
    ball (L∞) or at a random point of it (L2); ``restarts``: runs in all (1: no restart; each
    further one a new random start for the samples still not adversarial); ``loss``: "ce" (cross-entropy) or "margin" (logit difference).
    """

    name = "pgd"
    budget = True

    def __init__(self, *, eps: float = 0.3, norm: str = "linf", steps: int = 40, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, loss: str = "ce", quantize: bool = True, seed: int = 0):
        check_positive("eps", eps)
        check_count("steps", steps)
        check_count("restarts", restarts)
        if step_size is not None:
            check_positive("step_size", step_size)
        if loss not in ("ce", "margin"):
            raise FoolkitError(f"loss must be 'ce' or 'margin', got {loss!r}")
        self.eps = float(eps)
        self.norm = check_norm(norm, ("linf", "l2"))
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self.default_step_size()
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = loss
        self.quantize = quantize
        self.seed = seed

    def default_step_size(self) -> float:
        return 2.5 * self.eps / self.steps

    def _start(self, p: Problem) -> torch.Tensor:
        if not self.random_start:
            return torch.zeros_like(p.x)
        if self.norm == "linf":
            d = (2 * p.uniform(p.x.shape, p.x) - 1) * self.eps
        else:
            d = p.normal(p.x.shape, p.x)
            r = p.uniform((len(p.x),), p.x) ** (1.0 / max(1, p.x[0].numel())) * self.eps
            d = d * per_sample(r / norm_of(d, "l2").clamp_min(1e-12), d)
        return p.clip(p.x + d) - p.x

    def _objective(self, p: Problem) -> Callable[[torch.Tensor], torch.Tensor]:
        return p.gain if self.loss == "ce" else (lambda logits: -p.margin(logits))

    def _descend(self, p: Problem) -> tuple[torch.Tensor, torch.Tensor]:
        """One run of ``steps`` iterations; returns the best point per sample and its score (−margin)."""
        x = p.x
        delta = self._start(p)
        best = x + delta
        best_score = torch.full((len(x),), -torch.inf, device=x.device)
        objective = self._objective(p)
        for _ in range(self.steps):
            xa = x + delta
            _, g, logits = p.grad(objective, xa)
            score = -p.margin(logits)
            better = score > best_score
            best = torch.where(per_sample(better, x), xa, best)
            best_score = torch.where(better, score, best_score)
            delta = project(delta + self.step_size * normalize(g, self.norm), self.eps, self.norm)
            delta = p.clip(x + delta) - x
        with torch.no_grad():
            xa = x + delta
            score = -p.margin(p.logits(xa))
        better = score > best_score
        return torch.where(per_sample(better, x), xa, best), torch.where(better, score, best_score)

    def run(self, p: Problem) -> torch.Tensor:
        best, score = self._descend(p)
        for _ in range(self.restarts - 1):
            idx = (score <= 0).nonzero().flatten()
            if len(idx) == 0:
                break
            b, s = self._descend(p.sub(idx))
            better = s > score[idx]
            best[idx[better]] = b[better]
            score[idx[better]] = s[better]
        return best


class BIM(PGD):
    """Basic iterative method: PGD from the clean image (no random start, one run), 10 steps of
    ``1.25 · eps / steps`` by default (total step length ``1.25 · eps``, the bound of Kurakin et
    al.'s schedule; theirs takes steps of 1/255 and ``min(255·eps + 4, 1.25 · 255·eps)`` of them:
    pass ``steps`` and ``step_size`` for that)."""

    name = "bim"

    def __init__(self, *, eps: float = 0.3, norm: str = "linf", steps: int = 10, step_size: float | None = None,
                 loss: str = "ce", quantize: bool = True, seed: int = 0):
        super().__init__(eps=eps, norm=norm, steps=steps, step_size=step_size, random_start=False, restarts=1,
                         loss=loss, quantize=quantize, seed=seed)

    def default_step_size(self) -> float:
        return 1.25 * self.eps / self.steps
