"""Polynomial mutation, SBX crossover and the smooth mutation as compiled loops (numba), for the CPU.

:mod:`foolkit.evolve.operators` on the CPU draws and computes only the genes it picks, in torch:
about twenty small passes for a mutation and thirty for a crossover, and about 60,000 random
numbers a generation of 200 LeNet digits from torch's CPU generator (4 ns each). Small torch
operations cost twice as much right after a model's forward (see :mod:`foolkit.evolve.cppn_cpu`),
so in the generation loop variation took 2.2 ms of a direct LeNet generation beside a 14 ms
forward. Here each operator is one compiled function: it picks genes by geometric gaps (about
``rate`` of them, as :func:`~foolkit.evolve.operators.bernoulli_indices`), draws every number
from a counter-based generator (splitmix64, keyed by a number drawn from the run's
``torch.Generator``, so a run is still determined by its seed), gathers the picked genes and
applies DEAP's formula to them (:func:`~foolkit.evolve.operators.polynomial_step`,
:func:`~foolkit.evolve.operators.sbx_step`) with a float32 logarithm and exponential written so
the loops vectorise (within 1e-6 relative of float64), and writes them back.

``uniforms=`` hands a kernel the step's random numbers instead (tests: the same numbers through
the torch formula must give the same genes). ``available()``: :func:`foolkit.evolve.cppn_cpu.available`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from foolkit.evolve.cppn_cpu import EXP_MIN, HALF, LN2_A, LN2_B, ONE, TWO, ZERO, available, f32, key_from, numba

if numba is not None:
    from foolkit.evolve.cppn_cpu import _cos, _exp_parts, _jit, _mix, _sin, _uniform

__all__ = ["available", "polynomial_", "sbx_", "smooth_"]

SQRT2, THIRD_, FIFTH, SEVENTH, NINTH = f32(math.sqrt(2.0)), f32(1 / 3), f32(1 / 5), f32(1 / 7), f32(1 / 9)
EXP_MAX = f32(80.0)
PI, TWO_PI = f32(math.pi), f32(2 * math.pi)
# counter streams of the generator: a number's counter is (stream << 56) | its index
PICK, STEP, ROWS, SWAP, IMAGES, GRIDS, THIN = (np.uint64(s << 56) for s in range(1, 8))


if numba is not None:

    @numba.njit(inline="always", fastmath={"contract"})
    def _log_all(x, out, ints):
        """``out = ln x`` elementwise for float32 ``x >= 0`` (0 gives about -88); ``ints``: int32 scratch."""
        bits = x.view(np.int32)
        mant = ints.view(np.float32)
        for i in range(x.size):  # x = m · 2^e, m in [1, 2): the exponent, and m through its bits
            out[i] = np.float32(((bits[i] >> np.int32(23)) & np.int32(255)) - np.int32(127))
            ints[i] = (bits[i] & np.int32(0x7FFFFF)) | np.int32(0x3F800000)
        for i in range(x.size):
            big = mant[i] > SQRT2  # then halve m: m in [√½, √2), ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172
            m = mant[i] * (HALF if big else ONE)
            e = out[i] + (ONE if big else ZERO)
            s = (m - ONE) / (m + ONE)
            s2 = s * s
            lm = TWO * s * (ONE + s2 * (THIRD_ + s2 * (FIFTH + s2 * (SEVENTH + s2 * NINTH))))
            out[i] = e * LN2_A + (e * LN2_B + lm)

    @numba.njit(inline="always", fastmath={"contract"})
    def _power_all(x, p, out, ints):
        """``out = x ** p`` elementwise (``x >= 0``) as ``exp(p ln x)``, the exponent kept in
        [-80, 80] (operators.power's floor: 0 ** p is about 2e-35 for p > 0)."""
        _log_all(x, out, ints)
        scale = ints.view(np.float32)
        for i in range(x.size):
            poly, b = _exp_parts(min(max(p[i] * out[i], EXP_MIN), EXP_MAX))
            out[i], ints[i] = poly, b
        for i in range(x.size):
            out[i] *= scale[i]

    @numba.njit(inline="always")
    def _picks(key, stream, start, n, log_q, found, m, u, lg, ints):
        """Append to ``found[m:]`` the successes among Bernoulli trials ``start .. start + n - 1``
        whose failure probability has logarithm ``log_q``: geometric gaps, ⌊ln U / ln q⌋ failures
        before each, their uniforms drawn and logged ``u.size`` at a time (vectorised). Returns
        the new count. The trials' numbers come from a key of their own (``start`` keys it)."""
        sub = _mix(key, stream | np.uint64(start))
        pos, end, k = start - 1, start + n, 0
        inv = np.float32(1.0 / log_q)
        while True:
            for i in range(u.size):
                u[i] = _uniform(sub, np.uint64(k + i))
            _log_all(u, lg, ints)
            for i in range(u.size):
                if u[i] == ZERO:  # a gap of +inf: past the end
                    return m
                pos += 1 + np.int64(lg[i] * inv)  # ln U / ln q >= 0: truncation is the floor
                if pos >= end:
                    return m
                found[m] = pos
                m += 1
            k += u.size

    @numba.njit(inline="always")
    def _step_uniforms(key, found, m, given_u, u):
        """``u[j]``: the step uniform of gene ``found[j]``: given, or drawn on its own counter."""
        if given_u.size:
            for j in range(m):
                u[j] = given_u[found[j]]
        else:
            for j in range(m):
                u[j] = _uniform(key, STEP | np.uint64(found[j]))

    @numba.njit(inline="always")
    def _chunk(n, p):
        """Uniforms to draw at a time for ``n`` trials of probability ``p``: most often all in one go."""
        return max(16, min(4096, int(n * p + 6.0 * math.sqrt(n * p * (1.0 - p)) + 16.0)))

    @_jit(nogil=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
    def _polynomial(x, mask, keeps, row_len, etas, per, key, rate, eta, low, up, given_u):  # pragma: no cover - compiled
        n = x.size
        found = np.empty(n, np.int64)
        if rate >= 1.0:
            found[:] = np.arange(n)
            m = n
        elif not rate > 0.0:  # no gene (ln(1 - 0) = 0 would make the gaps infinite)
            m = 0
        else:
            c = _chunk(n, rate)
            m = _picks(key, PICK, 0, n, math.log1p(-rate), found, 0, np.empty(c, np.float32),
                       np.empty(c, np.float32), np.empty(c, np.int32))
        if mask.size > 1:  # the mask: genes that may mutate at all
            k = 0
            for j in range(m):
                found[k] = found[j]
                k += mask[found[j]]
            m = k
        if keeps.size:  # per-row rates: picked at the highest, gene g kept with probability keeps[g // row_len]
            k = 0
            for j in range(m):
                found[k] = found[j]
                k += _uniform(key, THIN | np.uint64(found[j])) < keeps[found[j] // row_len]
            m = k
        v, u, p, t, q = (np.empty(m, np.float32), np.empty(m, np.float32), np.empty(m, np.float32),
                         np.empty(m, np.float32), np.empty(m, np.float32))
        ints = np.empty(m, np.int32)
        span, mid = up - low, HALF * (low + up)
        for j in range(m):  # simple loops, each its own: they vectorise
            v[j] = x[found[j]]
        _step_uniforms(key, found, m, given_u, u)
        if etas.size:  # gene g's η is etas[g // per]
            for j in range(m):
                p[j] = etas[found[j] // per] + ONE
        else:
            for j in range(m):
                p[j] = eta + ONE
        # DEAP's step: r = (1 - a + a gap^(η+1))^(1/(η+1)), a = |2u - 1|, gap = 1 - δ on u's side
        for j in range(m):
            side = ONE if u[j] > HALF else (-ONE if u[j] < HALF else ZERO)
            t[j] = max((v[j] - mid) * side / span + HALF, ZERO)
        _power_all(t, p, q, ints)  # (separate in and out arrays: the loops vectorise)
        for j in range(m):
            a = abs(TWO * u[j] - ONE)
            t[j] = ONE - a + a * q[j]
            p[j] = ONE / p[j]
        _power_all(t, p, q, ints)
        for j in range(m):
            side = ONE if u[j] > HALF else (-ONE if u[j] < HALF else ZERO)
            x[found[j]] = min(max(v[j] - span * ((q[j] - ONE) * side), low), up)

    @_jit(nogil=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
    def _sbx(a, b, row_len, key, pair_prob, gene_prob, eta, low, up, given_u):  # pragma: no cover - compiled
        rows = a.size // row_len
        found = np.empty(a.size, np.int64)
        m = 0
        log_q = math.log1p(-gene_prob) if gene_prob < 1.0 else 0.0
        c = _chunk(row_len, gene_prob) if gene_prob < 1.0 else 1
        cu, clg, cints = np.empty(c, np.float32), np.empty(c, np.float32), np.empty(c, np.int32)
        for r in range(rows):
            if _uniform(key, ROWS | np.uint64(r)) < pair_prob:
                if gene_prob >= 1.0:
                    for g in range(r * row_len, (r + 1) * row_len):
                        found[m] = g
                        m += 1
                elif gene_prob > 0.0:  # (ln(1 - 0) = 0 would make the gaps infinite)
                    m = _picks(key, PICK, r * row_len, row_len, log_q, found, m, cu, clg, cints)
        x1, x2, u, bl, bu, p, q = (np.empty(m, np.float32), np.empty(m, np.float32), np.empty(m, np.float32),
                                   np.empty(m, np.float32), np.empty(m, np.float32), np.empty(m, np.float32),
                                   np.empty(m, np.float32))
        ints = np.empty(m, np.int32)
        _step_uniforms(key, found, m, given_u, u)
        for j in range(m):
            g = found[j]
            x1[j], x2[j] = min(a[g], b[g]), max(a[g], b[g])
            d = max(x2[j] - x1[j], f32(1e-14))
            bl[j] = ONE + TWO * (x1[j] - low) / d  # β of the lower child (room below x1), of the upper (above x2)
            bu[j] = ONE + TWO * (up - x2[j]) / d
            p[j] = -(eta + ONE)
        for beta in (bl, bu):  # α = 2 - β^-(η+1); β_q = (u α <= 1 ? u α : 1 / (2 - u α))^(1/(η+1))
            _power_all(beta, p, q, ints)
            for j in range(m):
                ua = u[j] * (TWO - q[j])
                q[j] = ua if ua <= ONE else ONE / (TWO - ua)
            for j in range(m):
                p[j] = ONE / (eta + ONE)
            _power_all(q, p, beta, ints)
            for j in range(m):
                p[j] = -(eta + ONE)
        for j in range(m):
            g = found[j]
            d, mid = x2[j] - x1[j], HALF * (x1[j] + x2[j])
            c1 = min(max(mid - bl[j] * d * HALF, low), up)
            c2 = min(max(mid + bu[j] * d * HALF, low), up)
            swap = (given_u[a.size + g] if given_u.size else _uniform(key, SWAP | np.uint64(g))) <= HALF
            a[g], b[g] = (c2, c1) if swap else (c1, c2)


    @_jit(nogil=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
    def _smooth(x, key, prob, sigma, sigmas, cells, bh, bw):  # pragma: no cover - compiled
        P, C, H, W = x.shape
        K, G = bh.shape[0], bh.shape[2]
        pairs = (G * G + 1) // 2
        u = np.empty(pairs, np.float32)
        lg = np.empty(pairs, np.float32)
        ints = np.empty(pairs, np.int32)
        grid = np.empty((G, G), np.float32)
        tmp = np.empty((G, W), np.float32)
        for p in range(P):
            if _uniform(key, IMAGES | np.uint64(2 * p)) >= prob:
                continue
            which = min(np.int64(_uniform(key, IMAGES | np.uint64(2 * p + 1)) * np.float32(K)), K - 1)
            g = cells[which]
            m = (g * g + 1) // 2
            std = sigmas[p] if sigmas.size else sigma
            for c in range(C):
                # Gaussian grid values, std sigma: Box-Muller, both of a pair's normals (the float32
                # logarithm of the polynomial mutation, the render's sine and cosine)
                first = np.uint64(2 * pairs * (p * C + c))
                for i in range(m):
                    u[i] = ONE - _uniform(key, GRIDS | (first + np.uint64(2 * i)))  # in (0, 1]
                _log_all(u[:m], lg[:m], ints[:m])
                for i in range(m):  # grid value k at row k // g, column k % g
                    radius = std * np.sqrt(-TWO * lg[i])
                    angle = TWO_PI * _uniform(key, GRIDS | (first + np.uint64(2 * i + 1))) - PI
                    grid[(2 * i) // g, (2 * i) % g] = radius * _cos(angle)
                    if 2 * i + 1 < g * g:
                        grid[(2 * i + 1) // g, (2 * i + 1) % g] = radius * _sin(angle)
                for a in range(g):  # grid @ bw[which]ᵀ, then bh[which] @ that: the bilinear upsampling
                    for j in range(W):
                        tmp[a, j] = ZERO
                    for b in range(g):
                        v = grid[a, b]
                        for j in range(W):
                            tmp[a, j] += v * bw[which, j, b]
                for i in range(H):
                    row = x[p, c, i]
                    for a in range(g):
                        v = bh[which, i, a]
                        if v != ZERO:  # bilinear: two of a row's weights are not 0
                            for j in range(W):
                                row[j] += v * tmp[a, j]
                    for j in range(W):
                        row[j] = min(max(row[j], ZERO), ONE)


_NONE_F = np.empty(0, np.float32)
_ALL = np.ones(1, np.bool_)


def polynomial_(x: torch.Tensor, *, rate: float | torch.Tensor, eta: float | torch.Tensor, low: float, up: float,
                gen: torch.Generator, mask: torch.Tensor | None = None,
                uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~foolkit.evolve.operators.polynomial_mutation_` on the CPU, in place (``x``
    contiguous float32). ``rate``: a number or one per row; ``eta``: a number or a tensor
    broadcastable to ``x``; ``mask`` broadcastable to ``x``; ``uniforms`` ``(x.numel(),)``: the
    step's uniforms instead of drawn ones (the picks are drawn)."""
    flat = x.view(-1).numpy()
    rows = x.shape[0] if x.dim() > 1 else 0
    etas, per = _NONE_F, 1
    if isinstance(eta, torch.Tensor):  # one per genome is kept as it is; any other shape is spread over x
        if eta.numel() == 1 or (eta.numel() == rows and eta.shape[0] == rows):
            etas, per = eta.detach().reshape(-1).float().contiguous().numpy(), max(1, flat.size // eta.numel())
        else:
            etas = eta.detach().float().expand_as(x).contiguous().view(-1).numpy()
    keeps = _NONE_F
    if isinstance(rate, torch.Tensor):  # per row: the genes picked at the highest rate, thinned row by row
        if rate.numel() != rows:
            raise ValueError("a tensor rate must hold one value per row")
        rates = rate.detach().reshape(-1).float().clamp(0.0, 1.0)
        top = float(rates.max()) if rows else 0.0
        keeps, rate = (rates / max(top, 1e-30)).contiguous().numpy(), top
    mask_np = mask.expand_as(x).reshape(-1).numpy() if mask is not None else _ALL
    given = uniforms.reshape(-1).float().contiguous().numpy() if uniforms is not None else _NONE_F
    _polynomial(flat, mask_np, keeps, max(1, flat.size // max(rows, 1)), etas, per, key_from(gen), float(rate),
                f32(eta if not isinstance(eta, torch.Tensor) else 0.0), f32(low), f32(up), given)
    return x


def sbx_(a: torch.Tensor, b: torch.Tensor, *, eta: float, low: float, up: float, gen: torch.Generator,
         pair_prob: float = 0.5, gene_prob: float = 0.5,
         uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~foolkit.evolve.operators.sbx_crossover_` on the CPU, in place (``a``, ``b``
    contiguous float32 of one shape ``(P, ...)``); ``uniforms`` ``(2, a.numel())``: each gene's
    step and swap uniforms instead of drawn ones (the rows and genes that cross are drawn)."""
    row_len = max(1, a.numel() // max(1, a.shape[0]))
    given = uniforms.reshape(-1).float().contiguous().numpy() if uniforms is not None else _NONE_F
    _sbx(a.view(-1).numpy(), b.view(-1).numpy(), row_len, key_from(gen), float(pair_prob), float(gene_prob),
         f32(eta), f32(low), f32(up), given)
    return a, b


def smooth_(x: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor, *, prob: float, sigma: float | torch.Tensor,
            cells: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """:func:`~foolkit.evolve.encodings.smooth_mutation_` on the CPU, in place (``x`` ``(P, C, H, W)``
    contiguous float32): each image picked with probability ``prob`` gets Gaussian noise (std
    ``sigma``, a number or one per image) on a ``g × g`` grid, ``g`` drawn from ``cells``, upsampled
    by the bilinear matrices ``bh`` ``(K, H, G)`` and ``bw`` ``(K, W, G)`` of the ``K`` cell sizes
    (zero-padded to the largest, ``G``), added and clamped to [0, 1]. One compiled loop over the images."""
    sigmas = _NONE_F
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != x.shape[0]:
            raise ValueError("a tensor sigma must hold one value per image")
        sigmas, sigma = sigma.detach().reshape(-1).float().contiguous().numpy(), 0.0
    _smooth(x.numpy(), key_from(gen), f32(prob), f32(sigma), sigmas, np.array(cells, dtype=np.int64),
            bh.contiguous().numpy(), bw.contiguous().numpy())
    return x
