"""The CPPN's CPU kernels (numba, :mod:`foolkit.evolve.cppn_cpu`) against their oracles: float64
math, the torch structural mutations (bit for bit), the torch formula and render; and the switch
that turns them off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from foolkit.evolve import cppn, cppn_cpu
from foolkit.images import quantize

pytestmark = pytest.mark.skipif(not cppn_cpu.available(), reason="numba not installed or FOOLKIT_NUMBA=0")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def evolved(spec: cppn.CPPNSpec, n: int, generations: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = cppn.sample(spec, n, gen(seed), "cpu")
    for i in range(generations):
        g = cppn.mutate(g, spec, gen(1000 * seed + i))
    return g


def test_the_kernels_sine_cosine_and_exponential_are_float32_accurate() -> None:
    """The polynomial sine, cosine and exponential against float64 over the range a CPPN's
    pre-activations can reach (|z| <= 200: weights up to 10 from at most 20 sources in [-1, 1])."""
    assert list(cppn_cpu.CODES) == list(cppn.ACTIVATIONS)  # a kernel code per activation name, in order
    z = np.concatenate([np.linspace(-260, 260, 40001), np.arange(-80, 81) * math.pi / 2, [0.0, 1e-30, -1e-7]])
    z32 = z.astype(np.float32)
    exact = z32.astype(np.float64)  # the float32 input is the argument: measure the function, not its rounding
    sin = np.array([cppn_cpu._sin(v) for v in z32], dtype=np.float64)
    cos = np.array([cppn_cpu._cos(v) for v in z32], dtype=np.float64)
    assert np.abs(sin - np.sin(exact)).max() < 3e-7
    assert np.abs(cos - np.cos(exact)).max() < 3e-7
    e = -np.abs(z32[np.abs(z32) <= 80])
    parts = [cppn_cpu._exp_parts(v) for v in e]
    got = np.array([poly * np.array(bits, np.int32).view(np.float32) for poly, bits in parts], dtype=np.float64)
    expect = np.exp(e.astype(np.float64))
    assert (np.abs(got - expect) <= 3e-7 * expect).all()  # relative: e^-80 is 2e-35


def test_the_cpu_render_matches_the_torch_render_and_uses_every_activation() -> None:
    for outputs, activations, hidden in ((1, cppn.PAPER_ACTIVATIONS, 16), (3, tuple(cppn.ACTIVATIONS), 8),
                                         (1, ("cosine", "abs"), 3), (3, cppn.PAPER_ACTIVATIONS, 0)):
        spec = cppn.CPPNSpec(outputs=outputs, hidden=hidden, activations=activations)
        g = evolved(spec, 40, 60)
        for h, w in ((28, 28), (5, 7)):
            fast = cppn.render(g, spec, h, w)
            assert fast.shape == (40, 3 if outputs == 3 else 1, h, w) and fast.min() >= 0 and fast.max() <= 1
            # the torch render folds weights; float32 error through chains of weights up to 10
            assert (fast - cppn.render(g, spec, h, w, fused=False)).abs().max() < 2e-3
            assert torch.equal(cppn.render(g, spec, h, w, quantize=True), quantize(fast))  # rounded as it is written


def test_the_renders_round_to_8_bit_levels_as_quantize_does_ties_included() -> None:
    """A CPPN whose output is its bias weight passed through the linear activation: gray 0.5
    is the tie 127.5 (to 128, the even level); every other pixel of the batch is off a tie."""
    spec = cppn.CPPNSpec(hidden=4)
    g = evolved(spec, 12, 20)
    out = spec.nodes - 1
    g["w"][0, :, out] = 0.0
    g["w"][0, 3, out] = 0.0  # bias weight 0: value 0, pixel (0 + 1) / 2 = 0.5
    g["act"][0, out] = spec.activations.index("linear")
    for fused in (None, False):
        exact = cppn.render(g, spec, 9, 13, fused=fused)
        assert (exact[0] == 0.5).all() and (quantize(exact[0]) == 128 / 255).all()
        assert torch.equal(cppn.render(g, spec, 9, 13, fused=fused, quantize=True), quantize(exact))


def test_the_cpu_render_does_not_depend_on_threads_or_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = cppn.CPPNSpec(outputs=3, activations=tuple(cppn.ACTIVATIONS))
    g = evolved(spec, 37, 40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cppn.render(g, spec, 30, 30)
        monkeypatch.setattr(cppn_cpu, "GRAIN", 1)  # as many threads as torch has, in chunks of 3 genomes
        torch.set_num_threads(3)
        assert torch.equal(one, cppn.render(g, spec, 30, 30))
        monkeypatch.setattr(cppn_cpu, "TILE", 64)  # tiles of the pixels: the last one short
        assert torch.equal(one, cppn.render(g, spec, 30, 30))
    finally:
        torch.set_num_threads(threads)


def test_the_cpu_structural_mutation_equals_the_torch_passes_bit_for_bit() -> None:
    """From the same uniforms the numba structural mutations give the same genomes as the torch
    passes, on every generation of a run that grows the CPPNs to their cap, for several shapes."""
    for outputs, hidden, activations in ((1, 16, cppn.PAPER_ACTIVATIONS), (3, 8, tuple(cppn.ACTIVATIONS)),
                                         (1, 3, ("sine",)), (3, 0, cppn.PAPER_ACTIVATIONS), (1, 1, ("abs", "linear"))):
        spec = cppn.CPPNSpec(outputs=outputs, hidden=hidden, activations=activations)
        inputs, hidden_slots, _, allowed = cppn._constants(spec, torch.device("cpu"))[:4]
        rates = spec.structure_rates
        g, draws = cppn.sample(spec, 50, gen(7), "cpu"), gen(8)
        for i in range(120):
            g = cppn.mutate(g, spec, draws)  # the run: the numba path throughout
            u = torch.rand(15, 50, generator=draws)
            torch_way, kernel_way = ({k: v.clone() for k, v in g.items()} for _ in range(2))
            cppn.mutate_structure(torch_way, spec, u)
            cppn_cpu.mutate_structure(kernel_way, u, allowed, hidden_slots, rates, spec.weight_range, len(activations))
            for key in g:
                assert torch.equal(torch_way[key], kernel_way[key]), (outputs, hidden, i, key)
            assert any(not torch.equal(torch_way[k], g[k]) for k in g)  # something changed
        grown = g["alive"].sum(1) - cppn.NUM_INPUTS - outputs
        assert hidden == 0 or grown.max() == hidden  # the nodes grew to the cap: every mutation had work


def test_the_cpu_activation_resampling_rate_and_determinism() -> None:
    spec = cppn.CPPNSpec(activations=tuple(cppn.ACTIVATIONS))
    g = evolved(spec, 400, 40)
    inputs = cppn._constants(spec, torch.device("cpu"))[0]
    for scale in (1.0, 0.25):
        act = g["act"].clone()
        cppn_cpu.resample_activations(act, g["alive"], inputs, gen(5), rate=0.1 * scale, activations=6)
        live = g["alive"] & ~inputs
        changed = act != g["act"]
        assert not changed[~live].any()  # inputs and dead slots keep theirs
        # a resampled activation is new with probability 5/6 (six to choose from)
        assert abs(changed[live].float().mean().item() - 0.1 * scale * 5 / 6) < 0.012
        again = g["act"].clone()
        cppn_cpu.resample_activations(again, g["alive"], inputs, gen(5), rate=0.1 * scale, activations=6)
        assert torch.equal(act, again)  # the generator's state determines it
    a, b = ({k: v.clone() for k, v in g.items()} for _ in range(2))
    cppn.mutate(a, spec, gen(3))
    cppn.mutate(b, spec, gen(3))
    assert all(torch.equal(a[k], b[k]) for k in g)  # and a whole mutation, too
    moved = a["w"] != g["w"]
    assert not moved[~g["on"] & ~a["on"]].any()  # weights of connections that stay off stay 0


def test_foolkit_numba_0_turns_the_kernels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = cppn.CPPNSpec()
    g = evolved(spec, 20, 30)
    monkeypatch.setenv("FOOLKIT_NUMBA", "0")
    assert not cppn_cpu.available()
    assert torch.equal(cppn.render(g, spec, 12, 12), cppn.render(g, spec, 12, 12, fused=False))
    a = cppn.mutate({k: v.clone() for k, v in g.items()}, spec, gen(1))  # the torch passes: still a mutation
    assert any(not torch.equal(a[k], g[k]) for k in g) and not (a["w"][~a["on"]]).any()
    with pytest.raises(RuntimeError, match="no fused CPPN render on cpu"):
        cppn.render(g, spec, 12, 12, fused=True)
