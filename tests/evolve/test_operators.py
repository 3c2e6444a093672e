"""The vectorised operators reproduce DEAP's bounded polynomial mutation and SBX gene for gene
when fed the same random numbers."""

from __future__ import annotations

import math
import random

import pytest
import torch
from deap import tools

from foolkit.evolve.operators import (bernoulli_indices, polynomial_mutation_, polynomial_step, power, sbx_crossover_,
                                      sbx_step, select)


class _Feed:
    """Stands in for ``random.random`` and returns prepared numbers."""

    def __init__(self, values: list[float]):
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize("eta", [15.0, 2.0])
def test_polynomial_matches_deap(monkeypatch: pytest.MonkeyPatch, eta: float) -> None:
    rng = random.Random(0)
    xs = [rng.random() for _ in range(200)] + [0.0, 1.0]
    us = [rng.random() for _ in xs]
    feed = []
    for u in us:
        feed += [0.0, u]  # indpb check passes, then the mutation's uniform
    monkeypatch.setattr("deap.tools.mutation.random.random", _Feed(feed))
    expect, = tools.mutPolynomialBounded(list(xs), eta=eta, low=0.0, up=1.0, indpb=1.0)
    got = polynomial_step(torch.tensor(xs, dtype=torch.float64), torch.tensor(us, dtype=torch.float64), eta=eta,
                          low=0.0, up=1.0)
    assert torch.allclose(got, torch.tensor(expect, dtype=torch.float64), atol=1e-12)


