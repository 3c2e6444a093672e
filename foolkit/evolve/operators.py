"""Vectorised variation operators: DEAP's bounded polynomial mutation and SBX crossover
(``tools.mutPolynomialBounded`` / ``tools.cxSimulatedBinaryBounded``) applied to whole
populations at once in torch.

The formulas are DEAP's, gene for gene (the tests feed both the same random numbers); only
the loop over genes and individuals is replaced by tensor operations, which is what makes a
population of 256×256×3 genomes affordable. Random numbers come from an explicit
``torch.Generator`` on the genomes' device.
"""

from __future__ import annotations

import torch


def uniform_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) numbers shaped like ``x``, drawn from ``gen`` (on ``x``'s device)."""
    return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def polynomial_step(x: torch.Tensor, u: torch.Tensor, *, eta: float | torch.Tensor, low: float, up: float) -> torch.Tensor:
    """Deb's bounded polynomial mutation of every element of ``x`` given uniforms ``u`` (same shape).

    Returns the mutated values, clamped to ``[low, up]`` (DEAP's ``mutPolynomialBounded`` body).
    """
    span = up - low
    d1 = (x - low) / span
    d2 = (up - x) / span
    mut_pow = 1.0 / (eta + 1.0)
    lower = u < 0.5
    val_lo = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - d1) ** (eta + 1)
    val_hi = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - d2) ** (eta + 1)
    delta_q = torch.where(lower, val_lo.clamp_min(0) ** mut_pow - 1.0, 1.0 - val_hi.clamp_min(0) ** mut_pow)
    return (x + delta_q * span).clamp(low, up)


def polynomial_mutation(x: torch.Tensor, *, rate: float | torch.Tensor, eta: float | torch.Tensor, low: float,
                        up: float, gen: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mutate each gene of the batch ``x`` (any shape) with probability ``rate``; returns a new tensor.

    ``mask`` (broadcastable bool) restricts which genes may mutate at all (e.g. enabled CPPN
    connections). ``rate`` and ``eta`` may be tensors broadcastable to ``x`` (per-individual
    values). Only the picked genes are computed (about ``rate`` of them).
    """
    pick = uniform_like(x, gen) < rate
    if mask is not None:
        pick = pick & mask
    values = x[pick]
    eta_v = eta.expand_as(x)[pick] if isinstance(eta, torch.Tensor) else eta
    out = x.clone()
    out[pick] = polynomial_step(values, uniform_like(values, gen), eta=eta_v, low=low, up=up)
    return out


def sbx_step(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, swap: torch.Tensor, *, eta: float, low: float,
             up: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded simulated binary crossover of every gene pair ``(a, b)`` given uniforms ``u`` and
    ``swap`` (bool: which child goes to which parent), DEAP's ``cxSimulatedBinaryBounded`` body.

    Pairs closer than 1e-14 are returned unchanged.
    """
    x1 = torch.minimum(a, b)
    x2 = torch.maximum(a, b)
    differ = (x2 - x1) > 1e-14
    diff = torch.where(differ, x2 - x1, torch.ones_like(x1))

    def beta_q(beta: torch.Tensor) -> torch.Tensor:
        alpha = 2.0 - beta ** -(eta + 1)
        ua = u * alpha
        return torch.where(u <= 1.0 / alpha, ua.clamp_min(0) ** (1.0 / (eta + 1)),
                           (1.0 / (2.0 - ua)).clamp_min(0) ** (1.0 / (eta + 1)))

    c1 = 0.5 * (x1 + x2 - beta_q(1.0 + 2.0 * (x1 - low) / diff) * (x2 - x1))
    c2 = 0.5 * (x1 + x2 + beta_q(1.0 + 2.0 * (up - x2) / diff) * (x2 - x1))
    c1 = c1.clamp(low, up)
    c2 = c2.clamp(low, up)
    new_a = torch.where(swap, c2, c1)
    new_b = torch.where(swap, c1, c2)
    return torch.where(differ, new_a, a), torch.where(differ, new_b, b)


def sbx_crossover(a: torch.Tensor, b: torch.Tensor, *, eta: float, low: float, up: float, gen: torch.Generator,
                  pair_prob: float = 0.5, gene_prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross the batches ``a`` and ``b`` (same shape ``(P, ...)``) pairwise: each pair crosses with
    probability ``pair_prob``, and then each gene with probability ``gene_prob`` (DEAP's 0.5).
    Returns two new tensors; only the crossing pairs are computed."""
    a, b = a.clone(), b.clone()
    if a.shape[0] == 0:
        return a, b
    rows = (torch.rand(a.shape[0], generator=gen, device=a.device) < pair_prob).nonzero().flatten()
    if rows.numel() == 0:
        return a, b
    pa, pb = a[rows], b[rows]
    gene = uniform_like(pa, gen) < gene_prob
    u = uniform_like(pa, gen)
    swap = uniform_like(pa, gen) <= 0.5
    ca, cb = sbx_step(pa, pb, u, swap, eta=eta, low=low, up=up)
    a[rows] = torch.where(gene, ca, pa)
    b[rows] = torch.where(gene, cb, pb)
    return a, b
