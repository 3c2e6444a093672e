"""The one training loop: progress bar, seed, device, per-epoch JSON lines, checkpoint/resume.

Used by ``foolkit train``, the retrain rounds and the memorisation experiments. Data are
float tensors in [0, 1] held on the model's device (every dataset foolkit trains on fits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from foolkit.errors import FoolkitError
from foolkit.models.classifier import Classifier
from foolkit.runs import load_checkpoint, save_checkpoint

#: ``perturb(model, x, y) -> x_adv``: e.g. an attack, for adversarial training.
Perturb = Callable[[Classifier, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (saved inside every checkpoint)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay: float = 1.0          #: multiply the learning rate by this after every epoch (Zhang et al.: 0.95)
    optimizer: str = "sgd"         #: "sgd" or "adam"
    augment: str = "none"          #: "none", "crop" (random crop, pad 2–4 px) or "affine" (shift/rotate/scale)
    seed: int = 0
    stop_at_fit: bool = False      #: stop once training accuracy reaches 100%
    eval_train: bool = False       #: measure train accuracy in eval mode on the whole set (else running accuracy)
    #: stop when validation accuracy (``fit(validation=...)``) has not improved for this many epochs
    #: (0: off). Never the test accuracy: choosing by the test set would bias the test accuracy
    #: reported; without validation data the patience never runs out.
    early_stopping: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.epochs < 0:
            raise FoolkitError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size <= 0:
            raise FoolkitError(f"batch size must be positive, got {self.batch_size}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise FoolkitError(f"learning rate must be positive, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise FoolkitError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.augment not in ("none", "crop", "affine"):
            raise FoolkitError(f"augment must be none, crop or affine, got {self.augment!r}")
        if not 0 < self.lr_decay <= 1:
            raise FoolkitError(f"lr decay must be in (0, 1], got {self.lr_decay}")
        if not 0 <= self.momentum < 1:
            raise FoolkitError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay < math.inf:
            raise FoolkitError(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        if self.early_stopping < 0:
            raise FoolkitError(f"early stopping patience must be >= 0, got {self.early_stopping}")


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random crop (shift by up to ~1/8 of the side, zero padding) or a small random affine
    map, drawn per image from ``generator``; one batched ``grid_sample``."""
    if kind == "none":
        return x
    b, _, h, w = x.shape
    dev = x.device
    rand = lambda *s: torch.rand(*s, generator=generator).to(dev)  # noqa: E731
    max_shift = 2 * (4 if h >= 32 else 2) / h
    theta = torch.zeros(b, 2, 3, device=dev)
    if kind == "crop":
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        # shift by whole pixels, as a padded random crop does
        theta[:, :, 2] = (torch.round((rand(b, 2) * 2 - 1) * max_shift * h / 2) * 2 / h)
    else:
        angle = (rand(b) * 2 - 1) * math.radians(12)
        scale = 1 + (rand(b) * 2 - 1) * 0.1
        theta[:, 0, 0] = torch.cos(angle) / scale
        theta[:, 0, 1] = -torch.sin(angle) / scale
        theta[:, 1, 0] = torch.sin(angle) / scale
        theta[:, 1, 1] = torch.cos(angle) / scale
        theta[:, :, 2] = (rand(b, 2) * 2 - 1) * max_shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> tuple[float, float]:
    """Eval-mode ``(accuracy, mean cross-entropy)`` of ``model`` on ``x`` (float, [0, 1])."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, len(y)
    dev = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else x.device
    for i in range(0, n, batch_size):
        xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        out = model(xb)
        correct += int((out.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
    model.train(was)
    return (correct / n if n else float("nan")), (loss / n if n else float("nan"))


def fit(model: Classifier, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None, perturb: Perturb | None = None,
        checkpoint: str | Path | None = None, resume: bool = False,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
        desc: str = "train") -> list[dict[str, Any]]:
    """Train ``model`` on images ``x`` (float ``(N, C, H, W)`` in [0, 1]) and labels ``y``.

    Each epoch produces one record ``{"epoch", "step", "lr", "train_loss", "train_accuracy",
    "test_accuracy", "test_loss", "seconds"}`` (plus ``"val_accuracy"`` and ``"val_loss"``
    when ``validation`` images and labels are given) passed to ``on_epoch`` and returned in the
    history. ``config.early_stopping`` counts epochs without a better validation accuracy; the
    test set is only measured, never used to decide anything.
    With ``checkpoint`` the model, optimiser, history and config are saved there
    atomically after every epoch; ``resume=True`` continues from it. Randomness (batch order,
    augmentation, dropout) is drawn per epoch from ``config.seed``, so a resumed run repeats
    exactly what an uninterrupted one does.
    """
    config.validate()
    dev = model.device
    x, y = x.to(dev), y.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                                     weight_decay=config.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        meta, tensors = load_checkpoint(checkpoint, map_location=dev)
        try:
            model.load_state_dict(tensors["model"])
            opt.load_state_dict(tensors["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise FoolkitError(f"checkpoint {checkpoint} was saved by another model or optimiser, not this one "
                               f"({str(exc).strip().splitlines()[0][:160]})") from exc
        history = meta["history"]
        start_epoch = int(meta["epoch"])
    n = len(y)
    starts = list(range(0, n, config.batch_size))
    if n - (starts[-1] if starts else 0) == 1 and _has_batchnorm(model):
        if len(starts) < 2:
            raise FoolkitError("a network with batch norm cannot train on a single example")
        starts.pop()  # batch norm cannot train on a batch of one: the last batch takes the example left over
    batches = list(zip(starts, starts[1:] + [n]))
    steps_per_epoch = max(1, len(batches))
    best_val, stale = -1.0, 0
    for rec in history:  # the patience counter as the loop below left it: epochs without validation don't count
        if rec.get("val_accuracy") is None:
            continue
        if rec["val_accuracy"] > best_val:
            best_val, stale = rec["val_accuracy"], 0
        else:
            stale += 1
    if history and _should_stop(history[-1], config, stale):
        return history
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc=desc,
               disable=None if progress else True, leave=False, dynamic_ncols=True)  # None: no bar off a terminal
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.time()
            lr = config.lr * config.lr_decay ** epoch
            for group in opt.param_groups:
                group["lr"] = lr
            g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).to(dev)
            model.train()
            total_loss, correct = 0.0, torch.zeros((), device=dev)
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(config.seed * 7919 + epoch)  # dropout masks, reproducible per epoch
                loss_sum = torch.zeros((), device=dev)
                for i, j in batches:
                    idx = order[i:j]
                    xb, yb = augment_batch(x[idx], config.augment, g), y[idx]
                    if perturb is not None:
                        model.eval()
                        xb = perturb(model, xb, yb).detach()
                        model.train()
                    out = model(xb)
                    loss = F.cross_entropy(out, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach() * len(yb)
                    correct += (out.argmax(1) == yb).sum()
                    bar.update(1)
                total_loss = float(loss_sum) / n
            if not math.isfinite(total_loss):
                raise FoolkitError(f"training diverged at epoch {epoch + 1} (loss {total_loss}); lower the learning rate")
            train_acc = evaluate(model, x, y)[0] if config.eval_train else float(correct) / n
            test_acc, test_loss = evaluate(model, *test) if test is not None else (None, None)
            rec = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": lr, "train_loss": total_loss,
                   "train_accuracy": train_acc, "test_accuracy": test_acc, "test_loss": test_loss,
                   "seconds": time.time() - t0}
            if validation is not None:
                val_acc, val_loss = evaluate(model, *validation)
                rec.update(val_accuracy=val_acc, val_loss=val_loss, seconds=time.time() - t0)
                if val_acc > best_val:
                    best_val, stale = val_acc, 0
                else:
                    stale += 1
            history.append(rec)
            bar.set_postfix(loss=f"{total_loss:.3f}", train=f"{train_acc:.3f}",
                            **({"val": f"{rec['val_accuracy']:.3f}"} if validation is not None else {}),
                            **({"test": f"{test_acc:.3f}"} if test_acc is not None else {}))
            if checkpoint is not None:
                save_checkpoint(checkpoint, meta={"epoch": epoch + 1, "history": history, "config": asdict(config)},
                                tensors={"model": model.state_dict(), "optimizer": opt.state_dict()})
            if on_epoch is not None:
                on_epoch(rec)
            if _should_stop(rec, config, stale):
                break
    finally:
        bar.close()
        model.eval()
    return history


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _should_stop(rec: dict[str, Any], config: TrainConfig, stale: int) -> bool:
    if config.stop_at_fit and rec["train_accuracy"] >= 1.0:
        return True
    return bool(config.early_stopping and stale >= config.early_stopping)
