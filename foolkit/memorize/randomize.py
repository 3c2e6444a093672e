"""The data variants of Zhang et al. 2017's randomisation tests, exactly as the paper defines them.

A variant is named by a string:

``true``
    the data unchanged.
``corrupt:p``
    each *training* label independently, with probability ``p``, replaced by a class drawn
    uniformly at random (which may equal the old one, so about ``p·(K-1)/K`` of the labels
    change: 0.9·p on 10 classes). The mask of replaced labels is kept in ``Variant.replaced``.
``random-labels``
    every training label replaced by a uniformly random class (``corrupt:1``).
``shuffled-pixels``
    one random permutation of the pixel positions, the same for every train and test image.
``random-pixels``
    a different random permutation for every image (train and test).
``gaussian``
    every image replaced by pixels drawn from a Gaussian with the training set's per-channel
    mean and variance (train and test images alike; labels kept, so they carry no signal).

Labels are drawn once (fixed across epochs); test labels are never corrupted; each variant's
normalisation (``Variant.mean`` / ``Variant.std``) is computed from its own training images.
Everything is drawn from explicit ``torch.Generator`` objects seeded by ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from foolkit.errors import FoolkitError

LABEL_VARIANTS = ("true", "random-labels")
PIXEL_VARIANTS = ("shuffled-pixels", "random-pixels", "gaussian")
VARIANTS = ("true", "corrupt:P", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")


@dataclass
class Variant:
    """One randomised copy of a dataset.

    ``x_train`` / ``x_test``: float32 ``(N, C, H, W)`` (in [0, 1] except for ``gaussian``, whose
    pixels are unclipped Gaussian draws); ``y_train`` / ``y_test``: int64 ``(N,)``;
    ``replaced``: bool ``(N_train,)``, True where the label was re-drawn; ``y_original``: the
    training labels before corruption.
    """

    name: str
    corruption: float | None       #: label-corruption probability (None for the pixel variants)
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_original: torch.Tensor
    replaced: torch.Tensor
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def changed_fraction(self) -> float:
        """Fraction of training labels that differ from the original ones."""
        return float((self.y_train != self.y_original).float().mean()) if len(self.y_train) else 0.0

    def summary(self) -> dict[str, Any]:
        return {"variant": self.name, "corruption": self.corruption, "n_train": len(self.y_train),
                "n_test": len(self.y_test), "replaced_fraction": float(self.replaced.float().mean()),
                "changed_fraction": self.changed_fraction, "mean": self.mean, "std": self.std}


def parse_variant(spec: str) -> tuple[str, float | None]:
    """``"corrupt:0.4"`` → ``("corrupt:0.4", 0.4)``; ``"random-labels"`` → ``("random-labels", 1.0)``;
    ``"true"`` → ``("true", 0.0)``; pixel variants → ``(name, None)``. Raises FoolkitError."""
    s = spec.strip().lower()
    if s == "true":
        return "true", 0.0
    if s == "random-labels":
        return "random-labels", 1.0
    if s in PIXEL_VARIANTS:
        return s, None
    if s.startswith("corrupt:"):
        try:
            p = float(s.split(":", 1)[1])
        except ValueError:
            raise FoolkitError(f"bad corruption level in {spec!r}: expected corrupt:P with P in [0, 1]") from None
        if not 0.0 <= p <= 1.0:
            raise FoolkitError(f"corruption level must be in [0, 1], got {p} in {spec!r}")
        return f"corrupt:{p:g}", p
    raise FoolkitError(f"unknown data variant {spec!r}; choose from {', '.join(VARIANTS)}")


def corrupt_labels(y: torch.Tensor, p: float, num_classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each label independently with probability ``p`` by a uniformly random class.

    ``y``: int64 ``(N,)``. Returns ``(new_labels, replaced_mask)``; the new class may equal the
    old one, so the expected fraction of *changed* labels is ``p·(K-1)/K``.
    """
    replaced = torch.rand(len(y), generator=generator) < p
    draws = torch.randint(num_classes, (len(y),), generator=generator)
    return torch.where(replaced, draws, y), replaced


def random_permutations(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent uniformly random permutations of ``range(size)``: int64 ``(n, size)``,
    drawn in one batched argsort (no per-image loop)."""
    return torch.argsort(torch.rand(n, size, generator=generator), dim=1)


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Permute pixel positions (all channels alike). ``x``: ``(N, C, H, W)``; ``perm``: ``(H·W,)``
    (one permutation for all) or ``(N, H·W)`` (one per image)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    if perm.dim() == 1:
        out = flat[:, :, perm]
    else:
        out = torch.gather(flat, 2, perm.unsqueeze(1).expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def gaussian_like(n: int, mean: torch.Tensor, std: torch.Tensor, shape: tuple[int, int, int],
                  generator: torch.Generator) -> torch.Tensor:
    """``n`` images ``(n, C, H, W)`` of i.i.d. Gaussian pixels with per-channel ``mean`` / ``std`` ``(C,)``."""
    z = torch.randn(n, *shape, generator=generator)
    return z * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``x`` ``(N, C, H, W)`` (std clamped away from 0)."""
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()


def make_variant(spec: str, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 *, num_classes: int, seed: int) -> Variant:
    """Build one variant from float images in [0, 1] ``(N, C, H, W)`` and int64 labels.

    The random draws depend only on ``seed`` and the variant's kind, so a variant is the same
    whatever else is run beside it. Inputs are not modified.
    """
    name, p = parse_variant(spec)
    if x_train.dim() != 4 or x_test.dim() != 4:
        raise FoolkitError("images must be (N, C, H, W)")
    x_train, x_test = x_train.float().cpu(), x_test.float().cpu()
    y_train, y_test = y_train.long().cpu(), y_test.long().cpu()
    kind = name.split(":")[0]
    g = torch.Generator().manual_seed(seed * 1_000_003 + sum(ord(ch) for ch in kind))
    replaced = torch.zeros(len(y_train), dtype=torch.bool)
    y_new = y_train.clone()
    if p is not None and p > 0:
        y_new, replaced = corrupt_labels(y_train, p, num_classes, g)
    size = x_train.shape[2] * x_train.shape[3]
    if name == "shuffled-pixels":
        perm = random_permutations(1, size, g)[0]
        x_train, x_test = permute_pixels(x_train, perm), permute_pixels(x_test, perm)
    elif name == "random-pixels":
        x_train = permute_pixels(x_train, random_permutations(len(x_train), size, g))
        x_test = permute_pixels(x_test, random_permutations(len(x_test), size, g))
    elif name == "gaussian":
        mean = x_train.mean(dim=(0, 2, 3))
        std = x_train.std(dim=(0, 2, 3))
        shape = tuple(x_train.shape[1:])
        x_train = gaussian_like(len(x_train), mean, std, shape, g)  # type: ignore[arg-type]
        x_test = gaussian_like(len(x_test), mean, std, shape, g)    # type: ignore[arg-type]
    m, s = channel_stats(x_train)
    return Variant(name=name, corruption=p, x_train=x_train, y_train=y_new, x_test=x_test, y_test=y_test,
                   y_original=y_train, replaced=replaced, mean=m, std=s)
