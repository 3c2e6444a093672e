"""Encodings: how a genome becomes an image.

A population of genomes is a :data:`Genomes` dict of tensors that share a leading population
axis, so slicing, concatenating, archiving and checkpointing are the same for every encoding
(and checkpoints stay tensors, no pickle). Every encoding provides:

- ``sample(n, gen) -> Genomes``: ``n`` random genomes;
- ``decode(genomes, quantize=False) -> (P, C, H, W)`` images in [0, 1] (one batched tensor
  operation); with ``quantize``, rounded to 8-bit levels as :func:`foolkit.images.quantize` rounds
  them (what a PNG keeps, and what evolution scores);
- ``mutate(genomes, gen, generation) -> Genomes`` and ``mate(a, b, gen) -> (a, b)`` (or
  ``crossover = False``): vectorised over the whole batch. As in DEAP, variation may work in
  place on its arguments (use what it returns); :meth:`MapElites.ask` hands it copies of the
  parents, so the archive is never touched.

:class:`DirectEncoding` has one gene per pixel; :class:`CPPNEncoding` wraps :mod:`foolkit.evolve.cppn`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from foolkit import images
from foolkit.evolve import cppn, operators, variation_cpu
from foolkit.evolve.operators import polynomial_mutation_, sbx_crossover_

Genomes = dict[str, torch.Tensor]


def take(genomes: Genomes, index: torch.Tensor | slice) -> Genomes:
    """Rows ``index`` of every tensor."""
    if isinstance(index, torch.Tensor):  # index_select: several times faster than v[index] on CPU
        return {k: v.index_select(0, index) for k, v in genomes.items()}
    return {k: v[index] for k, v in genomes.items()}


def cat(parts: Sequence[Genomes]) -> Genomes:
    """Concatenate populations along the population axis."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def size_of(genomes: Genomes) -> int:
    """Population size."""
    return next(iter(genomes.values())).shape[0]


