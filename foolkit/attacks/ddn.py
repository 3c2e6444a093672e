"""DDN (Rony et al. 2019): Decoupling Direction and Norm, a minimum-L2 attack.

Each step moves along the normalised gradient of the cross-entropy (step size annealed with a
cosine), then rescales the perturbation onto an L2 sphere of radius ε, and ε shrinks by
``(1 − γ)`` while the point is adversarial and grows by ``(1 + γ)`` while it is not. The
smallest adversarial perturbation seen is kept per sample.
"""

from __future__ import annotations

import torch

from foolkit.attacks.base import Attack, Problem, check_count, check_fraction, check_norm, check_positive, cosine, normalize, norm_of, per_sample, to_grid


class DDN(Attack):
    """``steps``: iterations; ``init_epsilon``: first sphere radius; ``gamma``: radius factor
    (cosine-annealed to ``gamma_final`` when given, which lands closer to the boundary);
    ``step_size``/``final_step_size``: cosine-annealed gradient step length (L2); ``loss``: "ce"
    (the paper) or "margin" (logit difference); ``grid``: round every iterate to the 8-bit grid,
    as the DDN paper does, so the best adversarial kept is one that survives saving. The radius
    and step lengths are those of the model's own view: ``x`` gets them times the model's
    ``view_scale`` (:attr:`Problem.scale`)."""

    name = "ddn"
    norm = "l2"

    def __init__(self, *, norm: str = "l2", steps: int = 100, init_epsilon: float = 1.0, gamma: float = 0.05,
                 gamma_final: float | None = None, step_size: float = 1.0, final_step_size: float = 0.01,
                 loss: str = "ce", grid: bool = False, quantize: bool = True, seed: int = 0):
        check_norm(norm, ("l2",))
        check_count("steps", steps)
        check_positive("init_epsilon", init_epsilon)
        check_positive("step_size", step_size)
        check_fraction("gamma", gamma)
        if gamma_final is not None:
            check_fraction("gamma_final", gamma_final)
        check_positive("final_step_size", final_step_size)
        self.steps = int(steps)
        self.init_epsilon = float(init_epsilon)
        self.gamma = float(gamma)
        self.gamma_final = float(gamma_final) if gamma_final is not None else self.gamma
        self.step_size = float(step_size)
        self.final_step_size = float(final_step_size)
        if loss not in ("ce", "margin"):
            from foolkit.errors import FoolkitError
            raise FoolkitError(f"loss must be 'ce' or 'margin', got {loss!r}")
        self.loss = loss
        self.grid = bool(grid)
        self.quantize = quantize
        self.seed = seed

    def run(self, p: Problem) -> torch.Tensor:
        x = p.x
        n = len(x)
        delta = torch.zeros_like(x)
        eps = torch.full((n,), self.init_epsilon * p.scale, device=x.device)
        best = x.clone()
        best_l2 = torch.full((n,), torch.inf, device=x.device)
        objective = p.gain if self.loss == "ce" else (lambda logits: -p.margin(logits))
        for i in range(self.steps):
            alpha = cosine(i, self.steps, self.step_size, self.final_step_size) * p.scale
            gamma = cosine(i, self.steps, self.gamma, self.gamma_final)
            _, g, logits = p.grad(objective, x + delta)
            adv = p.is_adversarial(logits)
            l2 = norm_of(delta, "l2")
            better = adv & (l2 < best_l2)
            best = torch.where(per_sample(better, x), x + delta, best)
            best_l2 = torch.where(better, l2, best_l2)
            eps = torch.minimum(torch.where(adv, eps * (1 - gamma), eps * (1 + gamma)), best_l2)
            delta = delta + alpha * normalize(g, "l2")
            delta = delta * per_sample(eps / norm_of(delta, "l2").clamp_min(1e-12), delta)
            delta = p.clip(x + delta) - x
            if self.grid:
                delta = to_grid(x + delta, x, p.bounds, "nearest") - x
        with torch.no_grad():
            adv = p.is_adversarial(p.logits(x + delta))
        l2 = norm_of(delta, "l2")
        better = adv & (l2 < best_l2)
        best = torch.where(per_sample(better, x), x + delta, best)
        found = torch.isfinite(best_l2) | better
        return torch.where(per_sample(found, x), best, x + delta)
