"""Randomisation tests and the regulariser grid of Zhang et al. 2017, on the one training loop.

Every run trains a fresh network of a named architecture with :func:`foolkit.models.training.fit`
(``stop_at_fit=True``, ``eval_train=True``): SGD with momentum 0.9 and the paper's learning
rate decay of 0.95 per epoch, learning rate 0.1 for Inception and 0.01 for AlexNet / MLPs /
LeNet, until the training set is fitted (100% eval-mode training accuracy) or ``epochs`` run out.

Small subsets: the paper's decay is 0.95 per epoch of 50,000 CIFAR images, i.e. per
``PAPER_STEPS_PER_EPOCH`` = 391 steps of 128. Applied per epoch of a 1,000-image subset (8
steps) the learning rate would vanish before random labels are fitted (measured on 1,000 MNIST
digits, mlp1x512: after 300 epochs random labels stall at 78% training accuracy, true labels
at 99.1%). We therefore keep the paper's batch size (128) and its schedule *per step*: the
per-epoch factor is ``lr_decay ** (steps_per_epoch / decay_steps)`` with ``decay_steps`` = 391
(``decay_steps=0`` decays per epoch of the data at hand, as ``fit`` does). Both values and
the resulting per-epoch factor are recorded in every run record.

Outputs (:func:`run_randomization`): ``results.json`` (``{"runs": [...]}`` with ``variant``,
``corruption``, ``model``, ``train_accuracy``, ``test_accuracy``, ``epochs_to_fit``,
``steps_to_fit``, ``seconds`` and the per-epoch history), the corruption masks
(``labels-<variant>.pt``: tensors ``y_train``, ``y_original``, ``replaced``), and figure 1 as
PNGs (figure 1(a) plots each epoch's average training loss at its step count: ``fit`` records
per-epoch averages). :func:`run_regularizers` writes ``regularizers.json``, ``regularizers.md``
and a figure.

Regulariser grid: ``none`` switches everything off (batch norm included, also for Inception,
whose paper baseline keeps it); each other setting switches one on — ``dropout`` 0.5 on hidden
units, ``weight-decay`` 5e-4, ``batchnorm``, ``crop`` (random crop of ±2 px, zero padding),
``early-stopping`` — and ``all`` switches on the four explicit ones, as Zhang et al.'s tables do,
not early stopping (which they treat apart, as implicit regularisation: on random labels the
validation accuracy is chance, so it stops at once and says nothing about fitting them).

Early stopping never looks at the test set: a fixed 10% of the variant's training set, drawn
with the run's seed, is held out as validation and the network trains on the other 90%
(``n_train``; the held-out count is ``n_val``). Training stops after 5 epochs without a better
validation accuracy (or once the 90% are fitted); the row reports the train and test accuracy of
the best-validation epoch, the one early stopping keeps (``chosen_epoch``, also the table's
epochs column).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch

from foolkit.data import data_changed, say_capped
from foolkit.errors import FoolkitError
from foolkit.memorize.randomize import Variant, channel_stats, make_variant, parse_variant
from foolkit.models.archs import count_parameters
from foolkit.models.registry import new_model
from foolkit.models.training import TrainConfig, fit
from foolkit.runs import (RunDir, atomic_path, atomic_write_json, atomic_write_text, read_json, save_checkpoint,
                          undone_unless_saved)

MODELS = ("mlp1x512", "mlp3x512", "small-inception", "small-alexnet", "lenet")
DEFAULT_VARIANTS = ("true", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")
REGULARIZERS = ("none", "dropout", "weight-decay", "batchnorm", "crop", "early-stopping", "all")
#: what ``all`` switches on: the explicit regularisers (not early stopping; see the module's text)
ALL = ("dropout", "weight-decay", "batchnorm", "crop")
#: Regulariser strengths (the paper's Inception used weight decay and random crops; dropout 0.5 as usual).
DROPOUT, WEIGHT_DECAY, EARLY_STOPPING_PATIENCE = 0.5, 5e-4, 5
#: Share of the training set early stopping holds out as validation (drawn with the run's seed).
VALIDATION_FRACTION = 0.1


def default_lr(model: str) -> float:
    """The paper's learning rates: 0.1 for (small) Inception, 0.01 for AlexNet, MLPs (and LeNet)."""
    return 0.1 if model == "small-inception" else 0.01


PAPER_BATCH_SIZE, PAPER_STEPS_PER_EPOCH = 128, 391   # 50,000 CIFAR-10 images in batches of 128


