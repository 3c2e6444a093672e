"""Polynomial mutation and SBX crossover as fused GPU kernels (Triton), for CUDA devices.

Off the CPU, :mod:`foolkit.evolve.operators` varies every gene and keeps the picked ones
(:func:`~foolkit.evolve.operators.sparse_on`). In torch that is about twenty full-size passes
over the population each (random numbers, the formula step by step, the selection): 32768 LeNet
digits took 6.4 ms to vary on an H100, most of a forward of them. Here each is one pass: a
program reads ``BLOCK`` genes, draws their uniforms in registers (Philox, keyed by a seed drawn
from the run's ``torch.Generator``, so a run is still determined by its seed), applies DEAP's
formula (the same as :func:`~foolkit.evolve.operators.polynomial_step` and
:func:`~foolkit.evolve.operators.sbx_step`) and writes the genes back in place.

``uniforms=`` hands a kernel its random numbers instead (tests: the same numbers through the torch
formula must give the same genes). ``available(device)``: :func:`foolkit.evolve.cppn_fused.available`.
"""

from __future__ import annotations

import torch

from foolkit.evolve.cppn_fused import available, launching_on, philox_seed, triton

__all__ = ["available", "polynomial_", "sbx_"]

if triton is not None:
    import triton.language as tl

BLOCK = 1024
_MIN_EXP = -80.0  # as operators.power: keeps exp clear of float32 denormals