def test_polynomial_bounds_rate_and_determinism(path: str) -> None:
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    a = polynomial_mutation_(x.clone(), rate=0.1, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(3))
    b = polynomial_mutation_(x.clone(), rate=0.1, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    changed = (a != x).float().mean().item()
    assert 0.08 < changed < 0.12  # per-gene rate 0.1
    assert a.min() >= 0 and a.max() <= 1


def test_a_per_individual_eta_is_each_rows_own(path: str) -> None:
    """η per individual ``(P, 1, 1, 1)`` is read by row, not through a population-sized copy: the
    same draws as one mutation per row with that row's η."""
    x = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    eta = torch.tensor([0.5, 2.0, 15.0, 30.0, 100.0, 5.0]).view(6, 1, 1, 1)
    a = polynomial_mutation_(x.clone(), rate=0.5, eta=eta, low=0.0, up=1.0, gen=torch.Generator().manual_seed(2))
    b = polynomial_mutation_(x.clone(), rate=0.5, eta=eta.expand_as(x).contiguous(), low=0.0, up=1.0,
                             gen=torch.Generator().manual_seed(2))  # a full-size η: the general path
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_a_per_individual_rate_is_each_rows_own(path: str) -> None:
    """A rate per row mutates each row at its own rate (the CPU picks genes at the highest and
    thins them row by row); 0 leaves a row alone, and a seed gives the same genes."""
    x = torch.rand(5, 3, 100, 100, generator=torch.Generator().manual_seed(1))
    rate = torch.tensor([0.0, 0.003, 0.03, 0.1, 0.5])
    a = polynomial_mutation_(x.clone(), rate=rate, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(2))
    b = polynomial_mutation_(x.clone(), rate=rate, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    changed = (a != x).flatten(1).sum(1).double()
    n = x[0].numel()
    for got, p in zip(changed.tolist(), rate.tolist()):
        assert abs(got - p * n) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (got, p)
    with pytest.raises(ValueError, match="one value per row"):
        polynomial_mutation_(x.clone(), rate=rate[:3], eta=15, low=0.0, up=1.0, gen=torch.Generator())


def test_a_zero_rate_changes_nothing(path: str) -> None:
    # the compiled kernel once took ln(1 - 0) = 0 as a gap scale: infinite gaps, writes out of bounds
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    assert torch.equal(polynomial_mutation_(x.clone(), rate=0.0, eta=15, low=0.0, up=1.0, gen=torch.Generator()), x)
    assert torch.equal(polynomial_mutation_(x.clone(), rate=torch.zeros(8), eta=15, low=0.0, up=1.0,
                                            gen=torch.Generator()), x)
    a, b = sbx_crossover_(x.clone(), y.clone(), eta=10, low=0.0, up=1.0, gen=torch.Generator(), pair_prob=1.0,
                          gene_prob=0.0)
    assert torch.equal(a, x) and torch.equal(b, y)


def test_polynomial_mask_limits_which_genes_mutate_not_their_rate(path: str) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(50, 21, 21, generator=g) * 2 - 1
    mask = torch.rand(50, 21, 21, generator=g) < 0.1  # sparse, like enabled CPPN connections
    out = polynomial_mutation_(x.clone(), rate=0.3, eta=15, low=-1.0, up=1.0, gen=g, mask=mask)
    changed = out != x
    assert not changed[~mask].any()  # genes outside the mask keep their value
    n = int(mask.sum())
    assert abs(changed[mask].sum().item() - 0.3 * n) < 4 * math.sqrt(n * 0.3 * 0.7)  # each allowed gene: rate 0.3
    row = torch.zeros(21, 21, dtype=torch.bool)
    row[3, 5] = True  # a mask that broadcasts over the population
    out = polynomial_mutation_(x.clone(), rate=1.0, eta=15, low=-1.0, up=1.0, gen=g, mask=row)
    assert torch.equal(out != x, row.expand_as(x))


def test_sbx_matches_deap(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1)
    a = [rng.random() for _ in range(300)]
    b = [rng.random() for _ in range(300)]
    b[5] = a[5]  # identical genes stay put
    us = [rng.random() for _ in a]
    swaps = [rng.random() for _ in a]
    feed = []
    for i in range(len(a)):
        feed.append(0.0)  # gene crosses
        if abs(a[i] - b[i]) > 1e-14:
            feed += [us[i], swaps[i]]
    monkeypatch.setattr("deap.tools.crossover.random.random", _Feed(feed))
    ea, eb = tools.cxSimulatedBinaryBounded(list(a), list(b), eta=10.0, low=0.0, up=1.0)
    ga, gb = sbx_step(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                      torch.tensor(us, dtype=torch.float64), torch.tensor(swaps) <= 0.5, eta=10.0, low=0.0, up=1.0)
    assert torch.allclose(ga, torch.tensor(ea, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(gb, torch.tensor(eb, dtype=torch.float64), atol=1e-12)


def test_sbx_crossover_rates_and_bounds(path: str) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, 100, generator=g), torch.rand(50, 100, generator=g)
    ca, cb = sbx_crossover_(a.clone(), b.clone(), eta=10.0, low=0.0, up=1.0, gen=g, pair_prob=1.0)
    assert ca.min() >= 0 and cb.max() <= 1
    assert 0.45 < (ca != a).float().mean().item() < 0.55  # DEAP's per-gene probability 0.5
    na, nb = sbx_crossover_(a.clone(), b.clone(), eta=10.0, low=0.0, up=1.0, gen=g, pair_prob=0.0)
    assert torch.equal(na, a) and torch.equal(nb, b)


def test_every_variation_path_draws_from_the_same_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle for the dense path (an accelerator's) and the compiled one (the CPU's, numba)
    is the sparse torch one: over 200k genes in 4096 pairs the changed share and the quantiles of
    the change agree within sampling error, for mutation and for crossover."""
    import foolkit.evolve.operators as ops
    from foolkit.evolve import variation_cpu

    x = torch.rand(4096, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    y = torch.rand(4096, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    q = torch.tensor([0.1, 0.5, 0.9])
    seen = {}
    for path in ("sparse", "dense", "compiled"):
        if path == "compiled" and not variation_cpu.available():
            continue
        monkeypatch.setenv("FOOLKIT_NUMBA", "1" if path == "compiled" else "0")
        monkeypatch.setattr(ops, "sparse_on", lambda device, path=path: path != "dense")
        m = polynomial_mutation_(x.clone(), rate=0.1, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(5))
        a, _ = sbx_crossover_(x.clone(), y.clone(), eta=10.0, low=0.0, up=1.0, gen=torch.Generator().manual_seed(6))
        dm, da = (m - x)[m != x].abs(), (a - x)[a != x].abs()
        seen[path] = ((m != x).float().mean(), dm.quantile(q), (a != x).float().mean(), da.quantile(q))
    for path in seen:
        for s, d in zip(seen["sparse"], seen[path]):
            assert torch.allclose(s, d, rtol=0.05, atol=2e-3), (path, s, d)


@pytest.mark.parametrize("p", [0.003, 0.1, 0.5, 0.9])
def test_bernoulli_indices_are_independent_trials(p: float) -> None:
    """Geometric gaps give the same law as one coin per position: each position is picked with
    probability p, independently of its neighbour; indices ascend, unique, in range."""
    g = torch.Generator().manual_seed(0)
    n, reps = 40, 4000
    hits = torch.zeros(n)
    pairs = 0.0
    for _ in range(reps):
        idx = bernoulli_indices(n, p, g, "cpu")
        assert (idx[1:] > idx[:-1]).all() and (idx.numel() == 0 or (idx.min() >= 0 and idx.max() < n))
        mask = torch.zeros(n)
        mask[idx] = 1
        hits += mask
        pairs += float((mask[:-1] * mask[1:]).mean())
    sd = (p * (1 - p) / reps) ** 0.5
    assert ((hits / reps - p).abs() < 5 * sd + 1e-9).all()
    assert abs(pairs / reps - p * p) < 5 * (p * p * (1 - p * p) / reps / 8) ** 0.5 + 1e-9


def test_bernoulli_indices_edges_rounds_and_seed() -> None:
    g = torch.Generator().manual_seed(1)
    assert bernoulli_indices(100, 0.0, g, "cpu").numel() == 0
    assert torch.equal(bernoulli_indices(7, 1.0, g, "cpu"), torch.arange(7))
    assert bernoulli_indices(0, 0.5, g, "cpu").numel() == 0
    a = bernoulli_indices(100_000, 0.1, torch.Generator().manual_seed(2), "cpu")
    assert torch.equal(a, bernoulli_indices(100_000, 0.1, torch.Generator().manual_seed(2), "cpu"))
    assert abs(a.numel() - 10_000) < 5 * 95
    # many small rounds (bounded memory) give the same law
    b = bernoulli_indices(100_000, 0.1, g, "cpu", chunk=64)
    assert (b[1:] > b[:-1]).all() and b.max() < 100_000 and abs(b.numel() - 10_000) < 5 * 95
    assert abs(float(b.float().mean()) - 50_000) < 1_500  # spread over the whole range


def test_select_and_power_match_where_and_pow() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    c = torch.rand(1000, generator=g) < 0.3
    assert torch.equal(select(c, a, b), torch.where(c, a, b))  # exact, not just close
    for dtype, floor, rtol in ((torch.float64, math.exp(-700), 1e-12), (torch.float32, math.exp(-80), 1e-5)):
        x = torch.rand(1000, generator=g, dtype=dtype)
        x[:3] = torch.tensor([0.0, 1.0, 1e-30], dtype=dtype)
        for e in (16.0, 1 / 16, -11.0):  # below the floor, results are the floor (exp's slow path avoided)
            expect = (x.double() ** e).clamp_min(floor).to(dtype)
            assert torch.allclose(power(x, e), expect, rtol=rtol, atol=0)


def test_the_fused_gpu_variation_computes_the_torch_formulas(triton_interpreter) -> None:
    """The fused CUDA kernels, in Triton's interpreter: given the same uniforms they give the torch
    formulas' genes (which match DEAP's, above); drawing their own, they keep the rates, the
    bounds, each row's η, and a seed's results."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 10, 10, generator=g)
    y = torch.rand(64, 3, 10, 10, generator=g)
    n = x.numel()
    eta_rows = torch.exp(torch.rand(64, generator=g) * 3)
    u_mut = torch.rand(2, n, generator=g)
    u_sbx = torch.rand(4, n, generator=g)
    u_sbx[0] = torch.rand(64, generator=g).repeat_interleave(n // 64)  # a row's uniform, at each of its genes
    out = triton_interpreter("""
from foolkit.evolve import variation_fused as vf
x, y, eta_rows, u_mut, u_sbx = inputs
gen = lambda s: torch.Generator().manual_seed(s)
outputs = {
    "given": vf.polynomial_(x.clone(), rate=0.3, eta=15.0, low=0.0, up=1.0, gen=gen(0), uniforms=u_mut),
    "given_rows": vf.polynomial_(x.clone(), rate=1.0, eta=eta_rows, low=0.0, up=1.0, gen=gen(0), uniforms=u_mut),
    "given_rates": vf.polynomial_(x.clone(), rate=eta_rows / 20, eta=15.0, low=0.0, up=1.0, gen=gen(0),
                                  uniforms=u_mut),
    "sbx_given": vf.sbx_(x.clone(), y.clone(), eta=10.0, low=0.0, up=1.0, gen=gen(0), pair_prob=0.5, gene_prob=0.5,
                         uniforms=u_sbx),
    "drawn": [vf.polynomial_(x.clone(), rate=0.1, eta=15.0, low=0.0, up=1.0, gen=gen(s)) for s in (1, 1, 2)],
    "sbx_drawn": vf.sbx_(x.clone(), y.clone(), eta=10.0, low=0.0, up=1.0, gen=gen(3), pair_prob=0.5, gene_prob=0.5),
    "masked": vf.polynomial_(x.clone() * 2 - 1, rate=1.0, eta=15.0, low=-1.0, up=1.0, gen=gen(4),
                             mask=x[0] < 0.2),
    "available": vf.available(torch.device("cpu")),
}
import os
os.environ["FOOLKIT_TRITON"] = "0"  # the switch that turns the kernels off
outputs["switched_off"] = vf.available(torch.device("cpu"))""", (x, y, eta_rows, u_mut, u_sbx))
    assert out["available"] and not out["switched_off"]
    flat = x.reshape(-1)
    step = polynomial_step(flat, u_mut[1], eta=15.0, low=0.0, up=1.0)
    assert torch.allclose(out["given"].reshape(-1), torch.where(u_mut[0] < 0.3, step, flat), atol=2e-6)
    step = polynomial_step(flat, u_mut[1], eta=eta_rows.repeat_interleave(n // 64), low=0.0, up=1.0)
    assert torch.allclose(out["given_rows"].reshape(-1), step, atol=2e-6)
    step = polynomial_step(flat, u_mut[1], eta=15.0, low=0.0, up=1.0)
    picked = u_mut[0] < (eta_rows / 20).repeat_interleave(n // 64)
    assert torch.allclose(out["given_rates"].reshape(-1), torch.where(picked, step, flat), atol=2e-6)
    ca, cb = sbx_step(flat, y.reshape(-1), u_sbx[2], u_sbx[3] <= 0.5, eta=10.0, low=0.0, up=1.0)
    cross = (u_sbx[0] < 0.5) & (u_sbx[1] < 0.5)
    a, b = out["sbx_given"]
    assert torch.allclose(a.reshape(-1), torch.where(cross, ca, flat), atol=2e-6)
    assert torch.allclose(b.reshape(-1), torch.where(cross, cb, y.reshape(-1)), atol=2e-6)
    one, same, other = out["drawn"]
    assert torch.equal(one, same) and not torch.equal(one, other)  # a seed's results
    assert 0.085 < (one != x).float().mean() < 0.115 and one.min() >= 0 and one.max() <= 1
    a, b = out["sbx_drawn"]
    assert 0.2 < (a != x).float().mean() < 0.3 and a.min() >= 0 and b.max() <= 1  # pairs 0.5 × genes 0.5
    rows_crossed = (a != x).flatten(1).any(1)
    assert 0.3 < rows_crossed.float().mean() < 0.7 and (a[~rows_crossed] == x[~rows_crossed]).all()
    moved = out["masked"] != x * 2 - 1
    assert torch.equal(moved, (x[0] < 0.2).expand_as(x) & moved) and moved.float().mean() > 0.15


def test_the_compiled_cpu_variation_computes_the_torch_formulas() -> None:
    """The CPU's numba kernels: given the same step uniforms they give the torch formulas' genes
    (float32 in both: within the torch formula's own float32 error against float64); drawing
    their own, they keep the rates, the bounds, each row's η and the mask, and a seed's results."""
    from foolkit.evolve import variation_cpu as vc

    if not vc.available():
        pytest.skip("numba not installed or FOOLKIT_NUMBA=0")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 10, 10, generator=g)
    y = torch.rand(64, 3, 10, 10, generator=g)
    n = x.numel()
    eta_rows = torch.exp(torch.rand(64, 1, 1, 1, generator=g) * 3)
    u = torch.rand(2, n, generator=g)
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    flat = x.reshape(-1)
    for eta in (15.0, eta_rows, eta_rows.expand_as(x)):  # a number, one per row, one per gene
        got = vc.polynomial_(x.clone(), rate=1.0, eta=eta, low=0.0, up=1.0, gen=gen(0), uniforms=u[0]).reshape(-1)
        e = eta if isinstance(eta, float) else eta.expand_as(x).reshape(-1)
        expect = polynomial_step(flat.double(), u[0].double(), eta=e if isinstance(e, float) else e.double(), low=0.0,
                                 up=1.0)
        own = (polynomial_step(flat, u[0], eta=e, low=0.0, up=1.0).double() - expect).abs().max()
        assert (got.double() - expect).abs().max() <= 2 * own + 1e-6
    ca, cb = vc.sbx_(x.clone(), y.clone(), eta=10.0, low=0.0, up=1.0, gen=gen(0), pair_prob=1.0, gene_prob=1.0,
                     uniforms=u)
    ea, eb = sbx_step(flat.double(), y.reshape(-1).double(), u[0].double(), u[1] <= 0.5, eta=10.0, low=0.0, up=1.0)
    ta, tb = sbx_step(flat, y.reshape(-1), u[0], u[1] <= 0.5, eta=10.0, low=0.0, up=1.0)
    for got, expect, own in ((ca, ea, ta), (cb, eb, tb)):
        assert (got.reshape(-1).double() - expect).abs().max() <= 2 * (own.double() - expect).abs().max() + 1e-6
    # drawn: rates, bounds, the mask, determinism by seed
    m1, m2, m3 = (vc.polynomial_(x.clone(), rate=0.1, eta=15.0, low=0.0, up=1.0, gen=gen(s)) for s in (1, 1, 2))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3) and 0 <= m1.min() and m1.max() <= 1
    assert abs((m1 != x).float().mean().item() - 0.1) < 0.01
    masked = vc.polynomial_(x.clone(), rate=1.0, eta=15.0, low=0.0, up=1.0, gen=gen(4), mask=x[0] < 0.2)
    assert torch.equal((masked != x), (x[0] < 0.2).expand_as(x) & (masked != x)) and (masked != x).any()
    sa, sb = vc.sbx_(x.clone(), y.clone(), eta=10.0, low=0.0, up=1.0, gen=gen(3), pair_prob=0.5, gene_prob=0.5)
    crossed = (sa != x).flatten(1).any(1)
    assert 0.3 < crossed.float().mean() < 0.7 and torch.equal((sa != x).flatten(1)[~crossed].any(1), crossed[~crossed])
    assert abs((sa != x).flatten(1)[crossed].float().mean().item() - 0.5) < 0.03 and 0 <= sa.min() and sb.max() <= 1


def test_evolution_runs_on_torch_alone_when_numba_is_missing() -> None:
    """numba is a dependency, but an install without it (or one whose numba fails to import)
    still evolves: the compiled kernels report unavailable and the torch passes run."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["numba"] = None  # import numba: ImportError
import torch
from foolkit.evolve import cppn, cppn_cpu, operators, variation_cpu
assert not cppn_cpu.available() and not variation_cpu.available()
g = torch.Generator().manual_seed(0)
x = torch.rand(8, 1, 6, 6)
operators.sbx_crossover_(x[:4], x[4:].clone(), eta=10.0, low=0.0, up=1.0, gen=g)
operators.polynomial_mutation_(x, rate=0.5, eta=15.0, low=0.0, up=1.0, gen=g)
spec = cppn.CPPNSpec()
c = cppn.mutate(cppn.sample(spec, 8, g, "cpu"), spec, g)
assert cppn.render(c, spec, 6, 6).shape == (8, 1, 6, 6)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
