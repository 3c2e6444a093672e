"""Theorem 1 of Zhang et al. 2017: a depth-2 ReLU network with p = 2n + d weights fits any n
targets on n distinct points in d dimensions.

    c(z) = Σ_j w_j · max(⟨a, z⟩ − b_j, 0)          a ∈ R^d, b ∈ R^n, w ∈ R^n

Construction (all in float64):

1. ``a``: a random Gaussian direction, so the projections x_i = ⟨a, z_i⟩ are distinct with
   probability one (several directions are tried and the one with the largest smallest gap
   between sorted projections is kept; exact duplicate points must have equal targets).
2. Sort the projections x_1 < … < x_n and interleave thresholds b_1 < x_1 < b_2 < x_2 < … <
   b_n < x_n with b_{i+1} = x_i + θ·(x_{i+1} − x_i), 0 < θ < 1, and b_1 = x_1 − (x_n − x_1).
3. A_ij = max(x_i − b_j, 0) is lower triangular with positive diagonal A_ii = x_i − b_i, so
   A w = y has a unique solution. We never form A (n² doubles: 800 MB at n = 10,000): with the
   cumulative slopes s_k = Σ_{j≤k} w_j, walking from x_i to x_{i+1} crosses one kink, so

       s_1 = y_1 / (x_1 − b_1),
       s_{i+1} = (y_{i+1} − y_i − s_i·θ·δ_i) / ((1 − θ)·δ_i),      δ_i = x_{i+1} − x_i,

   an O(n) first-order recurrence (``scipy.signal.lfilter``), and w = diff(s).

Round-off. The weights are differences of slopes ≈ Δy/δ; with n = 10,000 random projections
the smallest gaps δ are ~1e-8 of the range, so |w| reaches 1e6–1e9 and evaluating the
network sums n terms of that size with cancellation: the error is about
ε_64 · Σ_j |w_j|·|x_i − b_j|. The threshold position matters: the midpoint (θ = ½) makes the
recurrence s_{i+1} = 2Δy_i/δ_i − s_i, whose slopes alternate in sign and accumulate every
earlier gap's Δy/δ, so Σ|w| grows like n/δ_min; θ → 0 (a threshold just past x_i) makes
s_{i+1} ≈ Δy_i/δ_i, the secant slope of the data — no accumulation, the smallest weights
the construction allows and the largest smallest eigenvalue (A_ii ≈ δ_{i−1}). Measured at
n = 10,000, d = 784 (Gaussian points, seed 0; smallest gap 1.3e-7): θ = ½ gives
max |c(z_i) − y_i| = 4.5e-4 for unit-variance targets and 1.2e-3 for class labels (max |w|
1.7e8–5.7e8); θ = 1e-3 (the default) gives 2.6e-7 and 6.9e-7 (max |w| 1.6e7–5.9e7), i.e.
≈ ε_64·|w|·n^½ — the float64 floor for weights this large. ``max_abs_error`` is measured by
the network's own float64 forward pass, not by the recurrence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from foolkit.errors import FoolkitError

DEFAULT_THETA = 1e-3


class TwoLayerReLU(nn.Module):
    """``c(z) = Σ_j w_j·relu(⟨a, z⟩ − b_j)``: ``z`` ``(B, d)`` (float64) → ``(B,)``.

    The forward pass is the network itself, chunked over the batch so the ``(B, n)`` hidden
    layer never exceeds ``chunk·n`` values.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, *, chunk: int = 512):
        super().__init__()
        self.a = nn.Parameter(a.to(torch.float64), requires_grad=False)
        self.b = nn.Parameter(b.to(torch.float64), requires_grad=False)
        self.w = nn.Parameter(w.to(torch.float64), requires_grad=False)
        self.chunk = chunk

    @property
    def parameters_count(self) -> int:
        """p = 2n + d."""
        return self.a.numel() + self.b.numel() + self.w.numel()

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(len(z), self.a.numel()).to(self.a)
        x = z @ self.a
        rows = max(1, min(self.chunk, len(x), 4_000_000 // max(1, self.b.numel())))  # hidden chunk ≤ 32 MB
        hidden = x.new_empty(rows, self.b.numel())  # one buffer for every chunk: a fresh (rows, n) block each
        out = x.new_empty(len(x))                   # time left the allocator holding ~n² bytes at large n
        for i in range(0, len(x), rows):
            h = hidden[:len(x) - i] if len(x) - i < rows else hidden
            torch.sub(x[i:i + rows, None], self.b[None, :], out=h).clamp_(min=0)
            torch.mv(h, self.w, out=out[i:i + len(h)])
        return out


@dataclass
class ExpressivityReport:
    n: int
    d: int
    parameters: int
    max_abs_error: float
    smallest_eigenvalue: float
    seconds: float
    max_abs_weight: float
    smallest_gap: float
    theta: float
    duplicates_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pick_direction(z: torch.Tensor, *, tries: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random unit direction ``a`` ``(d,)`` whose projections have the largest smallest gap
    among ``tries`` draws; returns ``(a, projections)``."""
    d = z.shape[1]
    cand = torch.randn(d, tries, generator=generator, dtype=torch.float64)
    cand /= cand.norm(dim=0, keepdim=True)
    proj = z @ cand                                                    # (n, tries)
    gaps = torch.diff(proj.sort(dim=0).values, dim=0).min(dim=0).values if len(z) > 1 else torch.ones(tries)
    k = int(torch.argmax(gaps))
    return cand[:, k].contiguous(), proj[:, k].contiguous()


def dedupe(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop exact duplicate points (keeping the first). Duplicates whose targets differ cannot be
    fitted by any function; they are dropped too and counted."""
    _, inverse = torch.unique(z, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1 if len(z) else 0,), len(z), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(z)), reduce="amin")
    keep = torch.zeros(len(z), dtype=torch.bool)
    keep[first] = True
    return z[keep], y[keep], int((~keep).sum())


def construct(z: torch.Tensor, y: torch.Tensor, *, theta: float = DEFAULT_THETA, tries: int = 8,
              seed: int = 0) -> TwoLayerReLU:
    """Theorem 1's network fitting ``y`` ``(n,)`` on ``z`` ``(n, d)`` (any real values), float64.

    Raises FoolkitError when two points share a projection (duplicate points; use :func:`dedupe`)."""
    from scipy.signal import lfilter

    if not 0.0 < theta < 1.0:
        raise FoolkitError(f"theta must be in (0, 1), got {theta}")
    z = z.reshape(len(z), -1).to(torch.float64)
    y = y.reshape(-1).to(torch.float64)
    n = len(z)
    if n == 0 or len(y) != n:
        raise FoolkitError(f"need n >= 1 points and as many targets, got {n} points and {len(y)} targets")
    g = torch.Generator().manual_seed(seed)
    a, x = _pick_direction(z, tries=tries, generator=g)
    x = z @ a  # the same product the forward pass computes, so construction and use agree bit for bit
    order = torch.argsort(x)
    xs, ys = x[order].numpy(), y[order].numpy()
    delta = np.diff(xs)
    if n > 1 and not (delta > 0).all():
        raise FoolkitError("two points have the same projection (duplicate points?); remove duplicates first")
    span = float(xs[-1] - xs[0]) if n > 1 else 1.0
    b = np.empty(n)
    b[0] = xs[0] - (span if span > 0 else 1.0)
    b[1:] = xs[:-1] + theta * delta
    diag = xs - b                                        # A_ii > 0
    s = np.empty(n)
    s[0] = ys[0] / diag[0]
    if n > 1:
        # s_{i+1} = r_i + c·s_i with r_i = Δy_i / ((1-θ)δ_i), c = -θ/(1-θ)
        r = np.diff(ys) / ((1 - theta) * delta)
        c = -theta / (1 - theta)
        s[1:] = lfilter([1.0], [1.0, -c], r, zi=np.array([c * s[0]]))[0]
    w = np.diff(s, prepend=0.0)
    return TwoLayerReLU(a, torch.from_numpy(b), torch.from_numpy(w))


def smallest_eigenvalue(net: TwoLayerReLU, z: torch.Tensor) -> float:
    """The smallest eigenvalue of A (lower triangular, so the smallest diagonal entry x_i − b_i)."""
    x = torch.sort(z.reshape(len(z), -1).to(torch.float64) @ net.a).values
    return float((x - net.b).min())


def fit_expressivity(z: torch.Tensor, y: torch.Tensor, *, theta: float = DEFAULT_THETA, seed: int = 0,
                     drop_duplicates: bool = True) -> tuple[TwoLayerReLU, ExpressivityReport]:
    """Build Theorem 1's network for points ``z`` ``(n, …)`` and targets ``y`` ``(n,)`` and measure it:
    ``max_abs_error`` = max_i |c(z_i) − y_i| by the network's float64 forward pass."""
    t0 = time.time()
    z = z.reshape(len(z), -1).to(torch.float64)
    y = y.reshape(-1).to(torch.float64)
    dropped = 0
    if drop_duplicates and len(z) > 1:
        probe = z @ torch.randn(z.shape[1], generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
        if not (torch.diff(probe.sort().values) > 0).all():  # equal projections: maybe duplicate points
            z, y, dropped = dedupe(z, y)
    net = construct(z, y, theta=theta, seed=seed)
    err = float((net(z) - y).abs().max()) if len(y) else 0.0
    seconds = time.time() - t0
    x = torch.sort(z @ net.a).values
    rep = ExpressivityReport(n=len(y), d=z.shape[1], parameters=net.parameters_count, max_abs_error=err,
                             smallest_eigenvalue=float((x - net.b).min()), seconds=seconds,
                             max_abs_weight=float(net.w.abs().max()),
                             smallest_gap=float(torch.diff(x).min()) if len(x) > 1 else 0.0, theta=theta,
                             duplicates_dropped=dropped)
    return net, rep


def random_problem(n: int, d: int, *, targets: str = "random", num_classes: int = 10,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Gaussian points in ``d`` dimensions and targets: ``random`` (uniform, unit variance:
    U(−√3, √3)), ``gaussian`` (N(0, 1)) or ``labels`` (integer classes 0..K−1). float64."""
    if n <= 0 or d <= 0:
        raise FoolkitError(f"n and d must be positive, got n={n}, d={d}")
    if n * d > 200_000_000:
        raise FoolkitError(f"n·d = {n * d:,} float64 values do not fit in memory here; keep n·d ≤ 2e8")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    if targets == "random":
        y = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 3 ** 0.5
    elif targets == "gaussian":
        y = torch.randn(n, generator=g, dtype=torch.float64)
    elif targets == "labels":
        y = torch.randint(num_classes, (n,), generator=g).to(torch.float64)
    else:
        raise FoolkitError(f"targets must be random, gaussian or labels, got {targets!r}")
    return z, y


def memorize_dataset(dataset: str, *, n: int, random_labels: bool = True, test_subset: int | None = None,
                     theta: float = DEFAULT_THETA, seed: int = 0, data_dir: str | None = None,
                     quiet: bool = True) -> dict[str, Any]:
    """Memorise ``n`` real training images with (by default uniformly random) class labels as
    targets, then classify the test set by rounding c(z) to the nearest class.

    Returns the report plus ``train_accuracy`` (labels reproduced exactly after rounding),
    ``test_accuracy``, ``labels`` ("random" or "true"), ``n_requested`` (``n``) and ``n_images``
    (the training images there were to memorise: fewer than ``n`` when the split is smaller;
    ``n`` counts the distinct ones among them)."""
    from foolkit.data import load_dataset

    train = load_dataset(dataset, "train", data_dir=data_dir, subset=n, seed=seed, quiet=quiet)
    test = load_dataset(dataset, "test", data_dir=data_dir, subset=test_subset, seed=seed, quiet=True)
    k = len(train.classes)
    y = train.y.clone()
    if random_labels:
        y = torch.randint(k, (len(y),), generator=torch.Generator().manual_seed(seed + 1))
    z_all, y_all = train.images().reshape(len(y), -1).to(torch.float64), y
    z, y, dropped_pts = dedupe(z_all, y)
    net, rep = fit_expressivity(z, y, theta=theta, seed=seed, drop_duplicates=False)
    rep.duplicates_dropped = dropped_pts

    def classify(v: torch.Tensor) -> torch.Tensor:
        return net(v).round().clamp(0, k - 1).long()

    # on every image, duplicates too: copies of one image given different labels cannot all be right
    train_acc = float((classify(z_all) == y_all).double().mean())
    zt = test.images().reshape(len(test.y), -1).to(torch.float64)
    test_acc = float((classify(zt) == test.y).double().mean())
    return {**rep.as_dict(), "dataset": dataset, "labels": "random" if random_labels else "true",
            "train_accuracy": train_acc, "test_accuracy": test_acc, "n_test": len(test.y), "n_requested": n,
            "n_images": len(train)}
