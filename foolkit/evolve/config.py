"""EvolveConfig (everything a run needs, saved into config.json and checkpoints) and EvolveResult."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from foolkit.errors import FoolkitError
from foolkit.evolve.cppn import ACTIVATIONS, PAPER_ACTIVATIONS, check_activations
from foolkit.models.classifier import Classifier


#: the settings that make foolkit's operators the paper's (:meth:`EvolveConfig.paper`, ``--paper``)
PAPER_OPERATORS: dict[str, Any] = {"selection": "uniform", "init_spread": 0.0, "smooth_prob": 0.0, "step_deficit": 0.0}


@dataclass
class EvolveConfig:
    """How to make fooling images; all fields are JSON-able.

    ``classes`` are indices (or names) of the model's classes to fool, ``None`` for all.
    ``size`` is the image size ``(H, W)`` (``None``: the model's input size, or 256/224 of it
    with ``crops=10``). ``channels`` ``None`` follows the model; 1 evolves gray images for a
    colour model. ``generations`` counts steps of the gradient method too.
    """

    method: str = "evolve"  # evolve | gradient
    encoding: str = "direct"  # direct | cppn
    generations: int = 100
    population: int = 200
    classes: list[int | str] | None = None
    size: tuple[int, int] | None = None
    channels: int | None = None
    seed: int = 0
    # direct encoding (REFERENCES.md: p = 0.1, η_m = 15, SBX η_c = 10 with probability 0.5)
    mutation_rate: float = 0.1
    mutation_eta: float = 15.0
    crossover_eta: float = 10.0
    crossover_prob: float = 0.5
    halve_every: int = 0  # halve the per-gene mutation rates every K generations (0 = never)
    init_spread: float = 2.0  # direct: first images u**γ, ln γ ~ U(±spread) (0 = uniform noise, the paper)
    smooth_prob: float = 0.5  # direct: fraction of offspring that also get a smooth low-resolution perturbation
    smooth_sigma: float = 0.2
    eta_spread: float = 0.0  # direct: per-offspring η, ln(η+1) ~ ln(mutation_eta+1) ± spread (0 = fixed)
    # direct: an offspring's per-gene mutation rate and smooth σ are scaled by min(1, sqrt(d / step_deficit)),
    # at least step_min, where d = -ln(confidence) of the cell its parent came from: elites close to
    # certain are refined with small steps, which improve them far more often (0 = fixed steps, the paper)
    step_deficit: float = 0.003
    step_min: float = 0.05
    # CPPN encoding
    cppn_hidden: int = 16
    cppn_weight_range: float = 10.0
    cppn_activations: list[str] = field(default_factory=lambda: list(PAPER_ACTIVATIONS))
    # parents: "uniform" over occupied cells (the paper) or "lagging" (a lagging_fraction of them
    # drawn in proportion to each cell's -log confidence, the rest uniformly)
    selection: str = "lagging"
    lagging_fraction: float = 0.9
    # gradient method
    lr: float = 0.5
    # evaluation
    crops: int = 1
    batch_size: int = 256  # images per forward pass (bounds memory)
    # stopping and checkpoints
    until: float | None = None  # stop once every evolved class reaches this confidence
    time_limit: float | None = None  # seconds of this invocation
    checkpoint_every: int = 10

    @classmethod
    def paper(cls, **kw: Any) -> EvolveConfig:
        """The paper's operators exactly: uniform parents, uniform-noise start, per-pixel
        polynomial mutation and SBX only (foolkit's defaults add a varied start, smooth
        mutations, deficit-weighted parents and steps, which fool MNIST LeNet ~5x sooner)."""
        return cls(**{**PAPER_OPERATORS, **kw})

    def validate(self) -> None:
        """Raise :class:`FoolkitError` (one line) on a bad value."""
        def bad(msg: str) -> FoolkitError:
            return FoolkitError(msg)

        if self.method not in ("evolve", "gradient"):
            raise bad(f"unknown method {self.method!r}: use evolve or gradient")
        if self.encoding not in ("direct", "cppn"):
            raise bad(f"unknown encoding {self.encoding!r}: use direct or cppn")
        if self.generations < 1:  # (0 would write the empty cells' placeholder images as elites)
            raise bad(f"generations must be >= 1, got {self.generations}")
        if self.method == "gradient" and self.encoding != "direct":
            raise bad(f"encoding {self.encoding} is for method evolve: gradient ascent optimises the pixels themselves")
        if self.method == "evolve" and self.population < 2:  # gradient ascent has one image per class instead
            raise bad(f"population must be >= 2, got {self.population}")
        if not 0 <= self.seed < 2**64:
            raise bad(f"seed must be in 0..2^64-1, got {self.seed}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1 or max(self.size) > 4096):
            raise bad(f"size must be two values in 1..4096 (H W), got {list(self.size)}")
        if self.channels not in (None, 1, 3):
            raise bad(f"channels must be 1 or 3, got {self.channels}")
        if not 0.0 <= self.mutation_rate <= 1.0:
            raise bad(f"mutation rate must be in [0, 1], got {self.mutation_rate}")
        if self.mutation_eta <= 0 or self.crossover_eta <= 0:
            raise bad("mutation and crossover eta must be positive")
        if not 0.0 <= self.crossover_prob <= 1.0:
            raise bad(f"crossover probability must be in [0, 1], got {self.crossover_prob}")
        if self.halve_every < 0:
            raise bad(f"halve-every must be >= 0, got {self.halve_every}")
        if not 0 <= self.cppn_hidden <= 256:
            raise bad(f"cppn hidden capacity must be in 0..256, got {self.cppn_hidden}")
        if self.cppn_weight_range <= 0:
            raise bad("cppn weight range must be positive")
        if self.init_spread < 0 or self.eta_spread < 0 or self.smooth_sigma < 0:
            raise bad("init/eta spread and smooth sigma must be >= 0")
        if self.step_deficit < 0 or not 0.0 < self.step_min <= 1.0:
            raise bad(f"step deficit must be >= 0 and step min in (0, 1], got {self.step_deficit} and {self.step_min}")
        if not 0.0 <= self.smooth_prob <= 1.0:
            raise bad(f"smooth mutation probability must be in [0, 1], got {self.smooth_prob}")
        if self.selection not in ("uniform", "lagging"):
            raise bad(f"unknown selection {self.selection!r}: use uniform or lagging")
        if not 0.0 <= self.lagging_fraction <= 1.0:
            raise bad(f"lagging fraction must be in [0, 1], got {self.lagging_fraction}")
        if self.lr <= 0:
            raise bad(f"learning rate must be positive, got {self.lr}")
        if self.crops not in (1, 10):
            raise bad(f"crops must be 1 or 10, got {self.crops}")
        if self.batch_size < 1:
            raise bad(f"batch size must be >= 1, got {self.batch_size}")
        if self.until is not None and not 0.0 < self.until <= 1.0:
            raise bad(f"--until must be a confidence in (0, 1], got {self.until}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise bad(f"time limit must be positive, got {self.time_limit}")
        if self.checkpoint_every < 1:
            raise bad(f"checkpoint-every must be >= 1, got {self.checkpoint_every}")
        try:
            check_activations(self.cppn_activations)
        except ValueError as e:
            raise bad(str(e)) from None

    @property
    def genomes_per_forward(self) -> int:
        """Images per chunk so that one forward pass sees at most ``batch_size`` model inputs
        (``crops`` of each image)."""
        return max(1, self.batch_size // self.crops)

    # -- against a model -----------------------------------------------------------
    def class_indices(self, model: Classifier) -> list[int]:
        """The evolved classes as sorted, de-duplicated indices (FoolkitError for unknown ones)."""
        if self.classes is None:
            return list(range(model.num_classes))
        if len(self.classes) == 0:
            raise FoolkitError("no classes to evolve")
        return sorted({model.class_index(c) for c in self.classes})

    def image_size(self, model: Classifier) -> tuple[int, int]:
        _, h, w = model.input_size
        if self.size is not None:
            size = (int(self.size[0]), int(self.size[1]))
        elif self.crops == 10:
            size = (round(h * 256 / 224), round(w * 256 / 224))
        else:
            size = (h, w)
        if self.crops == 10 and (size[0] < h or size[1] < w):
            raise FoolkitError(f"10-crop averaging needs images at least {h}x{w}, got {size[0]}x{size[1]}")
        return size

    def image_channels(self, model: Classifier) -> int:
        return self.channels or model.input_size[0]

    # -- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        d["classes"] = list(self.classes) if self.classes is not None else None  # tuples read back as lists
        d["cppn_activations"] = list(self.cppn_activations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvolveConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise FoolkitError(f"unknown evolve settings {sorted(unknown)} (config from a newer foolkit?)")
        if "cppn_activations" not in d:  # saved before the set was a setting: all six were used then
            d = {**d, "cppn_activations": list(ACTIVATIONS)}
        if "step_deficit" not in d:  # saved before steps were scaled: they were fixed then
            d = {**d, "step_deficit": 0.0}
        for f in dataclasses.fields(cls):  # a hand-edited config.json: one line, not a TypeError later
            value, default = d.get(f.name), f.default
            if value is None or default is None or default is dataclasses.MISSING:
                continue
            kinds = (int, float) if isinstance(default, float) else (type(default),)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise FoolkitError(f"evolve setting {f.name} must be {type(default).__name__}, got {value!r}")
        for key in ("until", "time_limit", "channels"):
            if d.get(key) is not None and (isinstance(d[key], bool) or not isinstance(d[key], (int, float))):
                raise FoolkitError(f"evolve setting {key} must be a number or null, got {d[key]!r}")
        for key in ("classes", "size", "cppn_activations"):
            if d.get(key) is not None and not isinstance(d[key], (list, tuple)):
                raise FoolkitError(f"evolve setting {key} must be a list, got {d[key]!r}")
        cfg = cls(**d)
        if cfg.size is not None:
            cfg.size = (int(cfg.size[0]), int(cfg.size[1]))
        return cfg


@dataclass
class EvolveResult:
    """What a run produced: one elite per evolved class.

    ``images`` ``(K, C, H, W)`` in [0, 1] (8-bit quantised: exactly what the PNGs hold);
    ``classes`` model class indices ``(K,)``; ``names``; ``confidences`` ``(K,)`` in [0, 1]
    (0 for a class never filled); ``found`` generation each elite appeared (1-based);
    ``history`` one record per generation (the lines of log.jsonl); ``stopped`` why the run
    ended (generations, until, time-limit).
    """

    images: torch.Tensor
    classes: list[int]
    names: list[str]
    confidences: torch.Tensor
    found: list[int]
    generations_done: int
    evaluations: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "generations"