def epoch_decay(lr_decay: float, *, n: int, batch_size: int, decay_steps: int = PAPER_STEPS_PER_EPOCH) -> float:
    """The per-epoch learning-rate factor that applies ``lr_decay`` once every ``decay_steps`` steps
    (``decay_steps = 0``: once per epoch)."""
    if decay_steps <= 0:
        return lr_decay
    steps = -(-n // batch_size)
    return float(lr_decay ** (steps / decay_steps))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: what each kind of :class:`RunSettings` field must hold, by its annotation
_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", _number),
    "float | None": ("a number or null", lambda v: v is None or _number(v)),
    "str": ("text", lambda v: isinstance(v, str)),
    "dict[str, Any]": ("a table", lambda v: isinstance(v, dict)),
}


@dataclass
class RunSettings:
    """Hyperparameters of one memorisation run (keyword-only everywhere they are passed)."""

    model: str = "mlp1x512"
    epochs: int = 400
    lr: float | None = None            #: None: the paper's value for the model
    lr_decay: float = 0.95
    momentum: float = 0.9
    batch_size: int = PAPER_BATCH_SIZE
    decay_steps: int = PAPER_STEPS_PER_EPOCH  #: apply ``lr_decay`` every this many steps (0: every epoch)
    weight_decay: float = 0.0
    augment: str = "none"
    early_stopping: int = 0
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def validate(self) -> None:
        """Every check training would make, so that a run fails before its folder is written (a
        value of the wrong kind, as from a config.json edited by hand, included)."""
        for f in fields(self):
            value = getattr(self, f.name)
            what, fits = _KINDS[str(f.type)]
            if not fits(value):
                raise FoolkitError(f"{f.name} must be {what}, got {value!r} (a config.json edited by hand, or damaged?)")
        if self.model not in MODELS:
            raise FoolkitError(f"unknown model {self.model!r} for memorize; choose from {', '.join(MODELS)}")
        if self.epochs <= 0:
            raise FoolkitError(f"epochs must be positive, got {self.epochs}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not self.lr > 0 or not math.isfinite(self.lr)):
            raise FoolkitError(f"learning rate (--lr) must be a positive, finite number, got {self.lr}")
        if self.batch_size <= 0:
            raise FoolkitError(f"batch size must be positive, got {self.batch_size}")
        if self.decay_steps < 0:
            raise FoolkitError(f"decay steps must be >= 0, got {self.decay_steps}")
        if not 0 < self.lr_decay <= 1:
            raise FoolkitError(f"lr decay must be in (0, 1], got {self.lr_decay}")
        if not 0 <= self.momentum < 1:
            raise FoolkitError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay < math.inf:
            raise FoolkitError(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        if self.augment not in ("none", "crop", "affine"):
            raise FoolkitError(f"augment must be none, crop or affine, got {self.augment!r}")
        if self.early_stopping < 0:
            raise FoolkitError(f"early stopping patience must be >= 0, got {self.early_stopping}")


def _set_threads() -> None:
    """Leave cores for the others on shared machines when FOOLKIT_THREADS is set."""
    n = os.environ.get("FOOLKIT_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))


def holdout(n: int, seed: int, fraction: float = VALIDATION_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(fit, validation)`` splitting ``n`` training examples: ``round(fraction * n)`` (at
    least one) drawn for validation by ``seed``, the same for every run with that seed; both sorted."""
    if n < 2:
        raise FoolkitError(f"early stopping holds out part of the training set as validation: it needs at least "
                           f"2 training examples, got {n}")
    n_val = min(n - 1, max(1, round(fraction * n)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 2017))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def train_variant(variant: Variant, *, classes: Sequence[str], settings: RunSettings, device: str | torch.device = "cpu",
                  stop_at_fit: bool = True, progress: bool = False,
                  checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Train a fresh ``settings.model`` on one variant; returns the run record. With
    ``checkpoint``, the training is saved there after every epoch and continued from it when it
    exists (the same epochs as an uninterrupted run: every epoch's randomness is seeded).

    The record holds ``variant``, ``corruption``, ``model``, ``train_accuracy`` (eval mode, on
    the variant's own training labels), ``test_accuracy`` (true test labels), ``epochs_to_fit``
    / ``steps_to_fit`` (first epoch with 100% training accuracy, else None), ``seconds``, the
    hyperparameters, ``parameters`` and ``history`` (one dict per epoch from ``fit``).

    With ``settings.early_stopping`` a seeded :data:`VALIDATION_FRACTION` of the training set is
    held out (:func:`holdout`; ``n_val`` examples, ``n_train`` trained on), patience counts epochs
    without a better validation accuracy, and the accuracies are those of the best-validation
    epoch (``chosen_epoch``, with its ``val_accuracy``); otherwise ``chosen_epoch`` is the last.
    """
    settings.validate()
    x_fit, y_fit = variant.x_train, variant.y_train
    mean, std = variant.mean, variant.std
    validation = None
    if settings.early_stopping:
        keep, val = holdout(len(variant.y_train), settings.seed)
        x_fit, y_fit = variant.x_train[keep], variant.y_train[keep]
        validation = (variant.x_train[val], variant.y_train[val])
        if len(keep) > 1:  # normalise by what the network trains on
            mean, std = channel_stats(x_fit)
    n = len(y_fit)
    batch = settings.batch_size
    decay = epoch_decay(settings.lr_decay, n=n, batch_size=batch, decay_steps=settings.decay_steps)
    lr = settings.lr if settings.lr is not None else default_lr(settings.model)
    shape = tuple(int(s) for s in variant.x_train.shape[1:])
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG left untouched
        torch.manual_seed(settings.seed)
        model = new_model(settings.model, classes=list(classes), input_size=shape, mean=mean,  # type: ignore[arg-type]
                          std=std, device=device, **settings.arch_kwargs)
    config = TrainConfig(epochs=settings.epochs, batch_size=batch, lr=lr, momentum=settings.momentum,
                         weight_decay=settings.weight_decay, lr_decay=decay, augment=settings.augment,
                         seed=settings.seed, stop_at_fit=stop_at_fit, eval_train=True,
                         early_stopping=settings.early_stopping)
    history = fit(model, x_fit, y_fit, config, test=(variant.x_test, variant.y_test), validation=validation,
                  progress=progress, desc=f"{settings.model} {variant.name}", checkpoint=checkpoint,
                  resume=checkpoint is not None and Path(checkpoint).exists())
    seconds = sum(h["seconds"] for h in history)  # the epochs' own time, summed over a resume
    fitted = next((h for h in history if h["train_accuracy"] >= 1.0), None)
    last = history[-1]
    chosen = last
    if validation is not None:  # the epoch early stopping keeps: the first with the best validation accuracy
        chosen = max(history, key=lambda h: h["val_accuracy"])
    return {
        "variant": variant.name, "corruption": variant.corruption, "model": settings.model,
        "train_accuracy": chosen["train_accuracy"], "test_accuracy": chosen["test_accuracy"],
        "epochs_to_fit": fitted["epoch"] if fitted else None, "steps_to_fit": fitted["step"] if fitted else None,
        "seconds": seconds, "epochs": last["epoch"], "chosen_epoch": chosen["epoch"],
        "val_accuracy": chosen.get("val_accuracy"),
        "final_train_loss": last["train_loss"], "changed_fraction": variant.changed_fraction,
        "replaced_fraction": float(variant.replaced.float().mean()), "n_train": n,
        "n_val": len(validation[1]) if validation is not None else 0, "n_test": len(variant.y_test),
        "parameters": count_parameters(model), "lr": lr, "lr_decay": settings.lr_decay, "decay_steps": settings.decay_steps,
        "lr_decay_per_epoch": decay, "momentum": settings.momentum,
        "batch_size": batch, "weight_decay": settings.weight_decay, "augment": settings.augment,
        "early_stopping": settings.early_stopping, "arch_kwargs": settings.arch_kwargs, "seed": settings.seed,
        "loadavg": list(os.getloadavg()), "history": history,
    }


class Split(NamedTuple):
    """A dataset's train and test images (float ``(N, C, H, W)`` in [0, 1]) and labels, and what
    they are: ``data`` = ``{"train": provenance, "test": provenance}`` (source, size, notes)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    data: dict[str, Any]


def load_split(dataset: str, *, subset: int | None, test_subset: int | None, seed: int,
               data_dir: str | None = None) -> Split:
    """Train and test data of a dataset subset."""
    from foolkit.data import load_dataset

    train = load_dataset(dataset, "train", data_dir=data_dir, subset=subset, seed=seed, quiet=True)
    test = load_dataset(dataset, "test", data_dir=data_dir, subset=test_subset, seed=seed, quiet=True)
    if not len(train) or not len(test):
        raise FoolkitError(f"dataset {dataset} has no {'training' if not len(train) else 'test'} images")
    return Split(train.images(), train.y, test.images(), test.y, list(train.classes),
                 {"train": train.provenance(), "test": test.provenance()})


# -- run folders: start, resume, check before writing ------------------------------------------

#: how the CLI spells each saved setting (for the one line that refuses a change on resume)
_OPTIONS = {"dataset": "--dataset", "subset": "--subset", "test_subset": "--test-subset", "variants": "--variants/--corrupt",
            "seed": "--seed", "model": "--model", "epochs": "--epochs", "lr": "--lr", "lr_decay": "--lr-decay",
            "batch_size": "--batch-size", "decay_steps": "--decay-steps", "regularizers": "--regularizers",
            "labels": "--labels"}


def saved_config(out: str | Path, command: str) -> dict[str, Any]:
    """The config of the memorize ``command`` run in ``out`` (config.json), or a one-line error."""
    run_dir = RunDir(out)
    saved = run_dir.saved_config()  # raises "nothing to resume" without one
    if not isinstance(saved, dict) or saved.get("command") != command:
        raise FoolkitError(f"{run_dir.path} does not hold a `memorize {command}` run")
    if command == "randomize":
        kept = saved.get("settings")
        if not isinstance(kept, dict) or not kept.keys() <= set(RunSettings.__dataclass_fields__):
            raise FoolkitError(f"{run_dir.config_path} is not a memorize randomize run's config")
        saved.setdefault("seed", saved["settings"].get("seed", 0))  # runs saved before the data seed was recorded
    return saved


def _resume_config(run_dir: RunDir, config: dict[str, Any]) -> dict[str, Any]:
    """The saved config of the run in ``run_dir``; a setting in ``config`` that differs from it is
    an error naming the options (a resumed run continues with exactly the settings it began with,
    so its results stay comparable)."""
    import json

    saved = saved_config(run_dir.path, config["command"])
    new = json.loads(json.dumps(config))  # tuples as lists, as saved
    changed = []
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(saved.get(key), dict):
            changed += [k for k, v in value.items() if saved[key].get(k, v) != v]
        elif isinstance(value, list) and isinstance(saved.get(key), list):
            if sorted(map(str, value)) != sorted(map(str, saved[key])):  # the same runs in another order are the same
                changed.append(key)
        elif key in saved and saved[key] != value:
            changed.append(key)
    if changed:
        opts = list(dict.fromkeys(_OPTIONS.get(k, k) for k in changed))
        raise FoolkitError(f"cannot change {', '.join(opts)} when resuming {run_dir.path}: a resumed run keeps the "
                           f"settings it started with (start a new run with another --out to change them)")
    return saved


#: what each experiment writes in its folder (besides config and log): a new run overwrites none of it
OUTPUTS = {"results.json": ("results.json", "fig1*.png", "labels-*.pt", "unfinished-*.pt"),
           "regularizers.json": ("regularizers.*", "unfinished-*.pt")}


def _unfinished(run_dir: RunDir | None, key: str) -> Path | None:
    """Where the run ``key`` in progress is checkpointed after every epoch (``unfinished-KEY.pt``),
    so a killed command continues it from its last epoch; deleted once the run is in the results."""
    if run_dir is None:
        return None
    return run_dir.file("unfinished-" + "".join(c if c.isalnum() or c in "-." else "-" for c in key) + ".pt")


def _probe_model(settings: RunSettings, x: torch.Tensor, classes: Sequence[str], device: str | torch.device) -> None:
    """Build ``settings.model`` for these images and run two through it, so an architecture that
    cannot take them fails now, before anything is written, not in the middle of the runs."""
    shape = tuple(int(s) for s in x.shape[1:])
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            net = new_model(settings.model, classes=list(classes), input_size=shape,  # type: ignore[arg-type]
                            mean=[0.5] * shape[0], std=[0.5] * shape[0], device=device, **settings.arch_kwargs)
            net.eval()(x[:2].to(net.device))
    except (RuntimeError, ValueError) as exc:
        raise FoolkitError(f"model {settings.model} cannot take {list(shape)} images: "
                           f"{str(exc).splitlines()[0][:160]}") from exc


def expand_variants(variants: Sequence[str], corrupt: Sequence[float] = ()) -> list[str]:
    """Canonical variant names, ``corrupt`` levels appended as ``corrupt:p``, duplicates dropped."""
    names = [parse_variant(v)[0] for v in variants] + [parse_variant(f"corrupt:{p}")[0] for p in corrupt]
    out: list[str] = []
    for nm in names:
        if nm not in out:
            out.append(nm)
    if not out:
        raise FoolkitError("no data variants to run")
    return out


def _check_subsets(subset: int | None, test_subset: int | None) -> None:
    """Subset sizes are positive or None (all); the error names the option."""
    for name, value in (("subset", subset), ("test_subset", test_subset)):
        if value is not None and value <= 0:
            raise FoolkitError(f"{_OPTIONS[name]} must be positive, got {value}")


def _start(run_dir: RunDir | None, config: dict[str, Any], settings: RunSettings, *, resume: bool, results: str,
           key: str, device: str | torch.device, data_dir: str | None, progress: bool,
           min_train: int = 1) -> tuple[Split, list[dict[str, Any]]]:
    """Refuse to start a new run over an old one; load the data of ``config`` and check the model on
    it (and, on resume, that they are the data the run started with); only then write the run
    folder (a failed start leaves nothing; a subset bigger than the data is said once those checks
    pass). ``min_train``: the fewest training examples the runs need. Returns the data and the
    records a resumed run has already written (``results[key]``)."""
    if run_dir is not None and not resume:
        run_dir.refuse_taken(OUTPUTS[results])
    _check_subsets(config["subset"], config["test_subset"])
    split = load_split(config["dataset"], subset=config["subset"], test_subset=config["test_subset"],
                       seed=config["seed"], data_dir=data_dir)
    if len(split.y_train) < min_train:
        raise FoolkitError(f"early stopping holds out part of the training set as validation: it needs at least "
                           f"{min_train} training examples, {config['dataset']} has {len(split.y_train)}")
    done: list[dict[str, Any]] = []
    if run_dir is not None and resume and isinstance(config.get("data"), dict):  # (config.json has them since 2026-11-24)
        changed = data_changed(config["data"], split.data)
        if changed:
            raise FoolkitError(f"cannot resume {run_dir.path} with other data: {changed}; pass the --data-dir "
                               f"it was started with")
    if run_dir is not None and resume and run_dir.file(results).exists():
        saved = read_json(run_dir.file(results))
        if not isinstance(saved, dict) or not isinstance(saved.get(key), list):
            raise FoolkitError(f"{run_dir.file(results)} is not the results file of a memorize run")
        saved_data = saved.get("data")
        changed = data_changed(saved_data, split.data) if isinstance(saved_data, dict) else None
        if changed:
            raise FoolkitError(f"cannot resume {run_dir.path} with other data: {changed}; pass the --data-dir "
                               f"it was started with")
        done = saved[key]
    _probe_model(settings, split.x_train, split.classes, device)
    if progress:
        say_capped(config["dataset"], split.data)
    if run_dir is not None and not resume:
        run_dir.create({**config, "data": split.data}, resume=False, outputs=OUTPUTS[results])
    return split, done


def run_randomization(*, dataset: str = "mnist", subset: int | None = 1000, test_subset: int | None = None,
                      model: str = "mlp1x512", variants: Sequence[str] = DEFAULT_VARIANTS,
                      corrupt: Sequence[float] = (), epochs: int = 400, settings: RunSettings | None = None,
                      seed: int = 0, out: str | Path | None = None, resume: bool = False,
                      device: str | torch.device = "cpu", data_dir: str | None = None, progress: bool = False,
                      on_run: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The randomisation tests: one run per variant until fitted (or ``epochs``).

    Returns ``(runs, figures)``: the run records (see :func:`train_variant`) and, when ``out`` is
    given, ``{"loss": path, "time_to_fit": path, "test_error": path}`` of figure 1 (a)–(c); with
    ``out`` the results, masks, a log and the figures are written there (``resume=True`` skips
    the variants already in ``results.json``).
    """
    _set_threads()
    settings = settings or RunSettings(model=model, epochs=epochs, seed=seed)
    settings.validate()
    names = expand_variants(variants, corrupt)
    config = {"command": "randomize", "dataset": dataset, "subset": subset, "test_subset": test_subset,
              "variants": names, "seed": seed, "settings": asdict(settings)}
    run_dir = RunDir(out) if out is not None else None
    if run_dir is not None and resume:  # the saved config wins; a different setting is refused
        config = _resume_config(run_dir, config)
        dataset, seed = config["dataset"], config["seed"]
        names = config["variants"]
        settings = RunSettings(**config["settings"])
        settings.validate()
    with undone_unless_saved(run_dir, resume=resume, saved=("results.json",),
                             resumable=("unfinished-*.pt",)):
        split, runs = _start(run_dir, config, settings, resume=resume, results="results.json", key="runs", device=device,
                             data_dir=data_dir, progress=progress, min_train=2 if settings.early_stopping else 1)
        x_tr, y_tr, x_te, y_te, classes, data = split
        done = {r["variant"] for r in runs}
        for name in names:
            if name in done:
                continue
            v = make_variant(name, x_tr, y_tr, x_te, y_te, num_classes=len(classes), seed=seed)
            ckpt = _unfinished(run_dir, name)
            rec = train_variant(v, classes=classes, settings=settings, device=device, progress=progress,
                                checkpoint=ckpt)
            rec["dataset"] = dataset
            runs.append(rec)
            if run_dir is not None:
                save_checkpoint(run_dir.file(f"labels-{name.replace(':', '-')}.pt"), meta=v.summary(),
                                tensors={"y_train": v.y_train, "y_original": v.y_original, "replaced": v.replaced})
                atomic_write_json(run_dir.file("results.json"), {"config": config, "data": data, "runs": runs})
                run_dir.log({k: val for k, val in rec.items() if k != "history"})
                ckpt.unlink(missing_ok=True)  # type: ignore[union-attr]
            if on_run is not None:
                on_run(rec)
    figures: dict[str, str] = {}
    if run_dir is not None:
        figures = plot_figure1(runs, run_dir.path, title=f"{settings.model} on {dataset} ({len(y_tr)} train)",
                               classes=len(classes))
        atomic_write_json(run_dir.file("results.json"), {"config": config, "data": data, "runs": runs, "figures": figures})
    return runs, figures


# -- figures ----------------------------------------------------------------------------

def _label_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in runs if r.get("corruption") is not None), key=lambda r: r["corruption"])


def _figure(**kw: Any) -> Any:
    """A matplotlib Figure made without pyplot: no GUI backend, no global state, nothing to close."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def _save_fig(fig: Any, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return str(path)


def _finish_panel(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str) -> str:
    """Label, title, legend and grid one Figure-1 panel, then save it atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save_fig(fig, path)


def plot_figure1(runs: Sequence[dict[str, Any]], out_dir: str | Path, *, title: str = "",
                 prefix: str = "fig1", classes: int = 10) -> dict[str, str]:
    """Zhang et al.'s figure 1 from run records: (a) training loss against steps per variant,
    (b) steps to fit against label corruption, (c) test error against label corruption (with
    chance, ``1 - 1/classes``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    fig = _figure(figsize=(5.5, 4))
    ax = fig.subplots()
    styles = ["-", "--", "-.", ":"]
    for i, r in enumerate(runs):
        steps = [h["step"] for h in r["history"]]
        ax.plot(steps, [h["train_loss"] for h in r["history"]], label=r["variant"], lw=2.2 if i == 0 else 1.6,
                ls=styles[i % len(styles)])
    paths["loss"] = _finish_panel(fig, ax, out_dir / f"{prefix}a-loss.png", xlabel="training steps",
                                  ylabel="average training loss (per epoch)", title=f"(a) learning curves — {title}")
    lab = _label_runs(runs)
    if lab:
        ps = [r["corruption"] for r in lab]
        fig = _figure(figsize=(5.5, 4))
        ax = fig.subplots()
        fitted = [(p, r["steps_to_fit"]) for p, r in zip(ps, lab) if r["steps_to_fit"] is not None]
        unfitted = [(p, r["history"][-1]["step"]) for p, r in zip(ps, lab) if r["steps_to_fit"] is None]
        if fitted:
            ax.plot(*zip(*fitted), "o-", label="steps to 100% train accuracy")
        if unfitted:
            ax.plot(*zip(*unfitted), "x", color="red", ms=9, label="not 100% by the epoch cap (cap shown)")
        near = [(p, next((h["step"] for h in r["history"] if h["train_accuracy"] >= 0.999), None)) for p, r in zip(ps, lab)]
        near = [(p, st) for p, st in near if st is not None]
        if near:
            ax.plot(*zip(*near), "s--", alpha=0.7, label="steps to 99.9% train accuracy")
        paths["time_to_fit"] = _finish_panel(fig, ax, out_dir / f"{prefix}b-time-to-fit.png",
                                             xlabel="label corruption p", ylabel="time to overfit (steps)",
                                             title=f"(b) convergence slowdown — {title}")
        fig = _figure(figsize=(5.5, 4))
        ax = fig.subplots()
        ax.plot(ps, [1 - r["test_accuracy"] for r in lab], "o-", label="test error")
        ax.plot(ps, [1 - r["train_accuracy"] for r in lab], "s--", label="train error")
        ax.axhline(1 - 1 / classes, color="gray", ls=":", lw=1, label=f"chance ({classes} classes)")
        ax.set_ylim(-0.02, 1.0)
        paths["test_error"] = _finish_panel(fig, ax, out_dir / f"{prefix}c-test-error.png",
                                            xlabel="label corruption p", ylabel="error",
                                            title=f"(c) generalisation error growth — {title}")
    return paths


# -- regularisers -------------------------------------------------------------------------

def regularizer_settings(name: str, base: RunSettings) -> RunSettings | None:
    """``base`` with one regulariser (or ``all``) switched on; None when the architecture has no
    such switch (LeNet has no batch norm; small-inception always has it unless switched off)."""
    from dataclasses import replace

    kw = dict(base.arch_kwargs)
    s = replace(base, arch_kwargs=kw)
    on = set(ALL) if name == "all" else {name}
    if name not in REGULARIZERS:
        raise FoolkitError(f"unknown regulariser {name!r}; choose from {', '.join(REGULARIZERS)}")
    if "batchnorm" in on:
        if base.model == "lenet":
            if name == "batchnorm":
                return None
        else:
            kw["batchnorm"] = True
    elif base.model != "lenet":
        kw["batchnorm"] = False
    if "dropout" in on:
        kw["dropout"] = DROPOUT
    if "weight-decay" in on:
        s.weight_decay = WEIGHT_DECAY
    if "crop" in on:
        s.augment = "crop"
    if "early-stopping" in on:
        s.early_stopping = EARLY_STOPPING_PATIENCE
    return s


def skipped_regularizers(regularizers: Sequence[str], model: str) -> list[str]:
    """The ``regularizers`` that ``model`` has no switch for (:func:`regularizer_settings` gives None)."""
    base = RunSettings(model=model)
    return [r for r in regularizers if regularizer_settings(r, base) is None]


def run_regularizers(*, dataset: str = "mnist", subset: int | None = 1000, test_subset: int | None = None,
                     model: str = "mlp1x512", regularizers: Sequence[str] = REGULARIZERS,
                     labels: Sequence[str] = ("true", "random-labels"), epochs: int = 400, seed: int = 0,
                     out: str | Path | None = None, resume: bool = False, device: str | torch.device = "cpu",
                     data_dir: str | None = None, progress: bool = False,
                     on_run: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The regulariser grid (Table 1): each regulariser on its own (and ``all``), on true and on
    random labels. Returns ``{"rows": [...], "markdown": str, "figure": path|None, "skipped": [...]}``:
    ``skipped`` names the regularisers the model has no switch for (LeNet: ``batchnorm``), said
    on stderr (with ``progress``) and under the table; when that is all of them, nothing runs and
    the error says so."""
    _set_threads()
    base = RunSettings(model=model, epochs=epochs, seed=seed)
    base.validate()
    for what, option, names in (("regularisers", "--regularizers", regularizers), ("label variants", "--labels", labels)):
        if not names:
            raise FoolkitError(f"no {what} given ({option}): nothing to run")
    for r in regularizers:
        if r not in REGULARIZERS:
            raise FoolkitError(f"unknown regulariser {r!r}; choose from {', '.join(REGULARIZERS)}")
    label_names = [parse_variant(v)[0] for v in labels]
    config = {"command": "regularizers", "dataset": dataset, "subset": subset, "test_subset": test_subset,
              "model": model, "regularizers": list(regularizers), "labels": label_names, "epochs": epochs, "seed": seed}
    run_dir = RunDir(out) if out is not None else None
    if run_dir is not None and resume:  # the saved config wins; a different setting is refused
        config = _resume_config(run_dir, config)
        dataset, model = config["dataset"], config["model"]
        epochs, seed = config["epochs"], config["seed"]
        base = RunSettings(model=model, epochs=epochs, seed=seed)
        base.validate()
    skipped = skipped_regularizers(config["regularizers"], model)
    applied = [r for r in config["regularizers"] if r not in skipped]
    why = "LeNet has no batch norm" if model == "lenet" else f"{model} has no switch for {', '.join(skipped)}"
    if not applied:
        raise FoolkitError(f"no requested regulariser applies to {model} ({why}): nothing to run; "
                           f"choose other --regularizers")
    needs_val = any(regularizer_settings(r, base).early_stopping for r in applied)  # type: ignore[union-attr]
    with undone_unless_saved(run_dir, resume=resume, saved=("regularizers.json",),
                             resumable=("unfinished-*.pt",)):
        split, rows = _start(run_dir, config, base, resume=resume, results="regularizers.json", key="rows", device=device,
                             data_dir=data_dir, progress=progress, min_train=2 if needs_val else 1)
        if skipped and progress:
            import sys

            print(f"foolkit: skipping {', '.join(skipped)}: {why}", file=sys.stderr)
        x_tr, y_tr, x_te, y_te, classes, data = split
        # early-stopping rows saved before it held out validation chose their epoch by test accuracy: run them again
        rows = [r for r in rows if not (r.get("early_stopping") and "n_val" not in r)]
        # "all" rows saved when it included early stopping: run them again without it
        rows = [r for r in rows if not (r["regularizer"] == "all" and r.get("early_stopping"))]
        done = {(r["regularizer"], r["variant"]) for r in rows}
        for lab in config["labels"]:
            v = make_variant(lab, x_tr, y_tr, x_te, y_te, num_classes=len(classes), seed=seed)
            for reg in applied:
                if (reg, v.name) in done:
                    continue
                s = regularizer_settings(reg, base)
                assert s is not None
                ckpt = _unfinished(run_dir, f"{reg}-{v.name}")
                rec = train_variant(v, classes=classes, settings=s, device=device, progress=progress,
                                    checkpoint=ckpt)
                rec.update(regularizer=reg, dataset=dataset)
                rows.append(rec)
                if run_dir is not None:
                    atomic_write_json(run_dir.file("regularizers.json"), {"config": config, "data": data, "rows": rows,
                                                                          "skipped": skipped})
                    run_dir.log({k: val for k, val in rec.items() if k != "history"})
                    ckpt.unlink(missing_ok=True)  # type: ignore[union-attr]
                if on_run is not None:
                    on_run(rec)
    md = regularizer_markdown(rows, title=f"{model} on {dataset} ({len(y_tr)} train / {len(y_te)} test)")
    if skipped:
        md += f"\nNot run: {', '.join(skipped)} ({why}).\n"
    figure = None
    if run_dir is not None:
        figure = plot_regularizers(rows, run_dir.file("regularizers.png"), title=f"{model} on {dataset}")
        atomic_write_text(run_dir.file("regularizers.md"), md)
        atomic_write_json(run_dir.file("regularizers.json"), {"config": config, "data": data, "rows": rows,
                                                              "figure": figure, "skipped": skipped})
    return {"rows": rows, "markdown": md, "figure": figure, "skipped": skipped}


def regularizer_markdown(rows: Sequence[dict[str, Any]], *, title: str = "") -> str:
    """A Table-1-like Markdown table: one line per regulariser, train / test accuracy (%) per label kind
    and the epochs: to fit (else all run), or, with early stopping, the epoch it kept."""
    kinds = list(dict.fromkeys(r["variant"] for r in rows))
    regs = list(dict.fromkeys(r["regularizer"] for r in rows))
    by = {(r["regularizer"], r["variant"]): r for r in rows}
    head = "| regulariser | " + " | ".join(f"{k}: train % | {k}: test % | {k}: epochs" for k in kinds) + " |"
    sep = "|---|" + "---:|" * (3 * len(kinds))
    lines = [f"**{title}**", "", head, sep] if title else [head, sep]
    for reg in regs:
        cells = []
        for k in kinds:
            r = by.get((reg, k))
            if r is None:
                cells += ["–", "–", "–"]
            elif r.get("early_stopping") and r.get("chosen_epoch"):  # the epoch early stopping kept, as reported
                fit_mark = "" if r["train_accuracy"] >= 1.0 else " (not fitted)"
                cells += [f"{100 * r['train_accuracy']:.2f}{fit_mark}", f"{100 * r['test_accuracy']:.2f}",
                          str(r["chosen_epoch"])]
            else:
                fit_mark = "" if r["epochs_to_fit"] else " (not fitted)"
                cells += [f"{100 * r['train_accuracy']:.2f}{fit_mark}", f"{100 * r['test_accuracy']:.2f}",
                          str(r["epochs_to_fit"] or r["epochs"])]
        lines.append(f"| {reg} | " + " | ".join(cells) + " |")
    held = next((r for r in rows if r.get("n_val")), None)
    if held is not None:
        lines += ["", f"Early stopping trains on {held['n_train']} examples and holds out {held['n_val']} as "
                      f"validation; its rows show the epoch with the best validation accuracy."]
    return "\n".join(lines) + "\n"


def plot_regularizers(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> str:
    """Grouped bars: train and test accuracy per regulariser, one panel per label kind (a train
    bar hatched where the run did not fit its training set)."""
    from matplotlib.patches import Patch

    kinds = list(dict.fromkeys(r["variant"] for r in rows))
    fig = _figure(figsize=(5.5 * max(1, len(kinds)), 4))
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rs = [r for r in rows if r["variant"] == kind]
        pos = range(len(rs))
        bars = ax.bar([p - 0.2 for p in pos], [100 * r["train_accuracy"] for r in rs], width=0.4, color="tab:blue")
        ax.bar([p + 0.2 for p in pos], [100 * r["test_accuracy"] for r in rs], width=0.4, color="tab:orange")
        for bar, r in zip(bars, rs):  # the table's "(not fitted)": stopped by the epoch cap or early stopping
            if r["train_accuracy"] < 1.0:
                bar.set_hatch("//")
                bar.set_edgecolor("white")
        handles = [Patch(facecolor="tab:blue", label="train"), Patch(facecolor="tab:orange", label="test")]
        if any(r["train_accuracy"] < 1.0 for r in rs):
            handles.append(Patch(facecolor="tab:blue", hatch="//", edgecolor="white", label="train, not fitted"))
        ax.set_xticks(list(pos), [r["regularizer"] for r in rs], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 118)  # room above the bars for the legends
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{kind} — {title}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(handles=handles, fontsize=8, loc="upper center", ncol=3, frameon=False)
    return _save_fig(fig, Path(path))


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``results.json`` fields of each run, without the history."""
    keys = ("variant", "corruption", "model", "train_accuracy", "test_accuracy", "epochs_to_fit", "steps_to_fit",
            "seconds")
    return [{k: r.get(k) for k in keys} for r in runs]


def fit_ratio(runs: Sequence[dict[str, Any]], slow: str = "random-labels", fast: str = "true") -> float | None:
    """``epochs_to_fit(slow) / epochs_to_fit(fast)`` when both fitted (the paper's slowdown factor)."""
    by = {r["variant"]: r for r in runs}
    a, b = by.get(slow), by.get(fast)
    if not a or not b or not a["epochs_to_fit"] or not b["epochs_to_fit"]:
        return None
    return a["epochs_to_fit"] / b["epochs_to_fit"]


__all__ = ["MODELS", "DEFAULT_VARIANTS", "REGULARIZERS", "RunSettings", "default_lr", "epoch_decay", "holdout",
           "train_variant", "run_randomization", "run_regularizers", "skipped_regularizers", "plot_figure1",
           "plot_regularizers", "regularizer_markdown", "summarize", "fit_ratio", "expand_variants", "load_split",
           "Split", "saved_config"]
