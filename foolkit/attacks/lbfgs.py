"""Szegedy et al. (2014): box-constrained L-BFGS with a search over c.

For each sample, minimise ``c · ‖r‖₂² + loss(x + r)`` subject to ``x + r`` in the box, where
``loss`` is the cross-entropy of the target class (targeted) or ``−log(1 − p_y)`` (untargeted:
the cross-entropy of "any class but y"). The paper words the outer search as finding "the
minimum c"; with c weighting the norm, the *smallest successful r* comes from the *largest* c
that still succeeds, which is what the per-sample bisection (in log space) looks for.

The inner solver is a batched projected L-BFGS in torch (the box handled by projection and
by freezing coordinates held at a bound whose gradient points outward, as in L-BFGS-B): every
sample keeps its own curvature history and its own backtracking line search, all vectorised.
"""

from __future__ import annotations


from collections.abc import Callable

import torch

from foolkit.attacks.base import Attack, Problem, check_count, check_norm, check_positive, per_sample


class LBFGS(Attack):
    """``steps``: L-BFGS iterations per value of c; ``search_steps``: values of c tried;
    ``initial_const``: first c; ``memory``: curvature pairs kept; ``line_search``: backtracking trials."""

    name = "lbfgs"
    norm = "l2"

    def __init__(self, *, norm: str = "l2", steps: int = 50, search_steps: int = 6, initial_const: float = 0.1,
                 memory: int = 10, line_search: int = 6, quantize: bool = True, seed: int = 0):
        check_norm(norm, ("l2",))
        for k, v in (("steps", steps), ("search_steps", search_steps), ("memory", memory), ("line_search", line_search)):
            check_count(k, v)
        check_positive("initial_const", initial_const)
        self.steps = int(steps)
        self.search_steps = int(search_steps)
        self.initial_const = float(initial_const)
        self.memory = int(memory)
        self.line_search = int(line_search)
        self.quantize = quantize
        self.seed = seed

    # objective --------------------------------------------------------------------------------
    def _loss(self, p: Problem, logits: torch.Tensor) -> torch.Tensor:
        if p.targeted:
            return torch.nn.functional.cross_entropy(logits, p.labels, reduction="none")
        others = logits.scatter(1, p.labels.unsqueeze(1), -torch.inf)
        return logits.logsumexp(dim=1) - others.logsumexp(dim=1)  # −log(1 − p_y)

    def run(self, p: Problem) -> torch.Tensor:
        x = p.x
        n = len(x)
        lo, hi = p.bounds
        lower, upper = (lo - x).flatten(1), (hi - x).flatten(1)
        best = x.clone()
        best_l2 = torch.full((n,), torch.inf, device=x.device)
        c = torch.full((n,), self.initial_const, device=x.device)
        c_ok = torch.zeros(n, device=x.device)           # largest c that succeeded
        c_fail = torch.full((n,), torch.inf, device=x.device)  # smallest c that failed
        last = x.clone()

        def evaluate(r: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            """Objective ``(B,)`` (and its gradient) at flat ``r``; records the best adversarial seen."""
            nonlocal best, best_l2
            r = r.detach().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                xa = x + r.view_as(x)
                logits = p.logits(xa)
                l2sq = r.pow(2).sum(dim=1)
                f = c * l2sq + self._loss(p, logits)
                g = torch.autograd.grad(f.sum(), r)[0] if grad else None
            with torch.no_grad():
                l2 = l2sq.detach().sqrt()
                better = p.is_adversarial(logits.detach()) & (l2 < best_l2)
                best = torch.where(per_sample(better, x), xa.detach(), best)
                best_l2 = torch.where(better, l2, best_l2)
            return f.detach(), g

        for _ in range(self.search_steps):
            r = self._minimise(evaluate, torch.zeros(n, x[0].numel(), device=x.device, dtype=x.dtype), lower, upper)
            last = (x + r.view_as(x)).detach()
            with torch.no_grad():  # c succeeds when its minimiser is adversarial (Szegedy et al.'s line search),
                success = p.is_adversarial(p.logits(last))  # whether or not it beats an earlier one
            c_ok = torch.where(success, torch.maximum(c_ok, c), c_ok)
            c_fail = torch.where(success, c_fail, torch.minimum(c_fail, c))
            c = torch.where(torch.isfinite(c_fail), torch.where(c_ok > 0, (c_ok * c_fail).sqrt(), c_fail / 10), c * 10)
        return torch.where(per_sample(torch.isfinite(best_l2), x), best, last)

    @torch.no_grad()
    def _minimise(self, evaluate: Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]],
                  r: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Batched projected L-BFGS from ``r`` ``(B, D)`` within ``[lower, upper]``; ``self.steps`` iterations."""
        b, d = r.shape
        m = self.memory
        S = r.new_zeros(m, b, d)
        Y = r.new_zeros(m, b, d)
        rho = r.new_zeros(m, b)
        f, g = evaluate(r, True)
        for it in range(self.steps):
            free = ~(((r <= lower) & (g > 0)) | ((r >= upper) & (g < 0)))
            q = g * free
            # two-loop recursion over the ring buffer, newest first
            order = [(it - 1 - j) % m for j in range(min(it, m))]
            alphas = []
            for j in order:
                a = rho[j] * (S[j] * q).sum(dim=1)
                q = q - a.unsqueeze(1) * Y[j]
                alphas.append(a)
            if order:
                k = order[0]
                yy = (Y[k] * Y[k]).sum(dim=1)
                gamma = torch.where(rho[k] > 0, 1 / (rho[k] * yy).clamp_min(1e-12), torch.full_like(yy, 1e-3))
            else:
                gamma = 0.1 / g.norm(dim=1).clamp_min(1e-12)  # first step: length 0.1
            q = q * gamma.unsqueeze(1)
            for j, a in zip(reversed(order), reversed(alphas)):
                beta = rho[j] * (Y[j] * q).sum(dim=1)
                q = q + S[j] * (a - beta).unsqueeze(1)
            direction = -q * free
            descent = (direction * g).sum(dim=1) < 0
            direction = torch.where(descent.unsqueeze(1), direction, -g * free)
            # vectorised backtracking (Armijo) with projection onto the box
            t = torch.ones(b, device=r.device, dtype=r.dtype)
            accepted = torch.zeros(b, dtype=torch.bool, device=r.device)
            r_new = r.clone()
            for _ in range(self.line_search):
                trial = torch.minimum(torch.maximum(r + t.unsqueeze(1) * direction, lower), upper)
                f_trial, _ = evaluate(trial, False)
                ok = ~accepted & (f_trial <= f + 1e-4 * (g * (trial - r)).sum(dim=1))
                r_new = torch.where(ok.unsqueeze(1), trial, r_new)
                accepted |= ok
                if bool(accepted.all()):  # every sample has its step: more trials would re-evaluate the same points
                    break
                t = torch.where(accepted, t, t * 0.5)
            f_new, g_new = evaluate(r_new, True)
            s, y = r_new - r, g_new - g
            sy = (s * y).sum(dim=1)
            slot = it % m
            keep = (sy > 1e-10).unsqueeze(1)
            S[slot] = torch.where(keep, s, 0)
            Y[slot] = torch.where(keep, y, 0)
            rho[slot] = torch.where(sy > 1e-10, 1 / sy.clamp_min(1e-10), 0)
            r, f, g = r_new, f_new, g_new
        return r
