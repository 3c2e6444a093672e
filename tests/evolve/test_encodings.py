"""Encodings: shapes, ranges, determinism by seed, mutations that change genomes, CPPN rendering."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F

from foolkit.evolve import cppn, cppn_fused
from foolkit.evolve.encodings import CPPNEncoding, DirectEncoding
from foolkit.images import quantize


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_direct_sample_decode_mutate_mate(path: str) -> None:
    enc = DirectEncoding(channels=3, size=(20, 24))
    g = enc.sample(6, gen(0))
    x = enc.decode(g)
    assert x.shape == (6, 3, 20, 24) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, enc.decode(enc.sample(6, gen(0))))
    assert not torch.equal(x, enc.decode(enc.sample(6, gen(1))))
    m = enc.mutate({"pixels": x.clone()}, gen(2), generation=1)  # variation works in place, on copies
    assert m["pixels"].shape == x.shape and not torch.equal(m["pixels"], x)
    assert torch.equal(m["pixels"], enc.mutate({"pixels": x.clone()}, gen(2), generation=1)["pixels"])
    a, b = enc.mate({"pixels": x[:3].clone()}, {"pixels": x[3:].clone()}, gen(3))
    assert a["pixels"].shape == (3, 3, 20, 24)
    assert not torch.equal(torch.cat([a["pixels"], b["pixels"]]), x)


def test_direct_rate_halving(path: str) -> None:
    enc = DirectEncoding(channels=1, size=(28, 28), halve_every=10, smooth_prob=0.0)
    g = {"pixels": torch.full((40, 1, 28, 28), 0.5)}
    early = (enc.mutate({"pixels": g["pixels"].clone()}, gen(0), generation=1)["pixels"] != 0.5).float().mean().item()
    late = (enc.mutate({"pixels": g["pixels"].clone()}, gen(0), generation=21)["pixels"] != 0.5).float().mean().item()
    assert abs(early - 0.1) < 0.02 and abs(late - 0.025) < 0.01


def test_smooth_mutation_moves_a_share_of_whole_images_smoothly(path: str) -> None:
    from foolkit.evolve.encodings import smooth_mutation_

    x = torch.full((400, 1, 28, 28), 0.5)
    out = smooth_mutation_(x.clone(), prob=0.25, sigma=0.1, cells=(4, 7), gen=gen(0))
    moved = (out != x).flatten(1).any(1)
    assert abs(moved.float().mean().item() - 0.25) < 0.07  # that share of the images, each whole or not at all
    assert (out[moved] != 0.5).flatten(1).float().mean() > 0.95 and torch.equal(out[~moved], x[~moved])
    d = out[moved] - 0.5
    neighbours = (d[..., 1:] * d[..., :-1]).mean() / (d * d).mean()
    assert neighbours > 0.9 and 0 <= out.min() and out.max() <= 1  # smooth: adjacent pixels move together


def test_each_smooth_perturbation_is_a_bilinearly_upsampled_gaussian_grid(path: str) -> None:
    """Oracle: every moved image's change is exactly ``A_h G A_wᵀ`` for a grid ``G`` of one of the
    cell sizes (least squares recovers it with no residual), the grids' values are N(0, σ²), and
    the sizes are drawn evenly."""
    from foolkit.evolve.encodings import bilinear_matrix, smooth_mutation_

    x = torch.full((600, 1, 20, 24), 0.5)
    sigma = 0.02  # small: nothing is clamped
    out = smooth_mutation_(x.clone(), prob=0.5, sigma=sigma, cells=(3, 5), gen=gen(1))
    delta = (out - x)[(out != x).flatten(1).any(1)][:, 0].double()
    values, sizes = [], []
    for d in delta:
        fits = []
        for g in (3, 5):
            a_h, a_w = bilinear_matrix(20, g, "cpu").double(), bilinear_matrix(24, g, "cpu").double()
            grid = torch.linalg.pinv(a_h) @ d @ torch.linalg.pinv(a_w).T
            fits.append(((a_h @ grid @ a_w.T - d).abs().max().item(), g, grid))
        residual, g, grid = min(fits, key=lambda f: f[0])
        assert residual < 1e-6, residual  # float32 round-off only
        values.append(grid.flatten())
        sizes.append(g)
    values = torch.cat(values)
    assert abs(len(delta) / 600 - 0.5) < 0.07 and abs(sizes.count(3) / len(sizes) - 0.5) < 0.1
    assert abs(values.mean().item()) < 0.1 * sigma and abs(values.std().item() / sigma - 1) < 0.05


def test_a_per_image_sigma_is_each_images_own(path: str) -> None:
    """σ per image: each moved image's grid (recovered by least squares, as above) has its own σ;
    σ = 0 leaves an image as it was."""
    from foolkit.evolve.encodings import bilinear_matrix, smooth_mutation_

    x = torch.full((400, 1, 14, 14), 0.5)
    sigma = torch.tensor([0.0, 0.002, 0.01, 0.04]).repeat(100)
    out = smooth_mutation_(x.clone(), prob=1.0, sigma=sigma, cells=(7,), gen=gen(2))
    a_h = torch.linalg.pinv(bilinear_matrix(14, 7, "cpu").double())
    grids = a_h @ (out - x)[:, 0].double() @ a_h.T
    std = grids.view(100, 4, 49).transpose(0, 1).reshape(4, -1).std(1)
    assert std[0] == 0 and torch.equal(out[::4], x[::4])
    assert torch.allclose(std[1:] / sigma[1:4].double(), torch.ones(3, dtype=torch.float64), atol=0.05), std
    with pytest.raises(ValueError, match="one value per image"):
        smooth_mutation_(x.clone(), prob=1.0, sigma=sigma[:5], cells=(7,), gen=gen(2))


def test_direct_steps_scale_per_offspring(path: str) -> None:
    """``scale`` multiplies each offspring's per-gene rate and smooth σ: a quarter of the scale,
    about a quarter of the genes changed and a quarter of the smooth step."""
    enc = DirectEncoding(channels=1, size=(28, 28), smooth_prob=0.0)
    scale = torch.tensor([1.0, 0.25]).repeat(100)
    x = torch.full((200, 1, 28, 28), 0.5)
    out = enc.mutate({"pixels": x.clone()}, gen(0), generation=1, scale=scale)["pixels"]
    changed = (out != 0.5).flatten(1).float().mean(1).view(100, 2).mean(0)
    assert abs(changed[0] - 0.1) < 0.01 and abs(changed[1] - 0.025) < 0.005
    smooth = DirectEncoding(channels=1, size=(28, 28), smooth_prob=1.0, mutation_rate=0.0, smooth_sigma=0.04)
    out = smooth.mutate({"pixels": x.clone()}, gen(1), generation=1, scale=scale)["pixels"]
    step = (out - 0.5).flatten(1).std(1).view(100, 2).mean(0)
    assert 0.2 < (step[1] / step[0]).item() < 0.3


def test_cppn_render_shapes_ranges_resolutions() -> None:
    for channels in (1, 3):
        enc = CPPNEncoding(channels=channels, size=(28, 28))
        g = enc.sample(5, gen(0))
        for i in range(10):
            g = enc.mutate(g, gen(i), generation=i + 1)
        small, big = enc.decode(g), enc.decode(g, size=(112, 112))
        assert small.shape == (5, channels, 28, 28) and big.shape == (5, channels, 112, 112)
        assert 0 <= small.min() and small.max() <= 1 and 0 <= big.min() and big.max() <= 1
        assert torch.equal(small, enc.decode(g))  # deterministic
        # the same picture at any resolution: downsampling the big render gives the small one
        down = F.interpolate(big, size=(28, 28), mode="area")
        assert (down - small).abs().mean() < 0.1


def test_cppn_inputs_normalised() -> None:
    c = cppn.coordinates(9, 9, "cpu")
    assert c.shape == (4, 81)
    assert torch.allclose(c.min(1).values, torch.tensor([-1.0, -1.0, -1.0, 1.0]))
    assert torch.allclose(c.max(1).values, torch.tensor([1.0, 1.0, 1.0, 1.0]))


def test_hls_matches_colorsys() -> None:
    hls = torch.rand(3, 500, generator=gen(0))
    hls[2, :20] = 0  # zero saturation branch
    rgb = cppn.hls_to_rgb(hls[0].view(1, 500), hls[1].view(1, 500), hls[2].view(1, 500)).view(3, 500)
    expect = torch.tensor([colorsys.hls_to_rgb(*hls[:, i].tolist()) for i in range(500)]).T
    assert torch.allclose(rgb, expect, atol=1e-5)


def test_cppn_mutations_keep_invariants_and_change_structure() -> None:
    spec = cppn.CPPNSpec(outputs=3, hidden=8)
    g = cppn.sample(spec, 64, gen(0), "cpu")
    first = {k: v.clone() for k, v in g.items()}
    allowed = spec.allowed("cpu")
    inputs, hidden, outputs = spec.kinds("cpu")
    for i in range(40):
        g = cppn.mutate(g, spec, gen(i))
        on, alive = g["on"], g["alive"]
        assert not (on & ~allowed).any()  # feed-forward, nothing out of outputs, nothing into inputs
        assert not (on & ~(alive[:, :, None] & alive[:, None, :])).any()  # dead nodes are unplugged
        assert alive[:, inputs | outputs].all()
        assert g["w"].abs().max() <= spec.weight_range
        assert not g["w"][~on].any()  # a connection that is off weighs 0 (render relies on it)
    assert (g["alive"][:, hidden].sum(1) > 0).any()  # nodes were added
    assert not torch.equal(g["on"], first["on"]) and not torch.equal(g["act"], first["act"])
    assert (g["alive"] != first["alive"]).any()


def test_activation_per_genome() -> None:
    z = torch.linspace(-3, 3, 7).repeat(len(cppn.ACTIVATIONS), 1)
    act = torch.arange(len(cppn.ACTIVATIONS))
    out = cppn.activate(z, act)
    for i, f in enumerate(cppn.ACTIVATIONS.values()):
        assert torch.allclose(out[i], f(z[i]))
    assert out.min() >= -1 and out.max() <= 1


def _render_one_by_one(genomes: dict[str, torch.Tensor], spec: cppn.CPPNSpec, h: int, w: int) -> torch.Tensor:
    """Oracle: evaluate each genome alone, node by node in slot order, straight from the definition
    (in float64, so the comparison measures the render's float32 rounding only)."""
    coords = cppn.coordinates(h, w, "cpu").double()
    funcs = [cppn.ACTIVATIONS[name] for name in spec.activations]
    out = []
    for p in range(genomes["act"].shape[0]):
        wt, on, act, alive = (genomes[k][p] for k in ("w", "on", "act", "alive"))
        values: dict[int, torch.Tensor] = {i: coords[i] for i in range(cppn.NUM_INPUTS)}
        for k in range(cppn.NUM_INPUTS, spec.nodes):
            if not alive[k]:
                continue
            z = torch.zeros(h * w, dtype=torch.float64)
            for src, v in values.items():
                if on[src, k]:
                    z = z + wt[src, k].double() * v
            values[k] = funcs[int(act[k])](z)
        outs = torch.stack([values[k] for k in range(spec.nodes - spec.outputs, spec.nodes)])
        out.append(((outs + 1) / 2).clamp(0, 1).view(spec.outputs, h, w))
    img = torch.stack(out)
    return cppn.hls_to_rgb(img[:, 0], img[:, 1], img[:, 2]).clamp(0, 1) if spec.outputs == 3 else img


def test_cppn_render_matches_one_by_one_evaluation() -> None:
    """Every CPU render equals evaluating every genome on its own: the default (the numba kernel,
    :mod:`foolkit.evolve.cppn_cpu`) and the step-by-step torch render, sparse and dense."""
    for outputs, activations in ((1, cppn.PAPER_ACTIVATIONS), (3, tuple(cppn.ACTIVATIONS)), (1, ("abs", "cosine"))):
        spec = cppn.CPPNSpec(outputs=outputs, hidden=8, activations=activations)
        g = cppn.sample(spec, 24, gen(0), "cpu")
        for i in range(25):
            g = cppn.mutate(g, spec, gen(100 + i))
        hidden = g["alive"].sum(1) - cppn.NUM_INPUTS - outputs
        assert hidden.min() < hidden.max() and hidden.max() >= 3  # mixed sizes: the sorting and prefixes matter
        expect = _render_one_by_one(g, spec, 9, 11)
        # sines of pre-activations of 40 and more, and the hue's factor 6, leave float32 about 2e-5 off
        assert torch.allclose(cppn.render(g, spec, 9, 11).double(), expect, atol=5e-5)
        assert torch.allclose(cppn.render(g, spec, 9, 11, fused=False).double(), expect, atol=5e-5)
        assert torch.allclose(cppn.render(g, spec, 9, 11, sparse=False).double(), expect, atol=5e-5)  # the dense fallback (MPS)


def test_the_fused_gpu_render_matches_one_by_one_evaluation(triton_interpreter) -> None:
    """The fused kernel (the CUDA render) against the same oracle, run by Triton's interpreter on
    the CPU (``TRITON_INTERPRET=1``, which Triton reads as it is imported: a fresh process)."""
    assert list(cppn_fused.CODES) == list(cppn.ACTIVATIONS)  # a kernel code per activation name, in order
    cases, expected = [], []
    for outputs, activations, hidden in ((1, cppn.PAPER_ACTIVATIONS, 8), (3, tuple(cppn.ACTIVATIONS), 8),
                                         (1, ("abs", "cosine"), 8), (3, cppn.PAPER_ACTIVATIONS, 0), (1, ("sine",), 3)):
        spec = cppn.CPPNSpec(outputs=outputs, hidden=hidden, activations=activations)
        g = cppn.sample(spec, 12, gen(0), "cpu")
        for i in range(25):
            g = cppn.mutate(g, spec, gen(100 + i))
        if not cases:  # genome 0's output: a zero weight from everything, linear: gray 0.5, the 8-bit tie 127.5
            g["w"][0, :, -1] = 0.0
            g["act"][0, -1] = activations.index("linear")
        cases.append({"w": g["w"], "act": g["act"], "activations": activations, "outputs": outputs})
        expect = _render_one_by_one(g, spec, 9, 11)
        # float32 error grows through chains of weights up to 10 (and the hue's factor 6): as close as the CPU render
        cpu_error = (cppn.render(g, spec, 9, 11, fused=False).double() - expect).abs().max().item()
        expected.append((expect, max(5e-5, 2 * cpu_error)))
    outputs = triton_interpreter("""
from foolkit.evolve import cppn, cppn_fused
assert cppn_fused.available(torch.device("cpu"))
coords = cppn.coordinates(9, 11, "cpu")
outputs = [(cppn_fused.render(c["w"], c["act"], c["activations"], c["outputs"], coords),
            cppn_fused.render(c["w"], c["act"], c["activations"], c["outputs"], coords, quantize=True),
            cppn_fused.render(c["w"], c["act"], c["activations"], c["outputs"], coords, skip_dead_ends=False),
            cppn_fused.useful_flags(c["w"], c["outputs"]))
           for c in inputs]
big = cppn.CPPNSpec(hidden=cppn_fused.MAX_RENDER_NODES)  # past the fused render's unrolled slots: torch's render
fused, calls = cppn_fused.render, []
cppn_fused.render = lambda *args, **kwargs: calls.append(1) or fused(*args, **kwargs)
g = cppn.sample(big, 2, torch.Generator().manual_seed(0), "cpu")
outputs.append(bool(torch.allclose(cppn.render(g, big, 4, 4), cppn.render(g, big, 4, 4, fused=False), atol=1e-5))
               and not calls)""",
                                 cases)
    assert outputs.pop()  # a genome of more slots than the fused render unrolls gets torch's render
    for (got, rounded, every_node, flags), case, (expect, tolerance) in zip(outputs, cases, expected):
        assert torch.equal(rounded, quantize(got))  # rounded to 8-bit levels as it is written, bit for bit
        assert torch.equal(got, every_node)  # skipping the nodes that reach no output changes nothing
        assert flags.tolist() == _useful_bits(case["w"], case["outputs"])
        got = got.view(expect.shape).double()
        assert torch.allclose(got, expect, atol=tolerance), ((got - expect).abs().max(), tolerance)
    assert (outputs[0][0][0] == 0.5).all() and (outputs[0][1][0] == 128 / 255).all()
    hidden_useful = [bin(f >> cppn.NUM_INPUTS).count("1") - c["outputs"] for (*_, fl), c in zip(outputs, cases)
                     for f in fl.tolist()]
    assert min(hidden_useful) == 0 and max(hidden_useful) >= 3  # genomes with dead ends and with useful nodes


def _useful_bits(w: torch.Tensor, outputs: int) -> list[int]:
    """Oracle for cppn_fused.useful_flags: the slots that reach an output, by walking back from the outputs."""
    N = w.shape[1]
    flags = []
    for p in range(w.shape[0]):
        useful = {k for k in range(N - outputs, N)}
        for k in range(N - outputs - 1, cppn.NUM_INPUTS - 1, -1):
            if any(w[p, k, j] != 0 for j in useful):
                useful.add(k)
        flags.append(sum(1 << k for k in useful))
    return flags


def test_the_fused_gpu_mutation_equals_the_torch_passes_bit_for_bit(triton_interpreter) -> None:
    """The CUDA mutation kernel, in Triton's interpreter: from the same uniforms its structural
    mutations give the torch passes' genomes bit for bit, on genomes from every stage of a run
    (fresh, growing, at the cap of hidden nodes), for several shapes; its activation resampling
    keeps its rate, leaves inputs and dead slots alone and is determined by the generator; and
    ``cppn.mutate`` takes it where it runs."""
    cases, expected = [], []
    for outputs, hidden, activations in ((1, 16, cppn.PAPER_ACTIVATIONS), (3, 8, tuple(cppn.ACTIVATIONS)),
                                         (1, 1, ("abs", "linear")), (3, 0, cppn.PAPER_ACTIVATIONS)):
        spec = cppn.CPPNSpec(outputs=outputs, hidden=hidden, activations=activations)
        g, snapshots = cppn.sample(spec, 8, gen(7), "cpu"), []
        for i in range(121):
            if i in (0, 10, 30, 60, 90, 120):
                snapshots.append({k: v.clone() for k, v in g.items()})
            g = cppn.mutate(g, spec, gen(300 + i))
        genomes = {k: torch.cat([s[k] for s in snapshots]) for k in g}
        grown = genomes["alive"].sum(1) - cppn.NUM_INPUTS - outputs
        assert hidden == 0 or grown.max() == hidden  # some at the cap: add node finds no slot there
        u = torch.rand(15, 48, generator=gen(hidden))
        cases.append({"genomes": genomes, "u": u, "spec": (outputs, spec.structure_rates, len(activations))})
        expected.append(cppn.mutate_structure({k: v.clone() for k, v in genomes.items()}, spec, u))
    out = triton_interpreter("""
from foolkit.evolve import cppn, cppn_fused
gen = lambda s: torch.Generator().manual_seed(s)
outputs = {"structure": []}
for case in inputs[:-1]:
    outputs_, rates, activations = case["spec"]
    outputs["structure"].append(cppn_fused.mutate_(case["genomes"], case["u"], outputs=outputs_, rates=rates,
                                weight_range=10.0, activations=activations, activation_rate=0.0, gen=gen(0)))
genomes = inputs[-1]
resample = lambda seed: cppn_fused.mutate_({k: v.clone() for k, v in genomes.items()}, torch.rand(15, 40),
                                           outputs=1, rates=(0.0,) * 5, weight_range=10.0, activations=4,
                                           activation_rate=0.5, gen=gen(seed))["act"]
outputs["resampled"] = [resample(1), resample(1), resample(2)]
fused, calls = cppn_fused.mutate_, []
cppn_fused.mutate_ = lambda *args, **kwargs: calls.append(1) or fused(*args, **kwargs)
outputs["mutated"] = cppn.mutate({k: v[:8].clone() for k, v in genomes.items()}, cppn.CPPNSpec(), gen(3))
outputs["calls"] = len(calls)""",
                             cases + [{k: v[8:].clone() for k, v in cases[0]["genomes"].items()}])
    for got, expect in zip(out["structure"], expected):
        for key in expect:
            assert torch.equal(got[key], expect[key]), key
    before = cases[0]["genomes"]["act"][8:]
    alive = cases[0]["genomes"]["alive"][8:]
    live = alive.clone()
    live[:, :cppn.NUM_INPUTS] = False
    one, same, other = out["resampled"]
    assert torch.equal(one, same) and not torch.equal(one, other)
    changed = one != before
    assert not changed[~live].any() and abs(changed[live].float().mean().item() - 0.5 * 3 / 4) < 0.08
    mutated, spec = out["mutated"], cppn.CPPNSpec()
    assert out["calls"] == 1 and any(not torch.equal(mutated[k], v[8:16]) for k, v in cases[0]["genomes"].items())
    assert not mutated["w"][~mutated["on"]].any()  # weights of connections that are off are 0
    assert not (mutated["on"] & ~(spec.allowed("cpu") & cppn._outer_and(mutated["alive"]))).any()


def test_cppn_render_workspace_is_reused_and_never_shared_with_the_images() -> None:
    """Renders through one workspace, big and small, in and out of inference mode, equal renders
    without it, and an image from an earlier call is not overwritten by a later one (the
    step-by-step render's: the numba kernel needs no buffer of node values)."""
    for outputs in (1, 3):
        ws = cppn.Workspace(min_bytes=0)  # reuse every buffer (by default only those of 32 MB and more)
        spec = cppn.CPPNSpec(outputs=outputs, hidden=8)
        g = cppn.sample(spec, 16, gen(0), "cpu")
        for i in range(20):
            g = cppn.mutate(g, spec, gen(200 + i))
        first = cppn.render(g, spec, 20, 20, workspace=ws, fused=False)
        kept, buffer = first.clone(), ws._buffer.data_ptr()
        with torch.inference_mode():
            near = cppn.render(g, spec, 19, 19, workspace=ws, fused=False)  # fits: the same buffer
        assert ws._buffer.data_ptr() == buffer
        small = cppn.render(g, spec, 6, 9, workspace=ws, fused=False)  # far smaller: a smaller buffer replaces it
        big = cppn.render(g, spec, 40, 40, workspace=ws, fused=False)  # bigger than the buffer: it grows
        for img, (h, w) in ((first, (20, 20)), (near, (19, 19)), (small, (6, 9)), (big, (40, 40))):
            assert torch.equal(img, cppn.render(g, spec, h, w, fused=False))
        assert torch.equal(first, kept)
    cpu = torch.device("cpu")
    buf = ws.get(10, cpu)
    assert buf.numel() == 10 and ws.get(5, cpu).data_ptr() == buf.data_ptr()
    ws.get(10_000, cpu)
    assert ws._buffer is not None and ws._buffer.numel() >= 10_000
    ws.get(100, cpu)  # far smaller: the big buffer is let go
    assert ws._buffer.numel() < 1000
    default = cppn.Workspace()
    assert default.get(1000, cpu).numel() == 1000 and default._buffer is None  # small: a fresh tensor
    at_limit = cppn.Workspace(min_bytes=4000)
    assert at_limit.get(1000, cpu).numel() == 1000 and at_limit._buffer is not None  # 4000 bytes: kept


def test_cppn_pick_is_uniform_over_candidates() -> None:
    g = gen(0)
    cand = torch.rand(5, 12, generator=g) < 0.4
    cand[4] = False
    hits = torch.zeros(5, 12)
    for _ in range(6000):
        idx, found = cppn._pick(cand, torch.rand(5, generator=g))
        assert torch.equal(found, cand.any(1))
        hits[torch.arange(4), idx[:4]] += 1
    assert (hits[:4][~cand[:4]] == 0).all()  # only candidates are ever picked
    expect = 6000 / cand[:4].sum(1, keepdim=True).float()
    assert ((hits[:4] - expect).abs()[cand[:4]] < 5 * expect.sqrt().expand(4, 12)[cand[:4]]).all()


def test_cppn_spec_refuses_unknown_or_repeated_activations() -> None:
    for bad in (("sine", "relu"), ("sine", "sine"), ()):
        with pytest.raises(ValueError, match="activations"):
            cppn.CPPNSpec(activations=bad)


def test_cppn_weights_stay_in_a_narrow_range_and_a_list_of_activations_works() -> None:
    spec = cppn.CPPNSpec(hidden=6, weight_range=0.5, activations=["sine", "gaussian"], add_node=0.9)
    assert spec.activations == ("sine", "gaussian") and hash(spec)  # render caches constants per spec
    g = cppn.sample(spec, 32, gen(0), "cpu")
    for i in range(30):  # add node's new in-weight (1.0) would be out of range: it is clipped to 0.5
        g = cppn.mutate(g, spec, gen(i))
    assert g["alive"].sum() > 32 * (cppn.NUM_INPUTS + 1)  # nodes were added
    assert torch.isfinite(g["w"]).all() and g["w"].abs().max() <= 0.5
    img = cppn.render(g, spec, 5, 7)
    assert img.shape == (32, 1, 5, 7) and torch.isfinite(img).all()
