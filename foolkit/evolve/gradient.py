"""Gradient-ascent fooling images (the paper's sec. 3.5 comparison): start from noise and
maximise one class's probability per image, all evolved classes in one batch.

The objective is the class's log-odds ``log(p / (1 − p))``, not ``log p``: the gradient of
``log p`` shrinks with ``1 − p``, and Adam, whose step is scaled by the gradients it remembers,
then crawls (on MNIST LeNet, 5–7 of 10 digits at 99.99% after 100 steps; with the log-odds all
10 within 21 steps, 14 for the median seed: ``bench/evolve_gradient.py``). In ``log(1 − p)``,
``p`` is capped at ``1 − 1e-12``: finite where float32 reads 1.

Pixels are parametrised as ``x = sigmoid(u)`` so they stay in [0, 1]; the forward pass sees
the 8-bit-quantised image through a straight-through estimator, so the confidence being
maximised is that of the PNG that will be saved. Adam on ``u``; one step per "generation".
The best image seen per class is kept in an :class:`~foolkit.evolve.archive.Archive`, so the
run folder, logs, checkpoints and results are those of evolution.
"""

from __future__ import annotations

from typing import Any

import torch

from foolkit.evolve.archive import Archive, ArchiveUpdate
from foolkit.evolve.config import EvolveConfig
from foolkit.evolve.scoring import Scorer
from foolkit.images import quantize
from foolkit.models.classifier import Classifier


class GradientAscent:
    """One image per evolved class, pushed up its class's log-odds by Adam."""

    def __init__(self, model: Classifier, config: EvolveConfig, classes: list[int]):
        self.model, self.config, self.classes = model, config, classes
        dev = model.device
        self.scorer = Scorer(model, classes, crops=config.crops)
        self.archive = Archive(len(classes), device=dev)
        self.gen = torch.Generator(device=dev).manual_seed(config.seed)
        c, (h, w) = config.image_channels(model), config.image_size(model)
        noise = 0.25 + 0.5 * torch.rand((len(classes), c, h, w), generator=self.gen, device=dev)
        self.u = torch.logit(noise).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.u], lr=config.lr)
        self.generation = 0
        self.evaluations = 0
        self.population = None

    def images(self) -> torch.Tensor:
        """``(K, C, H, W)`` current images in [0, 1] (not quantised)."""
        return torch.sigmoid(self.u)

    @staticmethod
    def objective(logp: torch.Tensor) -> torch.Tensor:
        """What each image maximises, from its class's log-probability: the log-odds
        ``log(p / (1 − p))``, with ``p`` capped at ``1 − 1e-12`` in ``log(1 − p)``."""
        return logp - torch.log(-torch.expm1(logp.clamp(max=-1e-12)))

    def step(self) -> ArchiveUpdate:
        K, bs = len(self.classes), self.config.genomes_per_forward
        self.model.eval()
        grad = torch.empty_like(self.u)
        own = torch.empty(K, device=self.u.device)
        for i in range(0, K, bs):
            u = self.u.detach()[i:i + bs].requires_grad_(True)  # a leaf per chunk: its gradient is chunk-sized
            x = torch.sigmoid(u)
            xq = x + (quantize(x) - x).detach()  # straight-through 8-bit rounding
            logp = self.scorer(xq)  # (b, K)
            rows = torch.arange(logp.shape[0], device=logp.device)
            mine = logp[rows, rows + i]
            (grad[i:i + bs],) = torch.autograd.grad(-self.objective(mine).sum(), u)  # the model's .grad untouched
            own[i:i + bs] = mine.detach()
        self.u.grad = grad
        scores = torch.full((K, K), float("-inf"), device=own.device)
        scores.diagonal().copy_(own)
        update = self.archive.add({"pixels": quantize(self.images().detach())}, scores, self.generation + 1)
        self.optimizer.step()
        self.generation += 1
        self.evaluations += K
        return update

    @torch.no_grad()
    def elite_images(self) -> torch.Tensor:
        if self.archive.genomes is None:
            return quantize(self.images().detach())
        return self.archive.genomes["pixels"].clone()

    def describe(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"archive": self.archive.state_dict(), "u": self.u.detach(), "optimizer": self.optimizer.state_dict(),
                "generation": torch.tensor(self.generation), "evaluations": torch.tensor(self.evaluations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.archive.load_state_dict(state["archive"])
        with torch.no_grad():
            self.u.copy_(state["u"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generation = int(state["generation"])
        self.evaluations = int(state["evaluations"])
