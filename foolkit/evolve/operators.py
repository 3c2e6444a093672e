"""Vectorised variation operators: DEAP's bounded polynomial mutation and SBX crossover
(``tools.mutPolynomialBounded`` / ``tools.cxSimulatedBinaryBounded``) applied to whole
populations at once in torch.

The formulas are DEAP's, gene for gene (the tests feed both the same random numbers); only
the loop over genes and individuals is replaced by tensor operations, which is what makes a
population of 256×256×3 genomes affordable. Random numbers come from an explicit
``torch.Generator`` on the genomes' device. As in DEAP, the operators vary their arguments in
place (trailing underscore); the caller hands them copies.

Measured on CPU (torch 2.14), these kernels are several times slower than their alternatives
and the hot paths avoid them: ``torch.where`` (→ :func:`select`), bool → float conversion
(read the mask as ``uint8`` first), ``pow`` (→ :func:`power`), ``nonzero`` and boolean masks
(→ :func:`bernoulli_indices`), ``x[idx]`` / ``x[idx] = v`` (→ ``index_select`` /
``index_copy_``), and broadcast bool ``&`` or any comparison that yields bool (about 0.5 ns an
element, four times a ``uint8`` product read back as bool; ``cppn`` uses the latter). Sorting
a few thousand elements costs 150 µs, so the CPPN render ranks with cumulative counts. The
replacements compute the same values on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from foolkit.evolve import variation_cpu, variation_fused


def sparse_on(device: torch.device) -> bool:
    """Whether variation on ``device`` draws and computes only the genes it picks (sparse) rather
    than every gene, keeping the picked ones (dense). Sparse needs the number of picks on the host:
    on the CPU that costs nothing and saves most of the work. On an accelerator reading a number
    back is a host sync that drains the queue of work (a generation of 200 LeNet digits on an
    H100 synced six times and took three times its forward's time), while a dense pass over
    every gene takes microseconds: no syncs there. Both draw from the same distributions; their
    random streams differ, as the CPU's and a GPU's always do."""
    return device.type == "cpu"


def _fused(x: torch.Tensor) -> bool:
    """Whether the dense variation of ``x`` runs as one fused kernel (CUDA with Triton, float32,
    fewer than 2³¹ genes: :mod:`foolkit.evolve.variation_fused`) rather than as torch passes."""
    return variation_fused.available(x.device) and x.dtype == torch.float32 and x.numel() < 2**31


def compiled_on(x: torch.Tensor) -> bool:
    """Whether the sparse (CPU) variation of ``x`` runs as compiled loops (numba, float32,
    contiguous: :mod:`foolkit.evolve.variation_cpu`) rather than as torch passes."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and variation_cpu.available()


def uniform_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) numbers shaped like ``x``, drawn from ``gen`` (on ``x``'s device)."""
    return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def select(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where(cond, a, b)`` for finite ``a`` and ``b``, as ``lerp`` with 0/1 weights
    (exact: lerp returns its end points exactly). On CPU this is several times faster than
    ``where``, whose kernel does not vectorise, as is reading the bool mask as ``uint8`` before
    converting it (a direct bool → float conversion is ten times slower)."""
    return torch.lerp(b, a, cond.view(torch.uint8).to(a.dtype))


#: smallest exponent :func:`power` passes to ``exp``, a little above where its result stops being a
#: normal number (e^-87.3 in float32): at and below that CPU ``exp`` takes a slow path
_MIN_EXP = {torch.float32: -80.0, torch.bfloat16: -80.0, torch.float64: -700.0}


def power(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """``x ** p`` for ``x >= 0`` as ``exp(p · ln x)``: three times faster than ``pow`` with a
    non-integer or large exponent on CPU. Results below e^-80 (float32; e^-700 in float64) come
    back as e^-80, about 2e-35, so ``0 ** p`` is that for ``p > 0`` (inf for ``p < 0``): ``exp``
    of an argument that underflows takes a slow path on CPU, 25 times slower."""
    lnx_p = torch.log(x) * p
    floor = _MIN_EXP.get(lnx_p.dtype)
    return torch.exp(lnx_p.clamp_(min=floor) if floor is not None else lnx_p)


def polynomial_step(x: torch.Tensor, u: torch.Tensor, *, eta: float | torch.Tensor, low: float, up: float) -> torch.Tensor:
    """Deb's bounded polynomial mutation of every element of ``x`` given uniforms ``u`` (same shape).

    Returns the mutated values, clamped to ``[low, up]`` (DEAP's ``mutPolynomialBounded`` body;
    each branch's power is taken once, on the side ``u`` selects).
    """
    span = up - low
    v = u * 2.0 - 1.0  # DEAP's lower branch is v < 0 (u < 0.5)
    side = v.sign()  # -1 below, +1 above (0 at u = 0.5, where the step is 0 on either side)
    a = v.abs_()  # 1 - s, where s = 2u below and 2(1 - u) above
    gap = (x - 0.5 * (low + up)).mul_(side).mul_(1.0 / span).add_(0.5)  # 1 - δ1 below, 1 - δ2 above
    r = power(torch.addcmul(1.0 - a, a, power(gap, eta + 1.0)), 1.0 / (eta + 1.0))  # (s + (1 - s)·gap^(η+1))^(1/(η+1))
    return torch.add(x, r.sub_(1.0).mul_(side), alpha=-span).clamp_(low, up)  # δq = r - 1 below, 1 - r above


def bernoulli_indices(n: int, p: float, gen: torch.Generator, device: torch.device | str, *,
                      chunk: int | None = None) -> torch.Tensor:
    """Ascending indices of the successes of ``n`` independent Bernoulli(``p``) trials.

    They are drawn from about ``n·p`` random numbers instead of ``n``: the gaps between
    successes are geometric, ``⌊ln U / ln(1 − p)⌋`` failures each. Mutating 10% of 40 million
    ImageNet-sized genes then costs 4 million uniforms, not 40 million plus a mask and a
    ``nonzero`` (which is slow on CPU). One host sync per round: a round draws ``chunk``
    numbers (default: 6 standard deviations more than expected, so one round almost always)."""
    if n <= 0 or p <= 0:
        return torch.empty(0, dtype=torch.long, device=device)
    if p >= 1:
        return torch.arange(n, device=device)
    log_q = math.log1p(-p)
    parts, start = [], 0
    while start < n:
        m = n - start
        k = chunk or int(m * p + 6.0 * math.sqrt(m * p * (1 - p)) + 16)
        u = torch.rand(k, generator=gen, device=device)
        gaps = (torch.log(u) / log_q).floor_().clamp_(max=n).long()  # u = 0 gives +inf: past the end
        pos = torch.cumsum(gaps.add_(1), 0).add_(start - 1)  # ascending
        inside = int(torch.searchsorted(pos, n))  # the one host sync; cheaper than a mask and nonzero
        parts.append(pos[:inside])
        start = n if inside < k else int(pos[-1]) + 1
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _flat(x: torch.Tensor) -> torch.Tensor:
    if not x.is_contiguous():
        raise ValueError("in-place variation needs a contiguous tensor")
    return x.view(-1)


def polynomial_mutation_(x: torch.Tensor, *, rate: float | torch.Tensor, eta: float | torch.Tensor, low: float,
                         up: float, gen: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mutate each gene of the batch ``x`` (contiguous, any shape) with probability ``rate``, in
    place (DEAP's convention: vary copies); returns ``x``.

    ``rate`` may be a tensor of one value per row (per individual; the CPU picks genes at the
    highest and keeps each with its row's share of it). ``eta`` may be a tensor broadcastable to
    ``x`` (per-individual values). ``mask`` (bool, broadcastable to ``x``) restricts which genes
    may mutate at all (e.g. enabled CPPN connections). On the CPU only the picked genes are drawn
    and computed (about ``rate`` of them; compiled, :mod:`foolkit.evolve.variation_cpu`, with
    numba); elsewhere every gene is, without a host sync (:func:`sparse_on`).
    """
    flat = _flat(x)
    rows = x.shape[0] if x.dim() > 1 else 0
    if isinstance(rate, torch.Tensor) and rate.numel() != rows:
        raise ValueError("a tensor rate must hold one value per row")
    if not sparse_on(x.device):
        if _fused(x):
            return variation_fused.polynomial_(x, rate=rate, eta=eta, low=low, up=up, gen=gen, mask=mask)
        if isinstance(rate, torch.Tensor):
            rate = rate.reshape(-1, *(1,) * (x.dim() - 1))
        pick = uniform_like(x, gen) < rate
        if mask is not None:
            pick &= mask
        if isinstance(eta, torch.Tensor) and eta.numel() == x.shape[0] and x.dim() > 1:  # per individual
            eta = eta.reshape(-1, *(1,) * (x.dim() - 1))
        return x.copy_(select(pick, polynomial_step(x, uniform_like(x, gen), eta=eta, low=low, up=up), x))
    if compiled_on(x):
        return variation_cpu.polynomial_(x, rate=rate, eta=eta, low=low, up=up, gen=gen, mask=mask)
    top = float(rate.max()) if isinstance(rate, torch.Tensor) else rate  # (the CPU: no sync to speak of)
    if mask is None:
        pick = bernoulli_indices(flat.numel(), top, gen, x.device)
    else:  # only the genes the mask allows are tried (few, when it is sparse)
        # numpy's nonzero: four times faster than torch's on CPU (23 against 96 µs on 88k CPPN edges)
        among = torch.from_numpy(np.flatnonzero(mask.expand_as(x).reshape(-1).numpy()))
        pick = among.index_select(0, bernoulli_indices(among.numel(), top, gen, x.device))
    row_len = flat.numel() // max(rows, 1)
    if isinstance(rate, torch.Tensor) and pick.numel():  # thinned to each row's rate
        share = (rate.reshape(-1).float() / top).index_select(0, torch.div(pick, row_len, rounding_mode="floor"))
        pick = pick[torch.rand(pick.numel(), generator=gen, device=x.device) < share]
    values = flat.index_select(0, pick)  # index_select / index_copy_: several times faster than x[idx] on CPU
    eta_v: float | torch.Tensor = eta
    if isinstance(eta, torch.Tensor) and eta.numel() == x.shape[0] and x.dim() > 1:  # per individual: by row,
        eta_v = eta.reshape(-1).index_select(0, torch.div(pick, row_len, rounding_mode="floor"))
    elif isinstance(eta, torch.Tensor):  # without a population-sized copy of it
        eta_v = eta.expand_as(x).reshape(-1).index_select(0, pick)
    flat.index_copy_(0, pick, polynomial_step(values, uniform_like(values, gen), eta=eta_v, low=low, up=up))
    return x


def sbx_step(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, swap: torch.Tensor, *, eta: float, low: float,
             up: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded simulated binary crossover of every gene pair ``(a, b)`` given uniforms ``u`` and
    ``swap`` (bool: which child goes to which parent), DEAP's ``cxSimulatedBinaryBounded`` body.

    Equal genes come back unchanged, as in DEAP (which skips pairs closer than 1e-14; here such
    a pair comes back as its midpoint, less than 1e-14 away).
    """
    x1 = torch.minimum(a, b)
    x2 = torch.maximum(a, b)
    d = x2 - x1
    # β of the lower child (room below x1) and of the upper child (room above x2), in one stacked pass
    beta = torch.stack([x1 - low, up - x2]).div_(d.clamp_min(1e-14)).mul_(2.0).add_(1.0)
    alpha = 2.0 - power(beta, -(eta + 1.0))
    ua = u * alpha  # u <= 1 / α  ⇔  u·α <= 1, as α is in [1, 2)
    beta_q = power(select(ua <= 1.0, ua, 1.0 / (2.0 - ua)).clamp_min(0), 1.0 / (eta + 1.0))
    spread = beta_q.mul_(d).mul_(0.5)  # 0 for equal genes
    mid = 0.5 * (x1 + x2)
    c1 = (mid - spread[0]).clamp_(low, up)
    c2 = (mid + spread[1]).clamp_(low, up)
    s = swap.view(torch.uint8).to(c1.dtype)  # lerp with a 0/1 weight returns an end point exactly
    return torch.lerp(c1, c2, s), torch.lerp(c2, c1, s)


def sbx_crossover_(a: torch.Tensor, b: torch.Tensor, *, eta: float, low: float, up: float, gen: torch.Generator,
                   pair_prob: float = 0.5, gene_prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross the batches ``a`` and ``b`` (contiguous, same shape ``(P, ...)``) pairwise, in place:
    each pair crosses with probability ``pair_prob``, and then each gene with probability
    ``gene_prob`` (DEAP's 0.5). Returns ``(a, b)``; only the crossing genes of the crossing pairs
    are drawn and computed on the CPU (compiled with numba: :mod:`foolkit.evolve.variation_cpu`);
    elsewhere every gene is, without a host sync (:func:`sparse_on`)."""
    _flat(a), _flat(b)
    if a.shape[0] == 0:
        return a, b
    if not sparse_on(a.device):
        if _fused(a) and a.shape == b.shape and b.dtype == a.dtype:
            return variation_fused.sbx_(a, b, eta=eta, low=low, up=up, gen=gen, pair_prob=pair_prob, gene_prob=gene_prob)
        rows = torch.rand(a.shape[0], generator=gen, device=a.device) < pair_prob
        cross = (uniform_like(a, gen) < gene_prob) & rows.view(-1, *(1,) * (a.dim() - 1))
        ca, cb = sbx_step(a, b, uniform_like(a, gen), uniform_like(a, gen) <= 0.5, eta=eta, low=low, up=up)
        ca, cb = select(cross, ca, a), select(cross, cb, b)
        return a.copy_(ca), b.copy_(cb)
    if compiled_on(a) and a.shape == b.shape and b.dtype == a.dtype and b.is_contiguous():
        return variation_cpu.sbx_(a, b, eta=eta, low=low, up=up, gen=gen, pair_prob=pair_prob, gene_prob=gene_prob)
    rows = (torch.rand(a.shape[0], generator=gen, device=a.device) < pair_prob).nonzero().flatten()
    if rows.numel() == 0:
        return a, b
    pa, pb = a.index_select(0, rows).view(-1), b.index_select(0, rows).view(-1)
    genes = bernoulli_indices(pa.numel(), gene_prob, gen, a.device)
    ga, gb = pa.index_select(0, genes), pb.index_select(0, genes)
    u = uniform_like(ga, gen)
    swap = uniform_like(ga, gen) <= 0.5
    ca, cb = sbx_step(ga, gb, u, swap, eta=eta, low=low, up=up)
    a.index_copy_(0, rows, pa.index_copy_(0, genes, ca).view(-1, *a.shape[1:]))
    b.index_copy_(0, rows, pb.index_copy_(0, genes, cb).view(-1, *b.shape[1:]))
    return a, b
