"""The attack template: :class:`Attack` (final ``__call__``, abstract ``run``) and :class:`AttackResult`.

Every attack sees the same :class:`Problem`: a counted, eval-mode model, the clean batch
``x`` ``(B, C, H, W)`` in the model's bounds, the labels to leave (untargeted) or reach
(targeted), and helpers for the two objectives every method uses (the logit *margin*,
negative exactly when a sample is adversarial, and a cross-entropy *gain* to maximise).
A subclass only implements :meth:`Attack.run`, which returns candidate adversarials; the base
class clips them to the bounds (and to the ε-ball for budget attacks), makes them survive
8-bit PNG quantisation, and scores them, so every attack reports the same way.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from foolkit.errors import FoolkitError
from foolkit.images import exact_div
from foolkit.utils import median

Norm = Literal["l1", "l2", "linf"]
NORMS: tuple[str, ...] = ("l1", "l2", "linf")
#: for a norm, the exponent of its dual (used to turn gradients into distances to the boundary)
DUAL: dict[str, float] = {"l1": math.inf, "l2": 2.0, "linf": 1.0}


# --------------------------------------------------------------------------------------------
# small tensor helpers shared by the attack files
# --------------------------------------------------------------------------------------------
def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``(B,)`` to broadcast against ``like`` ``(B, ...)``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def norm_of(d: torch.Tensor, norm: str | float) -> torch.Tensor:
    """Per-sample norm ``(B,)`` of ``d`` ``(B, ...)``; ``norm`` is "l1"|"l2"|"linf" or a p."""
    p = {"l1": 1.0, "l2": 2.0, "linf": math.inf}.get(norm, norm) if isinstance(norm, str) else norm
    flat = d.flatten(1)
    if p == math.inf:
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(len(flat))
    return flat.norm(p=p, dim=1)


def normalize(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm`` for gradient ``g``: sign for L∞,
    ``g/‖g‖₂`` for L2, and for L1 the coordinate(s) of largest |g| (spread over ties)."""
    if norm == "linf":
        return g.sign()
    if norm == "l2":
        return g / per_sample(norm_of(g, "l2").clamp_min(1e-12), g)
    a = g.abs()
    top = a >= per_sample(a.flatten(1).amax(dim=1), g)
    top = top & (a > 0)
    return g.sign() * top / per_sample(top.flatten(1).sum(dim=1).clamp_min(1), g)


