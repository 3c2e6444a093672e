"""The vectorised operators reproduce DEAP's bounded polynomial mutation and SBX gene for gene
when fed the same random numbers."""

from __future__ import annotations

import random

import pytest
import torch
from deap import tools

from foolkit.evolve.operators import polynomial_mutation, polynomial_step, sbx_crossover, sbx_step


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


def test_polynomial_bounds_rate_and_determinism() -> None:
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    a = polynomial_mutation(x, rate=0.1, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(3))
    b = polynomial_mutation(x, rate=0.1, eta=15, low=0.0, up=1.0, gen=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    changed = (a != x).float().mean().item()
    assert 0.08 < changed < 0.12  # per-gene rate 0.1
    assert a.min() >= 0 and a.max() <= 1


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


def test_sbx_crossover_rates_and_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, 100, generator=g), torch.rand(50, 100, generator=g)
    ca, cb = sbx_crossover(a, b, eta=10.0, low=0.0, up=1.0, gen=g, pair_prob=1.0)
    assert ca.min() >= 0 and cb.max() <= 1
    assert 0.45 < (ca != a).float().mean().item() < 0.55  # DEAP's per-gene probability 0.5
    na, nb = sbx_crossover(a, b, eta=10.0, low=0.0, up=1.0, gen=g, pair_prob=0.0)
    assert torch.equal(na, a) and torch.equal(nb, b)
