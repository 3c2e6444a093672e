"""The generation loop: MAP-Elites over classes on a DEAP toolbox, with ask / tell.

One generation::

    offspring = evolver.ask()                                    # parents from occupied cells, mate, mutate
    scores = toolbox.map(toolbox.evaluate, offspring)            # (P, K) log-confidences, chunked forwards
    update = evolver.tell(offspring, scores)                     # archive.add: what changed

:meth:`MapElites.step` does exactly that. The DEAP toolbox holds the operators (``sample``,
``select``, ``mate``, ``mutate``, ``evaluate``, ``map``); ``map`` is the one evaluation hook:
it splits the offspring batch into chunks (``batch_size`` model inputs each), decodes each chunk (all
CPPNs rendered in one pass) and scores it with one forward pass on the model's device, so
memory stays bounded whatever the population and image size. Every random number comes from
one ``torch.Generator`` on that device, whose state is part of :meth:`state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from deap import base

from foolkit.evolve import cppn
from foolkit.evolve.archive import Archive, ArchiveUpdate
from foolkit.evolve.config import EvolveConfig
from foolkit.evolve.encodings import CPPNEncoding, DirectEncoding, Encoding, Genomes, cat, size_of, take
from foolkit.evolve.scoring import Scorer
from foolkit.models.classifier import Classifier


def make_encoding(config: EvolveConfig, *, channels: int, size: tuple[int, int],
                  device: torch.device) -> Encoding:
    """The encoding a config asks for."""
    if config.encoding == "direct":
        return DirectEncoding(channels=channels, size=size, device=device, mutation_rate=config.mutation_rate,
                              mutation_eta=config.mutation_eta, crossover_eta=config.crossover_eta,
                              crossover_prob=config.crossover_prob, halve_every=config.halve_every,
                              init_spread=config.init_spread, eta_spread=config.eta_spread,
                              smooth_prob=config.smooth_prob, smooth_sigma=config.smooth_sigma)
    spec = cppn.CPPNSpec(outputs=1 if channels == 1 else 3, hidden=config.cppn_hidden,
                         activations=tuple(config.cppn_activations), weight_range=config.cppn_weight_range,
                         weight_rate=config.mutation_rate, weight_eta=config.mutation_eta,
                         activation_rate=config.mutation_rate)
    return CPPNEncoding(channels=channels, size=size, device=device, spec=spec, halve_every=config.halve_every)


def chunked_map(batch_size: int) -> Callable[[Callable[[Genomes], torch.Tensor], Genomes], torch.Tensor]:
    """A ``toolbox.map`` that applies ``evaluate`` to chunks of ``batch_size`` genomes and
    concatenates the ``(chunk, K)`` results."""
    def map_(evaluate: Callable[[Genomes], torch.Tensor], genomes: Genomes) -> torch.Tensor:
        n = size_of(genomes)
        if n <= batch_size:  # one chunk: no copy
            return evaluate(genomes)
        return torch.cat([evaluate(take(genomes, slice(i, i + batch_size))) for i in range(0, n, batch_size)])
    return map_


class MapElites:
    """MAP-Elites over the evolved classes (ask / tell), one cell per class."""

    def __init__(self, model: Classifier, config: EvolveConfig, classes: list[int]):
        self.model, self.config, self.classes = model, config, classes
        device = model.device
        self.encoding = make_encoding(config, channels=config.image_channels(model), size=config.image_size(model),
                                      device=device)
        self.scorer = Scorer(model, classes, crops=config.crops)
        self.archive = Archive(len(classes), device=device)
        self.gen = torch.Generator(device=device).manual_seed(config.seed)
        self.generation = 0  # generations completed
        self.evaluations = 0
        self.population: Genomes | None = None  # the last offspring batch
        self._filled = False  # some cell holds an elite (known on the host)

        tb = base.Toolbox()
        tb.register("sample", self.encoding.sample, gen=self.gen)
        tb.register("select", self.select_parents)
        tb.register("mate", self.encoding.mate, gen=self.gen)
        tb.register("mutate", self.encoding.mutate, gen=self.gen)
        tb.register("decode", self.encoding.decode)
        tb.register("evaluate", self.evaluate)
        tb.register("map", chunked_map(config.genomes_per_forward))
        self.toolbox = tb

    # -- operators ------------------------------------------------------------------
    def select_parents(self, n: int) -> tuple[Genomes, torch.Tensor]:
        """``n`` parents drawn from the occupied cells, and the cell each came from: uniformly (the
        paper) or, with ``selection="lagging"``, a ``lagging_fraction`` of them in proportion to each
        cell's deficit ``-log(confidence)``, so the classes furthest from fooled get most of the
        offspring."""
        assert self.archive.genomes is not None
        occupied = self.archive.occupied
        pick = torch.multinomial(occupied.float(), n, replacement=True, generator=self.gen)
        k = int(n * self.config.lagging_fraction) if self.config.selection == "lagging" else 0
        if k > 0:  # an occupied cell weighs at least 1e-12 (a saturated one), an empty one nothing
            deficit = torch.where(occupied, (-self.archive.fitness).clamp_min(1e-12), 0.0)
            pick[:k] = torch.multinomial(deficit, k, replacement=True, generator=self.gen)
        return take(self.archive.genomes, pick), pick

    def step_scale(self, cells: torch.Tensor) -> torch.Tensor | None:
        """How strongly to mutate the offspring of parents from ``cells``: ``min(1, sqrt(d /
        step_deficit))``, at least ``step_min``, with ``d`` the cell's deficit ``-log(confidence)``
        (None: fixed steps). Near certainty most full-size steps make an elite worse: on a LeNet
        elite at 99.93%, 0.9% of default polynomial mutations improved it against 12% at a third
        of the rate, and 0.05% of smooth perturbations against 5% at a quarter of the σ."""
        if self.config.step_deficit <= 0 or not self.encoding.scaled_steps:
            return None
        deficit = (-self.archive.fitness).index_select(0, cells).clamp_min(0.0)
        return (deficit / self.config.step_deficit).sqrt_().clamp_(self.config.step_min, 1.0)

    @torch.inference_mode()
    def evaluate(self, genomes: Genomes) -> torch.Tensor:
        """Decode a chunk and score it in every cell: → ``(B, K)`` log-confidences of the
        8-bit-quantised images (what a PNG keeps, so saved elites score the same)."""
        return self.scorer(self.toolbox.decode(genomes, quantize=True))

    # -- ask / tell --------------------------------------------------------------------
    # Genomes are never differentiated, so ask, tell and step run in inference mode: no autograd
    # bookkeeping (version counters, view tracking), about a tenth off each of the generation's
    # several hundred small tensor operations on CPU. Their tensors are inference tensors: read
    # them anywhere, but change them in place only inside inference mode (or copy them first).
    @torch.inference_mode()
    def ask(self) -> Genomes:
        """The next offspring batch of ``population`` genomes (random ones in generation 1)."""
        n = self.config.population
        if not self._filled:  # a cell once filled stays filled: one host sync, until one is
            self._filled = self.archive.genomes is not None and bool(self.archive.occupied.any())
            if not self._filled:
                return self.toolbox.sample(n)
        parents, cells = self.toolbox.select(n)  # copies of the elites: variation may work on them in place
        if self.encoding.crossover:  # (children stay in their first parent's place)
            half = n // 2
            a, b = self.toolbox.mate(take(parents, slice(0, half)), take(parents, slice(half, 2 * half)))
            parents = cat([a, b, take(parents, slice(2 * half, n))])
        scale = self.step_scale(cells)
        if scale is None:
            return self.toolbox.mutate(parents, generation=self.generation + 1)
        return self.toolbox.mutate(parents, generation=self.generation + 1, scale=scale)

    @torch.inference_mode()
    def tell(self, offspring: Genomes, scores: torch.Tensor) -> ArchiveUpdate:
        """Offer the scored offspring to the archive and close the generation."""
        update = self.archive.add(offspring, scores, self.generation + 1)
        self.population = offspring
        self.generation += 1
        self.evaluations += size_of(offspring)
        return update

    @torch.inference_mode()
    def step(self) -> ArchiveUpdate:
        offspring = self.ask()
        return self.tell(offspring, self.toolbox.map(self.toolbox.evaluate, offspring))

    # -- results and checkpoints ------------------------------------------------------
    @torch.no_grad()
    def elite_images(self) -> torch.Tensor:
        """``(K, C, H, W)`` quantised images of the elites (zeros for empty cells)."""
        if self.archive.genomes is None:
            c = self.encoding.channels
            return torch.zeros(len(self.classes), c, *self.encoding.size, device=self.model.device)
        n = self.archive.cells
        bs = self.config.genomes_per_forward
        return torch.cat([self.encoding.decode(take(self.archive.genomes, slice(i, i + bs)), quantize=True)
                          for i in range(0, n, bs)])

    def describe(self) -> dict[str, torch.Tensor]:
        """Statistics of the last offspring batch for the logs (0-d tensors: no host sync)."""
        return self.encoding.describe(self.population) if self.population is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"archive": self.archive.state_dict(), "population": self.population or {},
                "generator": self.gen.get_state(), "generation": torch.tensor(self.generation),
                "evaluations": torch.tensor(self.evaluations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.model.device
        self.archive.load_state_dict(state["archive"])
        self._filled = False
        self.population = {k: v.to(dev) for k, v in state["population"].items()} or None
        self.gen.set_state(state["generator"])
        self.generation = int(state["generation"])
        self.evaluations = int(state["evaluations"])