def project_l1(d: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each ``d[i]`` onto the L1 ball of radius ``eps[i]`` (Duchi et al. 2008),
    batched: one sort per call."""
    flat = d.flatten(1)
    a = flat.abs()
    inside = a.sum(dim=1) <= eps
    mu = a.sort(dim=1, descending=True).values
    cums = mu.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=d.device, dtype=d.dtype)
    cond = mu - (cums - eps.unsqueeze(1)) / ks > 0
    rho = cond.to(d.dtype).cumsum(dim=1).argmax(dim=1)  # last index where cond holds
    theta = ((cums.gather(1, rho.unsqueeze(1)).squeeze(1) - eps) / (rho + 1).to(d.dtype)).clamp_min(0)
    proj = flat.sign() * (a - theta.unsqueeze(1)).clamp_min(0)
    return torch.where(inside.unsqueeze(1), flat, proj).view_as(d)


def project(d: torch.Tensor, eps: torch.Tensor | float, norm: str) -> torch.Tensor:
    """Project perturbations ``d`` ``(B, ...)`` onto the ``norm`` ball of radius ``eps`` (scalar or ``(B,)``)."""
    eps_t = torch.as_tensor(eps, dtype=d.dtype, device=d.device).expand(len(d))
    if norm == "linf":
        e = per_sample(eps_t, d)
        return torch.maximum(torch.minimum(d, e), -e)
    if norm == "l2":
        n = norm_of(d, "l2")
        return d * per_sample(torch.where(n > eps_t, eps_t / n.clamp_min(1e-12), torch.ones_like(n)), d)
    if norm == "l1":
        return project_l1(d, eps_t)
    raise FoolkitError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")


def check_norm(norm: str, allowed: tuple[str, ...]) -> str:
    if norm not in allowed:
        raise FoolkitError(f"norm must be one of {', '.join(allowed)}, got {norm!r}")
    return norm


def check_positive(name: str, value: float | int, *, allow_zero: bool = False) -> None:
    bad = not math.isfinite(float(value)) or value < 0 or (value == 0 and not allow_zero)
    if bad:
        raise FoolkitError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")


def check_count(name: str, value: int, *, allow_zero: bool = False) -> None:
    """A number of steps, restarts, ...: a whole number, positive (or zero with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise FoolkitError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} whole number, got {value!r}")


def check_fraction(name: str, value: float) -> None:
    """A rate in the open interval (0, 1)."""
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise FoolkitError(f"{name} must be in (0, 1), got {value!r}")


def cosine(step: int, steps: int, start: float, end: float) -> float:
    """Cosine annealing from ``start`` (step 0) to ``end`` (last step)."""
    return end + (start - end) * (1 + math.cos(math.pi * step / max(1, steps))) / 2


# --------------------------------------------------------------------------------------------
# counting and the problem an attack solves
# --------------------------------------------------------------------------------------------
class CountingModel(nn.Module):
    """Wraps a classifier and counts per-sample forward and backward passes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.forwards = 0
        self.backwards = 0

    def _count_backward(self, n: int) -> Callable[[torch.Tensor], None]:
        def hook(_grad: torch.Tensor) -> None:
            self.backwards += n
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.forwards += x.shape[0]
        if out.requires_grad:
            out.register_hook(self._count_backward(x.shape[0]))
        return out


@dataclass
class Problem:
    """What :meth:`Attack.run` gets.

    ``model``: logits of ``(B, C, H, W)`` images (counted, eval mode); ``x``: the clean batch
    (detached, on the model's device); ``labels``: the true/original labels (untargeted) or the
    target classes (targeted); ``bounds``: pixel range; ``generator``: the only randomness source.
    """

    model: CountingModel
    x: torch.Tensor
    labels: torch.Tensor
    targeted: bool
    bounds: tuple[float, float]
    generator: torch.Generator
    #: required confidence as a log-odds ``log(c / (1 − c))`` of the adversarial class; ``-inf``: none
    kappa: float = -math.inf
    #: the model's ``view_scale``: L2 lengths of the model's own view (a radius, a step) are this
    #: much longer in ``x`` (a photo the model sees shrunk 10x needs 10x longer steps)
    scale: float = 1.0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def sub(self, idx: torch.Tensor) -> Problem:
        """The same problem restricted to samples ``idx``."""
        return Problem(self.model, self.x[idx], self.labels[idx], self.targeted, self.bounds, self.generator,
                       self.kappa, self.scale)

    def margin(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)``: negative exactly when adversarial. Untargeted ``z_y − max_{j≠y} z_j``,
        targeted ``max_{j≠t} z_j − z_t``. ``labels`` restricts to a sub-batch's labels.

        With a required confidence ``c`` (``kappa = log(c / (1 − c))``) the adversarial class
        ``a`` (the target, or the strongest other class) must have softmax probability ≥ c, i.e.
        ``z_a − logsumexp_{k≠a} z_k ≥ kappa``: the margin is ``logsumexp_{k≠a} z_k + kappa − z_a``.
        """
        labels = self.labels if labels is None else labels
        own = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        others = logits.scatter(1, labels.unsqueeze(1), -math.inf)
        if self.kappa == -math.inf:
            other = others.amax(dim=1)
            return other - own if self.targeted else own - other
        adv_class = labels if self.targeted else others.argmax(dim=1)
        z_adv = logits.gather(1, adv_class.unsqueeze(1)).squeeze(1)
        rest = logits.scatter(1, adv_class.unsqueeze(1), -math.inf).logsumexp(dim=1)
        return rest + self.kappa - z_adv

    def is_adversarial(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.labels if labels is None else labels
        pred = logits.argmax(dim=1)
        hit = pred == labels if self.targeted else pred != labels
        if self.kappa == -math.inf:
            return hit
        return hit & (self.margin(logits, labels) <= 0)

    def gain(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` cross-entropy objective to *maximise*: CE(y) untargeted, −CE(t) targeted."""
        labels = self.labels if labels is None else labels
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if self.targeted else ce

    def grad(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Evaluate ``fn(logits) -> (B,)`` at ``x`` and return ``(value, d value.sum()/dx, logits)``, all detached."""
        x = x.detach().requires_grad_(True)
        logits = self.model(x)
        value = fn(logits)
        (g,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), g, logits.detach()

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(*self.bounds)

    def uniform(self, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uniform ``[0, 1)`` noise from the problem's generator, on ``like``'s device/dtype."""
        return torch.rand(shape, generator=self.generator, device=self.generator.device, dtype=like.dtype).to(like.device)

    def normal(self, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.generator.device, dtype=like.dtype).to(like.device)


# --------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """Per-sample outcome of an attack on a batch of ``B`` images.

    ``adv`` ``(B, C, H, W)`` in bounds (on the 8-bit grid when the attack quantises; where a
    minimum-norm attack failed, the clean image: it found no adversarial, so it reports none —
    a budget attack returns its perturbed image whatever came of it);
    ``success`` bool ``(B,)``; ``l1``/``l2``/``linf`` ``(B,)`` norms of ``adv − x`` (for every
    sample, successful or not); ``labels_before``/``confidences_before`` (clean top-1) and
    ``labels_after``/``confidences_after``; ``target`` ``(B,)`` or ``None``; ``forwards``/
    ``backwards``: per-sample passes through the model; ``seconds``: wall time.
    """

    method: str
    adv: torch.Tensor
    success: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    labels_before: torch.Tensor
    confidences_before: torch.Tensor
    labels_after: torch.Tensor
    confidences_after: torch.Tensor
    target: torch.Tensor | None
    forwards: int
    backwards: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.adv)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else 0.0

    def median(self, norm: str = "l2") -> float:
        """Median ``norm`` over successful samples (``nan`` when none succeeded)."""
        v = getattr(self, norm)[self.success]
        return median(v)

    def summary(self) -> dict[str, Any]:
        """JSON-able aggregate: counts, success rate, median norms (None when nothing succeeded:
        strict JSON has no NaN), passes, seconds."""
        def med(norm: str) -> float | None:
            m = self.median(norm)
            return None if math.isnan(m) else m

        return {"method": self.method, "n": len(self), "success_rate": self.success_rate,
                "median_l2": med("l2"), "median_linf": med("linf"), "median_l1": med("l1"),
                "forwards": self.forwards, "backwards": self.backwards, "seconds": self.seconds, "params": self.params}

    def records(self, classes: list[str] | None = None) -> list[dict[str, Any]]:
        """One JSON-able dict per sample."""
        cols = {k: getattr(self, k).tolist() for k in ("success", "l1", "l2", "linf", "labels_before",
                                                        "confidences_before", "labels_after", "confidences_after")}
        tgt = self.target.tolist() if self.target is not None else [None] * len(self)
        out = []
        for i in range(len(self)):
            rec: dict[str, Any] = {k: v[i] for k, v in cols.items()}
            rec["target"] = tgt[i]
            if classes is not None:
                rec["name_before"] = classes[rec["labels_before"]]
                rec["name_after"] = classes[rec["labels_after"]]
            out.append(rec)
        return out


# --------------------------------------------------------------------------------------------
# the template
# --------------------------------------------------------------------------------------------
def _view_scale(model: nn.Module) -> float:
    scale = float(getattr(model, "view_scale", 1.0))
    if not (math.isfinite(scale) and scale > 0):
        raise FoolkitError(f"the model's view_scale must be a positive number, got {scale}")
    return scale


class Attack(ABC):
    """Base class. Hyperparameters are keyword-only constructor arguments stored on ``self``.

    ``attack(model, x, y=None, *, target=None) -> AttackResult``:

    - ``model``: a :class:`~foolkit.models.Classifier` (or any module with ``bounds``,
      taking ``(B, C, H, W)`` in bounds → logits); it is put in eval mode and restored.
    - ``x``: ``(B, C, H, W)`` float in the model's bounds, any device (results on the model's).
    - ``y``: ``(B,)`` true labels; ``None`` uses the model's own predictions.
    - ``target``: ``None`` (untargeted), an int, or ``(B,)`` class indices (targeted).
    - ``confidence``: ``None`` (any misclassification counts) or ``c`` in (0, 1): the adversarial
      class must get softmax probability ≥ c — a *confident* mistake. Minimum-norm attacks then
      find the smallest perturbation reaching that confidence (the logit margin every method
      descends becomes ``logsumexp_{k≠a} z_k + log(c/(1−c)) − z_a``).

    Subclasses set ``name``, ``budget`` (True when ``eps`` bounds the perturbation in
    ``self.norm``), ``targeted_ok``, and implement :meth:`run`.
    """

    name: ClassVar[str] = "attack"
    budget: ClassVar[bool] = False
    targeted_ok: ClassVar[bool] = True
    norm: str = "l2"
    eps: float | None = None
    quantize: bool = True
    seed: int = 0

    @abstractmethod
    def run(self, p: Problem) -> torch.Tensor:
        """Return candidate adversarials ``(B, C, H, W)`` for ``p.x`` (the best found per sample)."""

    def params(self) -> dict[str, Any]:
        """The hyperparameters (JSON-able)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    # the final template method ------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                 target: int | torch.Tensor | None = None, confidence: float | None = None) -> AttackResult:
        t0 = time.perf_counter()
        kappa = confidence_to_kappa(confidence)
        bounds = tuple(float(b) for b in getattr(model, "bounds", (0.0, 1.0)))
        device = _device_of(model)
        x = self._check_input(model, x, bounds).to(device)
        n = len(x)
        was_training = model.training
        model.eval()
        try:
            counted = CountingModel(model)
            with torch.no_grad():
                logits0 = model(x) if n else x.new_zeros(0, 1)
            probs0 = torch.softmax(logits0.float(), dim=1)
            conf0, pred0 = probs0.max(dim=1) if n else (x.new_zeros(0), torch.zeros(0, dtype=torch.long, device=device))
            y = pred0 if y is None else self._check_labels(y, n, logits0.shape[1], "y").to(device)
            tgt = None
            if target is not None:
                if not self.targeted_ok:
                    raise FoolkitError(f"{self.name} is untargeted only; drop the target")
                if isinstance(target, int):
                    target = torch.full((n,), target, dtype=torch.long)
                tgt = self._check_labels(target, n, logits0.shape[1], "target").to(device)
            gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(int(self.seed))
            p = Problem(counted, x.detach(), tgt if tgt is not None else y, tgt is not None, bounds, gen, kappa,
                        _view_scale(model))
            if n:
                # a sample that is already adversarial (misclassified, or already the target with
                # the required confidence) is its own answer at distance 0: only the rest is attacked
                todo = self._unsolved(p, logits0).nonzero().flatten()
                adv = x.clone()
                if len(todo) == n:
                    adv = self._finish(p, self.run(p).detach())
                elif len(todo):
                    sub = p.sub(todo)
                    adv[todo] = self._finish(sub, self.run(sub).detach())
                with torch.no_grad():
                    logits1 = counted(adv)
                conf1, pred1 = torch.softmax(logits1.float(), dim=1).max(dim=1)
                success = p.is_adversarial(logits1)
                if not self.budget:  # a minimum-norm attack that found no adversarial reports none: the clean image
                    adv = torch.where(per_sample(success, adv), adv, x)
                    conf1, pred1 = torch.where(success, conf1, conf0), torch.where(success, pred1, pred0)
            else:
                adv, conf1, pred1, success = x.clone(), conf0, pred0, torch.zeros(0, dtype=torch.bool, device=device)
        finally:
            model.train(was_training)
        d = (adv - x).float()
        return AttackResult(method=self.name, adv=adv, success=success, l1=norm_of(d, "l1"), l2=norm_of(d, "l2"),
                            linf=norm_of(d, "linf"), labels_before=pred0, confidences_before=conf0,
                            labels_after=pred1, confidences_after=conf1, target=tgt,
                            forwards=counted.forwards, backwards=counted.backwards,
                            seconds=time.perf_counter() - t0,
                            params={**self.params(), **({"confidence_required": confidence} if confidence else {})})

    def _unsolved(self, p: Problem, logits: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: the clean samples (with these logits) that still need attacking."""
        return ~p.is_adversarial(logits)

    # checks -------------------------------------------------------------------------------
    @staticmethod
    def _check_input(model: nn.Module, x: torch.Tensor, bounds: tuple[float, ...]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise FoolkitError(f"an attack needs a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        size = getattr(model, "input_size", None)
        if size is not None and tuple(x.shape[1:]) != tuple(size):
            raise FoolkitError(f"images are {tuple(x.shape[1:])} but the model takes {tuple(size)}; "
                               "resize with foolkit.images.model_view first")
        if not x.is_floating_point():
            raise FoolkitError(f"images must be float in {bounds}, got {x.dtype}")
        if len(x) and (not torch.isfinite(x).all() or x.min() < bounds[0] - 1e-6 or x.max() > bounds[1] + 1e-6):
            raise FoolkitError(f"images must lie within the model's bounds {bounds}")
        return x.detach().float().clamp(*bounds)

    @staticmethod
    def _check_labels(v: torch.Tensor, n: int, k: int, what: str) -> torch.Tensor:
        v = torch.as_tensor(v)
        if v.dim() == 0:
            v = v.expand(n)
        if v.is_floating_point() or v.dtype == torch.bool:
            raise FoolkitError(f"{what} must hold integer class indices, got {v.dtype}")
        if v.shape != (n,):
            raise FoolkitError(f"{what} must be {n} integer class indices, got shape {tuple(v.shape)}")
        if n and (v.min() < 0 or v.max() >= k):
            raise FoolkitError(f"{what} holds a class index outside 0..{k - 1}")
        return v.long()

    # post-processing ------------------------------------------------------------------------
    def _constrain(self, p: Problem, adv: torch.Tensor) -> torch.Tensor:
        """Clip to bounds and, for budget attacks, to the ε-ball around ``p.x``."""
        adv = p.clip(adv)
        if self.budget and self.eps is not None:
            adv = p.clip(p.x + project(adv - p.x, float(self.eps), self.norm))
        return adv

    @torch.no_grad()
    def _finish(self, p: Problem, adv: torch.Tensor) -> torch.Tensor:
        """Constrain, then (when ``quantize``) put ``adv`` on the 8-bit grid such that it stays
        adversarial where it was: try rounding toward the clean image, to nearest, away from it,
        and (minimum-norm attacks only) slightly longer perturbations, keeping per sample the
        first candidate that is adversarial and within budget. Batched over the samples still
        pending; at most a handful of extra forward passes."""
        adv = self._constrain(p, adv)
        if not self.quantize:
            return adv
        out = to_grid(adv, p.x, p.bounds, "toward" if self.budget else "nearest")
        if torch.equal(out, adv):  # already on the grid (e.g. DDN with grid=True): nothing to repair
            return adv
        pending = p.is_adversarial(p.logits(adv))
        candidates: list[tuple[float, str]] = [(1.0, "toward"), (1.0, "nearest"), (1.0, "away")]
        if not self.budget:
            candidates += [(f, "nearest") for f in (1.005, 1.01, 1.02, 1.05, 1.1, 1.25, 1.5)]
        # a budget attack keeps the first candidate that works (they are ordered by preference); a
        # minimum-norm one tries them all and keeps the shortest ("away" can be several times longer
        # than a slightly scaled "nearest")
        best = torch.full((len(adv),), math.inf, device=adv.device)
        todo = pending.clone()
        for factor, how in candidates:
            idx = todo.nonzero().flatten()
            if len(idx) == 0:
                break
            x0, labels = p.x[idx], p.labels[idx]
            cand = to_grid(p.clip(x0 + factor * (adv[idx] - x0)), x0, p.bounds, how)
            ok = p.is_adversarial(p.logits(cand), labels)
            size = norm_of(cand - x0, self.norm)
            if self.budget and self.eps is not None:
                ok &= size <= float(self.eps) * (1 + 1e-5) + 1e-6
            ok &= size < best[idx]
            out[idx[ok]] = cand[ok]
            best[idx[ok]] = size[ok]
            pending[idx[ok]] = False
            if self.budget:
                todo[idx[ok]] = False
        if self.budget and self.eps is not None:
            # a clean image off the 8-bit grid (16-bit source, augmentation) can leave no grid point
            # inside the ε-ball along the perturbation: the budget wins, that sample stays off-grid
            over = norm_of(out - p.x, self.norm) > float(self.eps) * (1 + 1e-5) + 1e-6
            out = torch.where(per_sample(over, out), adv, out)
        return out


def confidence_to_kappa(confidence: float | None) -> float:
    """A required confidence ``c`` in [0, 1) → the log-odds ``log(c / (1 − c))`` the margin uses
    (``-inf`` for ``None`` or 0: any misclassification counts)."""
    if confidence is None or confidence == 0:
        return -math.inf
    c = float(confidence)
    if not 0 < c < 1:
        raise FoolkitError(f"confidence must be in [0, 1), got {confidence}")
    return math.log(c / (1 - c))


def to_grid(v: torch.Tensor, x: torch.Tensor, bounds: tuple[float, float], how: str = "nearest") -> torch.Tensor:
    """Round ``v`` to the 8-bit grid of ``bounds`` (what a PNG keeps): ``"nearest"``, ``"toward"``
    the clean image ``x`` (never lengthens a perturbation when ``x`` is on the grid) or ``"away"`` from it."""
    lo, hi = bounds
    scale = 255.0 / (hi - lo)
    u = (v - lo) * scale
    d = v - x
    nearest = u.round()
    # a value already on the grid comes back a hair off an integer for bounds other than [0, 1] or
    # [0, 255] (e.g. [-1, 1]): floor / ceil would move it a whole level, so such values are snapped
    u = torch.where((u - nearest).abs() < 1e-4, nearest, u)  # float32 round-off: ~1e-5 of a level
    if how == "nearest":
        u = nearest
    elif how == "toward":
        u = torch.where(d > 0, u.floor(), torch.where(d < 0, u.ceil(), nearest))
    elif how == "away":
        u = torch.where(d > 0, u.ceil(), torch.where(d < 0, u.floor(), nearest))
    else:
        raise ValueError(f"unknown rounding {how!r}")
    return (exact_div(u, scale) + lo).clamp(lo, hi)  # u / scale: one bit off on CUDA (exact_div)


def _device_of(model: nn.Module) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for t in model.parameters():
        return t.device
    return torch.device("cpu")
