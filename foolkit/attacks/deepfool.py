"""DeepFool (Moosavi-Dezfooli et al. 2016): iterated linearisation of the decision boundary.

At each step every candidate class ``k`` gives a linear boundary ``f_k = z_k − z_own`` with
gradient ``w_k``; the sample moves to the nearest one (distance ``|f_k| / ‖w_k‖_dual``), and
stops as soon as it is adversarial. The final perturbation is multiplied by ``1 + overshoot``.
Targeted: the only boundary is the target's against the strongest other class. With a required
confidence ``c`` the boundaries are those of the confident mistake (``Problem.margin``): class
``k`` against the log-sum-exp of all the others, shifted by ``κ = log(c / (1 − c))``.
"""

from __future__ import annotations

import math

import torch

from foolkit.attacks.base import DUAL, Attack, Problem, check_count, check_norm, check_positive, norm_of, per_sample


class DeepFool(Attack):
    """``norm``: "l2" | "linf"; ``steps``: max iterations; ``overshoot``: final push beyond the
    boundary; ``candidates``: how many classes besides the current one (the top ones by clean logits) are
    considered per sample (Foolbox and the original code count the current class among theirs)."""

    name = "deepfool"

    def __init__(self, *, norm: str = "l2", steps: int = 50, overshoot: float = 0.02, candidates: int = 10,
                 quantize: bool = True, seed: int = 0):
        self.norm = check_norm(norm, ("l2", "linf"))
        check_count("steps", steps)
        check_positive("overshoot", overshoot, allow_zero=True)
        check_count("candidates", candidates)
        self.steps = int(steps)
        self.overshoot = float(overshoot)
        self.candidates = int(candidates)
        self.quantize = quantize
        self.seed = seed

    def _step(self, f: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``(B,)`` to the linear boundary ``f + w·r = 0`` and the step ``r`` reaching it."""
        dual = norm_of(w, DUAL[self.norm]).clamp_min(1e-12)
        dist = (f.abs() + 1e-4) / dual
        direction = w / per_sample(norm_of(w, "l2").clamp_min(1e-12), w) if self.norm == "l2" else w.sign()
        return dist, direction * per_sample(dist, w)

    def run(self, p: Problem) -> torch.Tensor:
        x = p.x
        with torch.no_grad():
            logits0 = p.logits(x)
        k = min(self.candidates, logits0.shape[1] - 1)
        others = logits0.scatter(1, p.labels.unsqueeze(1), -torch.inf).topk(k, dim=1).indices  # (B, k)
        r_tot = torch.zeros_like(x)
        active = ~p.is_adversarial(logits0)
        for _ in range(self.steps):
            if not bool(active.any()):  # one sync per step: DeepFool usually stops after a few
                break
            xa = p.clip(x + (1 + self.overshoot) * r_tot).requires_grad_(True)
            logits = p.logits(xa)
            active &= ~p.is_adversarial(logits.detach())
            if p.targeted:  # the margin: max other − target, or with a confidence logsumexp others + κ − target
                pairs = [p.margin(logits)]
            elif p.kappa == -math.inf:
                own = logits.gather(1, p.labels.unsqueeze(1)).squeeze(1)
                pairs = [logits.gather(1, others[:, j:j + 1]).squeeze(1) - own for j in range(k)]
            else:  # class k must win with probability ≥ c: z_k − logsumexp_{i≠k} z_i − κ ≥ 0
                pairs = [logits.gather(1, others[:, j:j + 1]).squeeze(1)
                         - logits.scatter(1, others[:, j:j + 1], -torch.inf).logsumexp(dim=1) - p.kappa for j in range(k)]
            best_dist = torch.full((len(x),), torch.inf, device=x.device)
            best_r = torch.zeros_like(x)
            for j, f in enumerate(pairs):
                (w,) = torch.autograd.grad(f.sum(), xa, retain_graph=j < len(pairs) - 1)
                # untargeted: move to f_k > 0 (along +w); targeted f = other − own > 0 → reduce it (along −w)
                dist, r = self._step(f.detach(), -w if p.targeted else w)
                closer = dist < best_dist
                best_dist = torch.where(closer, dist, best_dist)
                best_r = torch.where(per_sample(closer, x), r, best_r)
            r_tot = r_tot + best_r * per_sample(active, x)
        return p.clip(x + (1 + self.overshoot) * r_tot)
