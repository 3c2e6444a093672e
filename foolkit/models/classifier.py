"""Classifier: a network that owns its preprocessing.

A :class:`Classifier` takes images in ``[0, 1]`` of shape ``(B, C, H, W)`` at its
``input_size`` and returns logits ``(B, num_classes)``. It subtracts ``mean`` and divides by
``std`` itself, so attacks and generators never normalise anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from foolkit.errors import FoolkitError


def _loose(name: str) -> str:
    """A class name compared loosely: lower case, spaces, hyphens and underscores alike."""
    return " ".join(re.split(r"[\s_-]+", name.lower())).strip()


class Classifier(nn.Module):
    """Wrap ``net`` (any module mapping normalised images to logits)."""

    def __init__(self, net: nn.Module, *, mean: Sequence[float], std: Sequence[float], classes: Sequence[str],
                 input_size: Sequence[int], bounds: tuple[float, float] = (0.0, 1.0), name: str | None = None,
                 meta: dict[str, Any] | None = None):
        super().__init__()
        c = int(input_size[0])
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.numel() not in (1, c) or std_t.numel() not in (1, c):
            raise FoolkitError(f"mean/std need 1 or {c} values, got {mean_t.numel()} and {std_t.numel()}")
        if (std_t <= 0).any():
            raise FoolkitError("std values must be positive")
        if len(input_size) != 3:
            raise FoolkitError(f"input_size must be [C, H, W], got {list(input_size)}")
        if not classes:
            raise FoolkitError("a classifier needs at least one class name")
        self.net = net
        self.register_buffer("mean", mean_t.expand(c).clone().view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", std_t.expand(c).clone().view(1, c, 1, 1), persistent=False)
        self.classes: list[str] = [str(k) for k in classes]
        self.input_size: tuple[int, int, int] = (c, int(input_size[1]), int(input_size[2]))
        self.bounds: tuple[float, float] = (float(bounds[0]), float(bounds[1]))
        self.name = name or type(net).__name__
        self.meta: dict[str, Any] = dict(meta or {})
        #: the most images ``net`` takes at once (None: any number)
        self.max_batch: int | None = None
        #: L2 length in the input of a perturbation whose effect on the network's own view has length 1
        #: (:func:`foolkit.images.view_scale`: above 1 for a photo the model sees shrunk); the
        #: minimum-norm attacks scale their first radius and step lengths by it
        self.view_scale: float = 1.0

    # -- the module ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` in ``bounds`` → logits ``(B, num_classes)``; in chunks of at
        most ``max_batch`` where the network takes no more (an export with a capped batch)."""
        z = (x - self.mean) / self.std
        if self.max_batch is not None and len(z) > self.max_batch:
            return torch.cat([self.net(chunk) for chunk in z.split(self.max_batch)])
        return self.net(z)

    def train(self, mode: bool = True) -> Classifier:
        """Like ``nn.Module.train`` but tolerant of children that refuse it.

        The module of a loaded ``torch.export`` program raises on ``.train()`` /
        ``.eval()``; it is frozen in the mode it was exported in (eval for inference), so
        skipping it is the right thing.
        """
        self.training = mode
        for module in self.children():
            try:
                module.train(mode)
            except (NotImplementedError, RuntimeError):
                pass
        return self

    # -- conveniences ----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def class_index(self, label: int | str) -> int:
        """A class given by index (``3``, ``"3"``) or name (``"tabby"``, case-insensitive)."""
        if isinstance(label, int):
            idx = label
        else:
            text = str(label).strip()
            lowered = [k.lower() for k in self.classes]
            if text.lower() in lowered:
                return lowered.index(text.lower())
            loose = [_loose(k) for k in self.classes]  # "ankle boot" is "Ankle-Boot", "ankle_boot"
            if text.lstrip("-").isdigit():  # a number is an index ("-1" is not the class named "1")
                idx = int(text)
            elif _loose(text) in loose and loose.count(_loose(text)) == 1:
                return loose.index(_loose(text))
            else:
                near = [k for k in self.classes if _loose(text) in _loose(k)][:5]
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise FoolkitError(f"unknown class {text!r} for model {self.name}{hint}")
        if not 0 <= idx < self.num_classes:
            raise FoolkitError(f"class index {idx} out of range for model {self.name} (0..{self.num_classes - 1})")
        return idx

    @torch.no_grad()
    def predict(self, x: torch.Tensor, *, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode top-1 ``(labels, confidences)`` for ``(B, C, H, W)``, chunked; on ``x``'s device."""
        probs = self.probabilities(x, batch_size=batch_size)
        conf, labels = probs.max(dim=1)
        return labels, conf

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Eval-mode softmax ``(B, num_classes)``, chunked to bound memory. Restores the mode."""
        was_training = self.training
        self.eval()
        try:
            dev = self.device
            out = [torch.softmax(self(x[i:i + batch_size].to(dev)).float(), dim=1) for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out).to(x.device) if out else torch.empty(0, self.num_classes, device=x.device)

    @torch.no_grad()
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of every parameter and buffer, normalisation included:
        the same name with other weights (``--weights``, another download) gets another one."""
        import hashlib

        h = hashlib.sha256()
        try:
            state = {**self.state_dict(), "mean": self.mean, "std": self.std}  # (mean and std are not persistent)
        except Exception:  # a compiled module that keeps its weights to itself
            return "unknown"
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                h.update(key.encode())
                h.update(str(value.dtype).encode())
                h.update(str(tuple(value.shape)).encode())
                h.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, classes={self.num_classes}, bounds={self.bounds}"