if triton is not None:

    @triton.jit
    def _power(x, p):
        """x ** p for x >= 0 as exp(p ln x), its exponent floored at -80 (operators.power)."""
        return tl.exp(tl.maximum(tl.log(x) * p, -80.0))

    @triton.jit
    def _polynomial_kernel(x_ptr, mask_ptr, rate_ptr, eta_ptr, seed_ptr, u_ptr, n, row_len, rate_value, eta_value,
                           low, up, HAS_MASK: tl.constexpr, RATE_PER_ROW: tl.constexpr, ETA_PER_ROW: tl.constexpr,
                           GIVEN_U: tl.constexpr, BLOCK_N: tl.constexpr):
        offs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        inside = offs < n
        x = tl.load(x_ptr + offs, mask=inside, other=0.0)
        if GIVEN_U:
            u_pick = tl.load(u_ptr + offs, mask=inside, other=1.0)
            u = tl.load(u_ptr + n + offs, mask=inside, other=0.5)
        else:
            u_pick, u, _, _ = tl.rand4x(tl.load(seed_ptr), offs)
        if RATE_PER_ROW:
            rate = tl.load(rate_ptr + offs // row_len, mask=inside, other=0.0)
        else:
            rate = rate_value
        pick = inside & (u_pick < rate)
        if HAS_MASK:
            pick = pick & (tl.load(mask_ptr + offs, mask=inside, other=0) != 0)
        if ETA_PER_ROW:
            eta = tl.load(eta_ptr + offs // row_len, mask=inside, other=1.0)
        else:
            eta = eta_value
        span = up - low
        v = u * 2.0 - 1.0
        side = tl.where(v > 0.0, 1.0, tl.where(v < 0.0, -1.0, 0.0))
        a = tl.abs(v)
        gap = (x - 0.5 * (low + up)) * side / span + 0.5
        r = _power(1.0 - a + a * _power(gap, eta + 1.0), 1.0 / (eta + 1.0))
        new = tl.minimum(tl.maximum(x - span * ((r - 1.0) * side), low), up)
        tl.store(x_ptr + offs, tl.where(pick, new, x), mask=inside)

    @triton.jit
    def _sbx_kernel(a_ptr, b_ptr, seed_ptr, u_ptr, n, row_len, pair_prob, gene_prob, eta, low, up,
                    GIVEN_U: tl.constexpr, BLOCK_N: tl.constexpr):
        offs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        inside = offs < n
        a = tl.load(a_ptr + offs, mask=inside, other=0.0)
        b = tl.load(b_ptr + offs, mask=inside, other=0.0)
        if GIVEN_U:
            u_row = tl.load(u_ptr + offs, mask=inside, other=1.0)
            u_gene = tl.load(u_ptr + n + offs, mask=inside, other=1.0)
            u = tl.load(u_ptr + 2 * n + offs, mask=inside, other=0.5)
            u_swap = tl.load(u_ptr + 3 * n + offs, mask=inside, other=1.0)
        else:
            seed = tl.load(seed_ptr)
            u_gene, u, u_swap, _ = tl.rand4x(seed, offs)
            u_row = tl.rand(seed + 1, offs // row_len)  # one draw per pair of rows: another key
        cross = inside & (u_row < pair_prob) & (u_gene < gene_prob)
        x1 = tl.minimum(a, b)
        x2 = tl.maximum(a, b)
        d = x2 - x1
        dd = tl.maximum(d, 1e-14)
        mid = 0.5 * (x1 + x2)
        # the lower child (room below x1), then the upper one (room above x2)
        alpha = 2.0 - _power(1.0 + 2.0 * (x1 - low) / dd, -(eta + 1.0))
        ua = u * alpha
        bq = _power(tl.maximum(tl.where(ua <= 1.0, ua, 1.0 / (2.0 - ua)), 0.0), 1.0 / (eta + 1.0))
        c1 = tl.minimum(tl.maximum(mid - bq * d * 0.5, low), up)
        alpha = 2.0 - _power(1.0 + 2.0 * (up - x2) / dd, -(eta + 1.0))
        ua = u * alpha
        bq = _power(tl.maximum(tl.where(ua <= 1.0, ua, 1.0 / (2.0 - ua)), 0.0), 1.0 / (eta + 1.0))
        c2 = tl.minimum(tl.maximum(mid + bq * d * 0.5, low), up)
        swap = u_swap <= 0.5
        tl.store(a_ptr + offs, tl.where(cross, tl.where(swap, c2, c1), a), mask=inside)
        tl.store(b_ptr + offs, tl.where(cross, tl.where(swap, c1, c2), b), mask=inside)


def polynomial_(x: torch.Tensor, *, rate: float | torch.Tensor, eta: float | torch.Tensor, low: float, up: float,
                gen: torch.Generator, mask: torch.Tensor | None = None,
                uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~foolkit.evolve.operators.polynomial_mutation_` in one pass, in place (``x``
    contiguous float32). ``rate`` and ``eta``: a number or one per row; ``mask`` broadcastable to
    ``x``; ``uniforms`` ``(2, x.numel())``: pick and step uniforms instead of drawn ones."""
    n = x.numel()
    row_len = n // max(x.shape[0], 1) if x.dim() > 1 else 1
    per_row = {k: isinstance(v, torch.Tensor) for k, v in (("rate", rate), ("eta", eta))}
    for k, v in (("rate", rate), ("eta", eta)):
        if per_row[k] and v.numel() != x.shape[0]:  # type: ignore[union-attr]
            raise ValueError(f"a tensor {k} must hold one value per row")
    rate_t = rate.reshape(-1).float().contiguous() if per_row["rate"] else x  # type: ignore[union-attr]
    eta_t = eta.reshape(-1).float().contiguous() if per_row["eta"] else x  # type: ignore[union-attr]
    mask_t = mask.expand_as(x).contiguous().view(torch.uint8) if mask is not None else x
    seed = philox_seed(gen, x.device) if uniforms is None else x
    if n:
        with launching_on(x.device):
            _polynomial_kernel[(triton.cdiv(n, BLOCK),)](
                x, mask_t, rate_t, eta_t, seed, uniforms if uniforms is not None else x, n, row_len,
                0.0 if per_row["rate"] else float(rate), 0.0 if per_row["eta"] else float(eta),  # type: ignore[arg-type]
                float(low), float(up), HAS_MASK=mask is not None, RATE_PER_ROW=per_row["rate"],
                ETA_PER_ROW=per_row["eta"], GIVEN_U=uniforms is not None, BLOCK_N=BLOCK)
    return x


def sbx_(a: torch.Tensor, b: torch.Tensor, *, eta: float, low: float, up: float, gen: torch.Generator,
         pair_prob: float, gene_prob: float, uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~foolkit.evolve.operators.sbx_crossover_` in one pass, in place (``a``, ``b``
    contiguous float32 of one shape). ``uniforms`` ``(4, a.numel())``: row, gene, step and swap
    uniforms instead of drawn ones (the row uniform read at every gene of the row)."""
    n = a.numel()
    row_len = n // max(a.shape[0], 1) if a.dim() > 1 else 1
    seed = philox_seed(gen, a.device) if uniforms is None else a
    if n:
        with launching_on(a.device):
            _sbx_kernel[(triton.cdiv(n, BLOCK),)](
                a, b, seed, uniforms if uniforms is not None else a, n, row_len, float(pair_prob), float(gene_prob),
                float(eta), float(low), float(up), GIVEN_U=uniforms is not None, BLOCK_N=BLOCK)
    return a, b
