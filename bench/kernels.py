"""Time foolkit's Triton kernels on a CUDA GPU; writes bench/results/gpu-kernels-<gpu>.json.

The CPPN render (``foolkit/evolve/cppn_fused.py``) at every pixels-per-program × warps setting
in :data:`RENDER_SETTINGS`, beside torch's step-by-step render on the same GPU (and at the current
setting computing every node, rounding to 8 bits, and the dead-end flags alone); the CPPN mutation
kernel beside the torch passes it replaces (activation resampling and the structural mutations);
and polynomial mutation and SBX beside their dense torch passes. Genomes are grown by 300
generations of mutation first, so they have the node and connection counts of a real run:

- LeNet: 32768 gray CPPNs at 28 × 28 px;
- ResNet: 256 colour CPPNs at 224 × 224 px.

Times are medians of ``triton.testing.do_bench`` (in ms), with each call's input cloning timed
apart and taken off where a kernel works in place. The render's best setting is the one to keep
in ``cppn_fused.BLOCK`` / ``WARPS``.

Usage: python bench/kernels.py [--device cuda] [--population 32768].
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from foolkit.evolve import cppn, cppn_fused, operators
from foolkit.runs import atomic_write_json

#: (pixels per program, warps) tried for the render
RENDER_SETTINGS = [(64, 1), (64, 2), (128, 1), (128, 2), (128, 4), (256, 2), (256, 4), (512, 4), (512, 8)]


def grown(spec: cppn.CPPNSpec, n: int, gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    g = cppn.sample(spec, n, gen, device)
    for _ in range(300):
        g = cppn.mutate(g, spec, gen)
    return g


def described(g: dict[str, torch.Tensor], spec: cppn.CPPNSpec) -> dict[str, float]:
    return {k: float(v) for k, v in cppn.describe(g, spec).items()}


def bench(fn, *, clone=None) -> float:  # noqa: ANN001 - callables
    """Median ms of ``fn()``; with ``clone`` (a callable that makes ``fn``'s fresh inputs), the
    time of ``clone()`` alone is taken off."""
    from triton.testing import do_bench

    if clone is None:
        return round(do_bench(fn), 4)
    return round(do_bench(lambda: fn(clone())) - do_bench(clone), 4)


def render_sweep(g: dict[str, torch.Tensor], spec: cppn.CPPNSpec, size: int) -> dict:
    coords = cppn.coordinates(size, size, g["w"].device)
    exact = cppn.render(g, spec, size, size, fused=False)
    out = {"torch_render_ms": bench(lambda: cppn.render(g, spec, size, size, fused=False)), "settings": []}
    default = (cppn_fused.BLOCK, cppn_fused.WARPS)
    try:
        for block, warps in RENDER_SETTINGS:
            cppn_fused.BLOCK, cppn_fused.WARPS = block, warps
            images = cppn_fused.render(g["w"], g["act"], spec.activations, spec.outputs, coords)
            error = (images.view_as(exact) - exact).abs().max().item()
            ms = bench(lambda: cppn_fused.render(g["w"], g["act"], spec.activations, spec.outputs, coords))
            out["settings"].append({"pixels_per_program": block, "warps": warps, "ms": ms, "max_error": error})
    finally:
        cppn_fused.BLOCK, cppn_fused.WARPS = default
    out["best"] = min(out["settings"], key=lambda s: s["ms"])
    out["current"] = {"pixels_per_program": default[0], "warps": default[1]}
    out["current_computing_every_node_ms"] = bench(lambda: cppn_fused.render(
        g["w"], g["act"], spec.activations, spec.outputs, coords, skip_dead_ends=False))
    out["current_rounding_to_8_bit_ms"] = bench(lambda: cppn_fused.render(
        g["w"], g["act"], spec.activations, spec.outputs, coords, quantize=True))
    out["dead_end_flags_ms"] = bench(lambda: cppn_fused.useful_flags(g["w"], spec.outputs))
    return out


def mutation(g: dict[str, torch.Tensor], spec: cppn.CPPNSpec, gen: torch.Generator) -> dict:
    P, N = g["act"].shape
    dev = g["w"].device
    inputs = cppn._constants(spec, dev)[0]
    clone = lambda: {k: v.clone() for k, v in g.items()}  # noqa: E731

    def torch_passes(genomes: dict[str, torch.Tensor]) -> None:
        act, alive = genomes["act"], genomes["alive"]
        resample = (torch.rand((P, N), generator=gen, device=dev) < spec.activation_rate) & alive & ~inputs
        act.copy_(torch.where(resample, torch.randint(len(spec.activations), (P, N), generator=gen, device=dev), act))
        cppn.mutate_structure(genomes, spec, torch.rand(15, P, generator=gen, device=dev))

    def fused(genomes: dict[str, torch.Tensor]) -> None:
        cppn_fused.mutate_(genomes, torch.rand(15, P, generator=gen, device=dev), outputs=spec.outputs,
                           rates=spec.structure_rates, weight_range=spec.weight_range,
                           activations=len(spec.activations), activation_rate=spec.activation_rate, gen=gen)

    def whole(genomes: dict[str, torch.Tensor]) -> None:
        cppn.mutate(genomes, spec, gen)

    return {"torch_passes_ms": bench(torch_passes, clone=clone), "fused_kernel_ms": bench(fused, clone=clone),
            "whole_mutate_ms": bench(whole, clone=clone)}


def variation(n: int, gen: torch.Generator, device: torch.device) -> dict:
    x = torch.rand(n, 1, 28, 28, generator=gen, device=device)
    y = torch.rand(n, 1, 28, 28, generator=gen, device=device)
    out = {}
    for label, use_kernels in (("fused_kernel_ms", True), ("torch_dense_ms", False)):
        original = operators._fused
        if not use_kernels:
            operators._fused = lambda x: False
        try:
            out["polynomial_" + label] = bench(lambda a: operators.polynomial_mutation_(
                a, rate=0.1, eta=15.0, low=0.0, up=1.0, gen=gen), clone=x.clone)
            out["sbx_" + label] = bench(lambda ab: operators.sbx_crossover_(
                *ab, eta=10.0, low=0.0, up=1.0, gen=gen, pair_prob=0.5, gene_prob=0.5),
                clone=lambda: (x.clone(), y.clone()))
        finally:
            operators._fused = original
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--population", type=int, default=32768)
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type != "cuda" or not torch.cuda.is_available() or not cppn_fused.available(dev):
        raise SystemExit("bench/kernels.py: needs a CUDA GPU with Triton")
    gen = torch.Generator(device=dev).manual_seed(0)
    lenet_spec, colour_spec = cppn.CPPNSpec(outputs=1), cppn.CPPNSpec(outputs=3)
    lenet = grown(lenet_spec, args.population, gen, dev)
    colour = grown(colour_spec, 256, gen, dev)
    name = torch.cuda.get_device_name(dev)
    out = {"device": name, "torch": torch.__version__, "triton": __import__("triton").__version__,
           "lenet_population": args.population, "lenet_genomes": described(lenet, lenet_spec),
           "colour_genomes": described(colour, colour_spec),
           "render_lenet_28px": render_sweep(lenet, lenet_spec, 28),
           "render_colour_224px": render_sweep(colour, colour_spec, 224),
           "mutation_lenet": mutation(lenet, lenet_spec, gen),
           "variation_lenet_digits": variation(args.population, gen, dev)}
    print(out, flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    path = Path(__file__).parent / "results" / f"gpu-kernels-{slug}.json"
    atomic_write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
