"""FMN (Pintor et al. 2021): Fast Minimum-Norm attacks in L1, L2 and L∞.

Each step descends the logit margin along its L2-normalised gradient (step size annealed with a
cosine) and projects onto the ``norm`` ball of radius ε. ε itself is steered towards the
boundary: while adversarial it shrinks by ``(1 − γ)`` (never above the best norm found);
before any adversarial point has been seen it jumps to the current norm plus the linearised
distance to the boundary ``|margin| / ‖∇margin‖_dual`` — but always grows by at least
``(1 + γ)`` (the original can stall short of the boundary when clipping to the box eats the
step, e.g. on MNIST); afterwards it grows by ``(1 + γ)``.
γ is annealed too. The smallest adversarial perturbation seen is kept per sample.
"""

from __future__ import annotations

import torch

from foolkit.attacks.base import DUAL, Attack, Problem, check_count, check_fraction, check_norm, check_positive, cosine, normalize, norm_of, per_sample, project


class FMN(Attack):
    """``norm``: "l1" | "l2" | "linf"; ``steps``; ``alpha_init``/``alpha_final`` (gradient step,
    default final = init/100, an L2 length in the model's own view: ``x`` gets it times the
    model's ``view_scale``); ``gamma_init``/``gamma_final`` (ε factor)."""

    name = "fmn"

    def __init__(self, *, norm: str = "l2", steps: int = 100, alpha_init: float | None = None,
                 alpha_final: float | None = None, gamma_init: float = 0.05, gamma_final: float = 0.001,
                 quantize: bool = True, seed: int = 0):
        self.norm = check_norm(norm, ("l1", "l2", "linf"))
        check_count("steps", steps)
        self.steps = int(steps)
        self.alpha_init = float(alpha_init) if alpha_init is not None else {"l1": 1.0, "l2": 1.0, "linf": 10.0}[norm]
        check_positive("alpha_init", self.alpha_init)
        self.alpha_final = float(alpha_final) if alpha_final is not None else self.alpha_init / 100
        check_positive("alpha_final", self.alpha_final)
        check_fraction("gamma_init", gamma_init)
        check_fraction("gamma_final", gamma_final)
        self.gamma_init = float(gamma_init)
        self.gamma_final = float(gamma_final)
        self.quantize = quantize
        self.seed = seed

    def run(self, p: Problem) -> torch.Tensor:
        x = p.x
        n = len(x)
        delta = torch.zeros_like(x)
        eps = torch.zeros(n, device=x.device)
        best = x.clone()
        best_norm = torch.full((n,), torch.inf, device=x.device)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for i in range(self.steps):
            gamma = cosine(i, self.steps, self.gamma_init, self.gamma_final)
            alpha = cosine(i, self.steps, self.alpha_init, self.alpha_final) * p.scale
            margin, g, logits = p.grad(p.margin, x + delta)
            adv = p.is_adversarial(logits)
            dn = norm_of(delta, self.norm)
            better = adv & (dn < best_norm)
            best = torch.where(per_sample(better, x), x + delta, best)
            best_norm = torch.where(better, dn, best_norm)
            found |= adv
            to_boundary = margin.abs() / norm_of(g, DUAL[self.norm]).clamp_min(1e-12)
            eps = torch.where(adv, torch.minimum(eps * (1 - gamma), best_norm),
                              torch.where(found, eps * (1 + gamma), torch.maximum(dn + to_boundary, eps * (1 + gamma))))
            delta = project(delta - alpha * normalize(g, "l2"), eps, self.norm)
            delta = p.clip(x + delta) - x
        with torch.no_grad():
            adv = p.is_adversarial(p.logits(x + delta))
        dn = norm_of(delta, self.norm)
        better = adv & (dn < best_norm)
        best = torch.where(per_sample(better, x), x + delta, best)
        found = torch.isfinite(best_norm) | better
        return torch.where(per_sample(found, x), best, x + delta)