def rate_scale(generation: int, halve_every: int) -> float:
    """The paper's schedule: the per-gene mutation rate halves every ``halve_every`` generations
    (0 = never). ``generation`` counts from 1."""
    return 0.5 ** ((generation - 1) // halve_every) if halve_every > 0 else 1.0


@functools.lru_cache(maxsize=16)
@torch.inference_mode(False)  # cached: an ordinary tensor, even when first asked for inside inference mode
def bilinear_matrix(size: int, cells: int, device: torch.device | str) -> torch.Tensor:
    """``(size, cells)``: bilinear upsampling along one axis as a matrix (``align_corners=False``),
    so upsampling a batch of grids is two small matrix products, ``A_h @ grid @ A_wᵀ``. Cached: do
    not modify the result."""
    eye = torch.eye(cells, device=device).view(1, 1, cells, cells)
    return torch.nn.functional.interpolate(eye, size=(size, cells), mode="bilinear", align_corners=False)[0, 0]


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)  # cached: ordinary tensors, even when first asked for inside an inference-mode loop
def _stacked_bilinear(height: int, width: int, cells: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear matrices of every cell size, stacked and zero-padded to the largest: ``(K,
    height, G)`` and ``(K, width, G)`` (on the CPU, for :func:`foolkit.evolve.variation_cpu.smooth_`)."""
    G = max(cells)
    bh, bw = torch.zeros(len(cells), height, G), torch.zeros(len(cells), width, G)
    for k, g in enumerate(cells):
        bh[k, :, :g] = bilinear_matrix(height, g, "cpu")
        bw[k, :, :g] = bilinear_matrix(width, g, "cpu")
    return bh, bw


def smooth_mutation_(x: torch.Tensor, *, prob: float, sigma: float | torch.Tensor, cells: Sequence[int],
                     gen: torch.Generator) -> torch.Tensor:
    """Add a spatially smooth perturbation to a fraction ``prob`` of the images ``(P, C, H, W)``,
    in place: Gaussian noise (std ``sigma``, a number or a ``(P,)`` tensor, one per image) on a
    ``g × g`` grid, bilinearly upsampled, ``g`` drawn per image from ``cells``; clamped to [0, 1].
    Moves whole strokes and blobs at once, which per-pixel mutation needs many generations for.
    Returns ``x``."""
    P, C, H, W = x.shape
    if isinstance(sigma, torch.Tensor) and sigma.numel() != P:
        raise ValueError("a tensor sigma must hold one value per image")
    sparse = operators.sparse_on(x.device)  # else: every image, without a host sync, keeping the picked
    if sparse and operators.compiled_on(x):  # the CPU with numba: one compiled loop
        bh, bw = _stacked_bilinear(H, W, tuple(cells))
        return variation_cpu.smooth_(x, bh, bw, prob=prob, sigma=sigma, cells=tuple(cells), gen=gen)
    picked = torch.rand(P, generator=gen, device=x.device) < prob
    rows = picked.nonzero().flatten() if sparse else None
    n = rows.numel() if rows is not None else P
    if n == 0:
        return x
    which = torch.randint(len(cells), (n, 1, 1, 1), generator=gen, device=x.device)
    if isinstance(sigma, torch.Tensor):  # the picked images' own
        sigma = (sigma.reshape(-1).index_select(0, rows) if rows is not None else sigma).to(x.dtype).view(n, 1, 1, 1)
    # on an accelerator every image gets a perturbation, zero where not picked: the noise grid is
    # zeroed (a few numbers an image) rather than the images selected afterwards (two more passes)
    keep = picked.view(P, 1, 1, 1).to(x.dtype) if rows is None else None
    delta = x.index_select(0, rows) if rows is not None else x
    for i, g in enumerate(cells):
        coarse = torch.randn((n, C, g, g), generator=gen, device=x.device, dtype=x.dtype) * sigma
        if len(cells) > 1:
            coarse = coarse * (which == i)
        if keep is not None:
            coarse = coarse * keep
        delta += bilinear_matrix(H, g, x.device) @ coarse @ bilinear_matrix(W, g, x.device).T
    delta.clamp_(0.0, 1.0)  # a zero perturbation leaves an image as it was: its pixels are in [0, 1]
    return x.index_copy_(0, rows, delta) if rows is not None else x


class DirectEncoding:
    """One gene per pixel (and channel), in [0, 1]: the genome *is* the image ``(C, H, W)``.

    Polynomial mutation (per-gene rate, η) and SBX crossover (η_c, pair probability), both
    vectorised over the population.
    """

    name = "direct"
    crossover = True
    scaled_steps = True  # mutate takes a per-offspring scale

    def __init__(self, *, channels: int, size: tuple[int, int], device: torch.device | str = "cpu",
                 mutation_rate: float = 0.1, mutation_eta: float = 15.0, crossover_eta: float = 10.0,
                 crossover_prob: float = 0.5, halve_every: int = 0, init_spread: float = 0.0,
                 eta_spread: float = 0.0, smooth_prob: float = 0.0, smooth_sigma: float = 0.2,
                 smooth_cells: Sequence[int] = (7,)):
        self.init_spread, self.eta_spread = init_spread, eta_spread
        self.smooth_prob, self.smooth_sigma, self.smooth_cells = smooth_prob, smooth_sigma, tuple(smooth_cells)
        self.channels, self.size, self.device = int(channels), (int(size[0]), int(size[1])), torch.device(device)
        self.mutation_rate, self.mutation_eta = mutation_rate, mutation_eta
        self.crossover_eta, self.crossover_prob, self.halve_every = crossover_eta, crossover_prob, halve_every

    def sample(self, n: int, gen: torch.Generator) -> Genomes:
        """Random pixels ``{"pixels": (n, C, H, W)}`` in [0, 1]: uniform (the paper), or with
        ``init_spread`` > 0 each genome's uniform noise raised to a power ``γ``, ``ln γ ~
        U(-spread, spread)``, so the first generation ranges from dark to bright images."""
        u = torch.rand((n, self.channels, *self.size), generator=gen, device=self.device)
        if self.init_spread > 0:
            gamma = torch.exp((torch.rand((n, 1, 1, 1), generator=gen, device=self.device) * 2 - 1) * self.init_spread)
            u = u ** gamma
        return {"pixels": u}

    def decode(self, genomes: Genomes, *, quantize: bool = False) -> torch.Tensor:
        return images.quantize(genomes["pixels"]) if quantize else genomes["pixels"]

    def mutate(self, genomes: Genomes, gen: torch.Generator, generation: int,
               scale: torch.Tensor | None = None) -> Genomes:
        """Polynomial mutation (then the smooth perturbation), in place; returns ``genomes``.
        ``scale`` ``(P,)`` in (0, 1] multiplies each offspring's per-gene rate and smooth σ."""
        x = genomes["pixels"]
        rate: float | torch.Tensor = self.mutation_rate * rate_scale(generation, self.halve_every)
        sigma: float | torch.Tensor = self.smooth_sigma
        if scale is not None:
            rate, sigma = scale * rate, scale * sigma
        eta: float | torch.Tensor = self.mutation_eta
        if self.eta_spread > 0:  # per-offspring step sizes: ln(η+1) spread around the configured η
            shape = (x.shape[0],) + (1,) * (x.dim() - 1)
            r = torch.rand(shape, generator=gen, device=x.device) * 2 - 1
            eta = (self.mutation_eta + 1.0) * torch.exp(r * self.eta_spread) - 1.0
        polynomial_mutation_(x, rate=rate, eta=eta, low=0.0, up=1.0, gen=gen)
        if self.smooth_prob > 0:
            smooth_mutation_(x, prob=self.smooth_prob, sigma=sigma, cells=self.smooth_cells, gen=gen)
        return genomes

    def mate(self, a: Genomes, b: Genomes, gen: torch.Generator) -> tuple[Genomes, Genomes]:
        """SBX crossover of the pairs ``(a[i], b[i])``, in place; returns ``(a, b)``."""
        sbx_crossover_(a["pixels"], b["pixels"], eta=self.crossover_eta, low=0.0, up=1.0, gen=gen,
                       pair_prob=self.crossover_prob)
        return a, b

    def describe(self, genomes: Genomes) -> dict[str, torch.Tensor]:
        return {}


class CPPNEncoding:
    """A CPPN of (x, y, d, bias) per genome, rendered at ``size`` (any resolution), gray
    (1 output) or colour (3 outputs read as hue, lightness, saturation). No crossover, as in
    the paper."""

    name = "cppn"
    crossover = False
    scaled_steps = False  # (CPPNs fool in a few generations with their fixed weight steps)

    def __init__(self, *, channels: int, size: tuple[int, int], device: torch.device | str = "cpu",
                 spec: cppn.CPPNSpec | None = None, halve_every: int = 0):
        self.channels, self.size, self.device = int(channels), (int(size[0]), int(size[1])), torch.device(device)
        self.spec = spec or cppn.CPPNSpec(outputs=1 if channels == 1 else 3)
        if self.spec.outputs != (1 if channels == 1 else 3):
            raise ValueError(f"a {channels}-channel CPPN needs {1 if channels == 1 else 3} outputs")
        self.halve_every = halve_every
        self._workspace = cppn.Workspace()  # the render's node values, reused from generation to generation

    def sample(self, n: int, gen: torch.Generator) -> Genomes:
        return cppn.sample(self.spec, n, gen, self.device)

    def decode(self, genomes: Genomes, size: tuple[int, int] | None = None, *, quantize: bool = False) -> torch.Tensor:
        h, w = size or self.size
        return cppn.render(genomes, self.spec, h, w, quantize=quantize, workspace=self._workspace)

    def mutate(self, genomes: Genomes, gen: torch.Generator, generation: int) -> Genomes:
        return cppn.mutate(genomes, self.spec, gen, rate_scale=rate_scale(generation, self.halve_every))

    def mate(self, a: Genomes, b: Genomes, gen: torch.Generator) -> tuple[Genomes, Genomes]:
        return a, b

    def describe(self, genomes: Genomes) -> dict[str, torch.Tensor]:
        return cppn.describe(genomes, self.spec)


Encoding = DirectEncoding | CPPNEncoding
