"""Fitness: log-softmax confidences of a batch of images in the evolved classes.

The softmax is taken over *all* the model's classes and then the evolved columns are kept, so
an 11-class model whose last class is ``fooling`` can be attacked on its 10 digit classes.
Images are first mapped to the model's input (:func:`foolkit.images.model_view`: channels,
centre crop, resize) or, with ``crops=10``, to the paper's ten crops (four corners, centre,
and their mirror images) whose softmax outputs are averaged.

The log-softmax keeps its precision next to confidence 1 (:func:`log_softmax`), so the
fitness of an elite keeps improving where its float32 softmax already reads 1.0; averaging
ten crops' probabilities saturates there, at about 1 - 1e-7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from foolkit.images import model_view
from foolkit.models.classifier import Classifier


def ten_crops(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(10, B, C, height, width)``: corners, centre, then all five mirrored."""
    H, W = x.shape[-2:]
    top, left = (H - height) // 2, (W - width) // 2
    origins = [(0, 0), (0, W - width), (H - height, 0), (H - height, W - width), (top, left)]
    crops = [x[..., i:i + height, j:j + width] for i, j in origins]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``torch.log_softmax(logits, dim=1)``, exact near confidence 1 in float32 too.

    The top class's log-probability is ``-log1p(rest)``, ``rest`` the other classes' mass
    relative to it; torch's ``log(1 + rest)`` rounds ``1 + rest`` to 1 once rest < 6e-8 (a logit
    gap of about 16.6), and every image past that would score a tie at 0. Differentiable.
    """
    top, arg = logits.max(dim=1, keepdim=True)
    shifted = logits - top
    rest = shifted.exp().scatter(1, arg, 0.0).sum(1, keepdim=True)
    return shifted - torch.log1p(rest)


class Scorer:
    """``scorer(images) -> (B, K)`` log-confidences of images ``(B, C, H, W)`` in [0, 1] in the
    ``classes`` (indices into the model's classes). Differentiable; wrap in ``no_grad`` for evolution."""

    def __init__(self, model: Classifier, classes: Sequence[int], *, crops: int = 1):
        if crops not in (1, 10):
            raise ValueError("crops must be 1 or 10")
        self.model, self.crops = model, crops
        self.index = torch.as_tensor(list(classes), dtype=torch.long, device=model.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        c, h, w = self.model.input_size
        if self.crops == 1:
            logp = log_softmax(self.model(model_view(images, self.model.input_size)).float())
        else:
            views = ten_crops(images, h, w).flatten(0, 1)  # (10B, C, h, w)
            logp = log_softmax(self.model(model_view(views, self.model.input_size)).float())
            logp = torch.logsumexp(logp.view(10, images.shape[0], -1), dim=0) - math.log(10)
        return logp.index_select(1, self.index)
