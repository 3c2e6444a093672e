"""Retrain and reattack: a network retrained on its fooling images is fooled again.

Nguyen et al. 2015 (sec. 3.3–3.4) added fooling images to the training set as an extra
class, retrained, and evolved again; Szegedy et al. 2014 trained on adversarial examples
and still found new ones. :func:`run_rounds` runs both loops:

``kind="fooling"``
    Round 0 is the model as given, measured (clean accuracy, a fresh evolution against it).
    In round ``r >= 1``: the fooling images evolved against model ``r-1`` (the elites of its
    measuring evolution plus those of ``pool_runs`` more runs) join those of earlier rounds as the class
    ``fooling``, balanced to the size of an average real class; the model gains one output
    (round 1 only), is fine-tuned (or trained from scratch), and is measured again: clean
    accuracy on the real classes, recall of ``fooling`` on held-out images evolved against
    model ``r-1`` (``holdout_runs`` runs never trained on), and a fresh evolution over the
    real classes only (how many reach ≥ 99%, median elite confidence).
``kind="adversarial"``
    The same loop with gradient attacks: adversarial examples of the training images
    against model ``r-1`` (``method`` at ``eps``) join the training set with their true
    labels; after fine-tuning, robust accuracy at ``eps`` and the median minimum-norm
    perturbation (FMN) are measured on test images.

A run folder holds ``config.json``, ``log.jsonl`` (one line per round), ``rounds.json``,
``rounds.png``, ``round-R/`` (the model, loadable by ``--model``, and a gallery) and an
atomic ``checkpoint.pt`` (the pools of images, tensors only), so a killed run resumes at
the round where it stopped. Every round's randomness is derived from ``seed`` and the
round number, so a resumed run repeats what an uninterrupted one does. A resumed run keeps
its saved config: only :data:`RESUMABLE_OVERRIDES` may differ (more ``rounds`` extend a
finished run), anything else is refused. Options, data and model are all checked before
the run folder is written, so a start that fails leaves nothing behind.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from foolkit.data import Dataset, check_classes, data_changed, load_dataset, say_capped
from foolkit.errors import FoolkitError
from foolkit.models import Classifier, load_model, new_model, save_model
from foolkit.models.training import TrainConfig, evaluate, fit
from foolkit.runs import RunDir, atomic_write_json, load_checkpoint, save_checkpoint
from foolkit.utils import format_confidence, median

FOOLING = "fooling"


@dataclass
class RetrainConfig:
    """Everything a retrain run needs (saved as config.json; a resumed run uses it)."""

    model: str
    dataset: str
    kind: str = "fooling"               #: "fooling" or "adversarial"
    rounds: int = 3
    # fooling: evolution settings
    encoding: str = "direct"
    generations: int = 100
    population: int = 200
    pool_runs: int = 2                  #: extra evolutions per round whose elites join the training pool
    holdout_runs: int = 1               #: evolutions per round held out to measure recall of `fooling`
    # adversarial: attack settings
    method: str = "pgd"
    eps: float = 0.3
    norm: str = "linf"
    attack_steps: int = 20
    norm_steps: int = 100               #: steps of the minimum-norm attack that measures the median norm
    # training
    finetune_epochs: int = 3
    from_scratch: bool = False
    lr: float = 0.01
    batch_size: int = 64
    subset: int | None = None           #: training images (None: the whole training split)
    test_subset: int | None = 1000      #: test images for accuracy / robustness
    attack_subset: int = 200            #: test images attacked per round (adversarial kind)
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None

    def validate(self) -> None:
        if self.kind not in ("fooling", "adversarial"):
            raise FoolkitError(f"--kind must be fooling or adversarial, got {self.kind!r}")
        if self.rounds < 0:
            raise FoolkitError(f"--rounds must be >= 0, got {self.rounds}")
        if self.encoding not in ("direct", "cppn"):
            raise FoolkitError(f"--encoding must be direct or cppn, got {self.encoding!r}")
        if self.generations < 1:
            raise FoolkitError(f"--generations must be >= 1, got {self.generations}")
        if self.population < 2:
            raise FoolkitError(f"--population must be >= 2, got {self.population}")
        if self.pool_runs < 0:
            raise FoolkitError(f"--pool-runs must be >= 0, got {self.pool_runs}")
        if self.holdout_runs < 1:
            raise FoolkitError(f"--holdout-runs must be >= 1, got {self.holdout_runs}")
        if not self.eps > 0 or not math.isfinite(self.eps):
            raise FoolkitError(f"--eps must be positive, got {self.eps}")
        if self.norm not in ("linf", "l2"):
            raise FoolkitError(f"--norm must be linf or l2, got {self.norm!r}")
        if self.finetune_epochs < 1:
            raise FoolkitError(f"--finetune-epochs must be >= 1, got {self.finetune_epochs}")
        for name in ("subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and v < 10:
                raise FoolkitError(f"--{name.replace('_', '-')} must be at least 10, got {v}")
        if self.attack_subset < 1:
            raise FoolkitError("attack subset must be >= 1")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise FoolkitError(f"--lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise FoolkitError(f"batch size must be >= 1, got {self.batch_size}")
        if self.attack_steps < 1 or self.norm_steps < 1:
            raise FoolkitError(f"--attack-steps and norm steps must be >= 1, got {self.attack_steps} and {self.norm_steps}")
        # the settings the loop hands on, checked by their own validators now rather than rounds later
        from foolkit.evolve import EvolveConfig

        EvolveConfig(encoding=self.encoding, generations=self.generations, population=self.population,
                     seed=self.seed).validate()
        TrainConfig(epochs=self.finetune_epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed).validate()
        if self.kind == "adversarial":
            from foolkit.attacks import ATTACKS, make_attack

            budget = [k for k, v in ATTACKS.items() if v.budget]
            if self.method in ATTACKS and self.method not in budget:  # (an unknown one: make_attack says so)
                raise FoolkitError(f"--method {self.method} is not a budget attack: adversarial retraining attacks "
                                   f"at --eps with one of {', '.join(budget)}")
            make_attack(self.method, eps=self.eps, norm=self.norm, steps=self.attack_steps, seed=self.seed)
            make_attack("fmn", norm=self.norm, steps=self.norm_steps)


@dataclass
class Round:
    """One entry of rounds.json (fields that do not apply to the kind are None)."""

    round: int
    clean_accuracy: float
    fooled_classes: int | None = None
    median_confidence: float | None = None
    fooling_recall: float | None = None
    robust_accuracy: float | None = None
    median_norm: float | None = None
    seconds: float = 0.0
    pool_size: int | None = None        #: unique fooling / adversarial images trained on so far


# -- the model gains one output ---------------------------------------------------------

def _last_layer(net: nn.Module, outputs: int) -> tuple[nn.Module, str, nn.Module]:
    """The last Linear (or 1×1 Conv2d) layer with ``outputs`` outputs: (parent, attribute, layer)."""
    found = None
    for parent in net.modules():
        for attr, child in parent.named_children():
            if (isinstance(child, nn.Linear) and child.out_features == outputs) or \
                    (isinstance(child, nn.Conv2d) and child.out_channels == outputs and child.kernel_size == (1, 1)):
                found = (parent, attr, child)
    if found is None:
        raise FoolkitError("cannot find the model's output layer (a Linear or 1x1 Conv2d with one unit per class)")
    return found


def add_class(model: Classifier, name: str = FOOLING, *, generator: torch.Generator | None = None) -> Classifier:
    """A copy of ``model`` with one more output called ``name``; the old outputs are unchanged.

    The new unit's weights are drawn small (like the old ones' scale ×0.01) and its bias set
    to the lowest existing bias, so the copy predicts exactly what the model did until trained.
    """
    if name in model.classes:
        return copy.deepcopy(model)
    clone = copy.deepcopy(model)
    parent, attr, old = _last_layer(clone.net, model.num_classes)
    g = generator or torch.Generator().manual_seed(0)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, old.out_features + 1, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, old.out_channels + 1, 1, bias=old.bias is not None)
    new = new.to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight[:-1] = old.weight
        new.weight[-1] = torch.randn(old.weight.shape[1:], generator=g).to(old.weight) * old.weight.std() * 0.01
        if old.bias is not None:
            new.bias[:-1] = old.bias
            new.bias[-1] = old.bias.min()
    setattr(parent, attr, new)
    clone.classes = [*model.classes, name]
    return clone


# -- starting and resuming ----------------------------------------------------------------

#: settings a resumed run may change; anything else must match the saved run. More ``rounds``
#: extend a run: every round's randomness comes from the seed and the round number, so the
#: extended run repeats what a run started with those rounds does.
RESUMABLE_OVERRIDES = ("rounds", "device", "data_dir")


def _option(name: str) -> str:
    """How the CLI spells a setting (the few without an option keep their field name)."""
    return name if name in ("norm_steps", "attack_subset", "batch_size") else "--" + name.replace("_", "-")


def saved_config(out: str | Path) -> RetrainConfig:
    """The config a retrain run in ``out`` was started with (or last resumed with)."""
    run = RunDir(out)
    saved = run.saved_config()  # raises "nothing to resume" without one
    fields = {f.name for f in dataclasses.fields(RetrainConfig)}
    if not isinstance(saved, dict) or not {"model", "dataset"} <= saved.keys() or not saved.keys() <= fields:
        raise FoolkitError(f"{run.config_path} is not a retrain run's config")
    return RetrainConfig(**saved)


def _resume_config(run: RunDir, config: RetrainConfig) -> RetrainConfig:
    """The saved run's config with the :data:`RESUMABLE_OVERRIDES` taken from ``config``; any
    other difference is an error (a resumed run must be the run it continues)."""
    old = saved_config(run.path)
    try:
        old.validate()
    except FoolkitError as exc:  # a folder left by an older foolkit, which wrote the config before checking it
        raise FoolkitError(f"{run.path} holds a run that cannot continue ({exc}); delete it and start again") from None
    new = dataclasses.asdict(config)
    changed = [_option(k) for k, v in dataclasses.asdict(old).items() if k not in RESUMABLE_OVERRIDES and new[k] != v]
    if changed:
        raise FoolkitError(f"cannot change {', '.join(changed)} when resuming {run.path} (only "
                           f"{', '.join(_option(k) for k in RESUMABLE_OVERRIDES)} may change; start a new run "
                           f"with another --out for other settings)")
    return dataclasses.replace(old, **{k: getattr(config, k) for k in RESUMABLE_OVERRIDES})


#: what a run writes in its folder (besides config, log and checkpoint): a new run overwrites none of it
OUTPUTS = ("rounds.json", "rounds.png", "round-*")


def _refuse_existing(run: RunDir) -> None:
    """A new run never overwrites one, nor files it would write (checked before anything is
    loaded or written)."""
    run.refuse_taken(OUTPUTS)


def _load_inputs(config: RetrainConfig, dev: torch.device) -> tuple[Dataset, Dataset, Classifier, str]:
    """Training and test data and the model, checked against each other: ``(train, test, model, arch)``.
    The model first: a bad ``--model`` is its one error line, without the data's notices before it."""
    base = load_model(config.model, device=dev)
    train = load_dataset(config.dataset, "train", data_dir=config.data_dir, subset=config.subset, seed=config.seed,
                         quiet=True)  # (its notices: say_capped, once the run has started)
    test = load_dataset(config.dataset, "test", data_dir=config.data_dir, subset=config.test_subset,
                        seed=config.seed, quiet=True)
    if not len(train) or not len(test):
        raise FoolkitError(f"dataset {config.dataset} has no {'training' if not len(train) else 'test'} images")
    if base.input_size != train.input_size:
        raise FoolkitError(f"model {config.model} takes {list(base.input_size)} images but {config.dataset} has "
                           f"{list(train.input_size)}")
    real = [c for c in base.classes if c != FOOLING]
    if len(real) != len(train.classes):
        raise FoolkitError(f"model {config.model} has {len(real)} classes, dataset {config.dataset} has {len(train.classes)}")
    check_classes(list(train.classes), real, config.dataset, config.model)
    arch = base.meta.get("arch")
    if arch is None:
        raise FoolkitError(f"retraining needs a model foolkit can rebuild (a bundled model or one from `foolkit train`); "
                           f"{config.model} has no architecture in its sidecar")
    return train, test, base, arch


# -- the loop ---------------------------------------------------------------------------

Hook = Callable[[str], None]


def run_rounds(config: RetrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
               on_stage: Hook | None = None) -> list[Round]:
    """Run (or resume) the retrain-and-reattack loop into ``out``; returns one Round per round.

    ``resume=True`` continues the run in ``out`` with its saved config; ``config`` may differ
    from it only in :data:`RESUMABLE_OVERRIDES` (written back to config.json, so the next resume
    starts from them). Ctrl-C raises KeyboardInterrupt with every finished round saved."""
    run = RunDir(out)
    try:
        return _rounds(config, run, resume=resume, progress=progress, on_stage=on_stage)
    finally:
        run.release()


def _rounds(config: RetrainConfig, run: RunDir, *, resume: bool, progress: bool, on_stage: Hook | None) -> list[Round]:
    from foolkit.utils import resolve_device

    if resume:  # the saved config wins; a different setting is refused
        run.lock()  # before anything is read: another command may still be writing it
        config = _resume_config(run, config)
        config.validate()
    else:
        config.validate()
        _refuse_existing(run)
    dev = resolve_device(config.device)
    done: dict[str, Any] | None = None
    if resume and run.checkpoint_path.exists():
        meta, tensors = load_checkpoint(run.checkpoint_path, map_location=dev)
        done = {"rounds": [Round(**r) for r in meta["rounds"]], **tensors}
        if len(done["rounds"]) > config.rounds + 1:
            raise FoolkitError(f"{run.path} has already run rounds 0-{len(done['rounds']) - 1}; "
                               f"--rounds {config.rounds} would end before them")
    # everything is loaded and checked before the run folder is written: a failed start leaves nothing
    train, test, base, arch = _load_inputs(config, dev)
    data = {"train": train.provenance(), "test": test.provenance()}
    if done is not None and "data" in meta:  # a resumed run goes on with the data it started on, wherever they are
        changed = data_changed(meta["data"], data)
        if changed:
            raise FoolkitError(f"cannot resume {run.path}: {changed}; give the --data-dir it was started with")
    if resume:
        run.save_config(dataclasses.asdict(config))  # changed rounds/device included: the next --resume's base
    else:
        run.create(dataclasses.asdict(config), resume=False, outputs=OUTPUTS)
    if progress:  # after the last check: a command that fails says only its error
        say_capped(config.dataset, data)

    rounds: list[Round] = []
    pool = torch.empty(0, *train.input_size, device=dev)
    pool_y = torch.empty(0, dtype=torch.long, device=dev)
    measured = pool  # the last measuring evolution's elites: the next round trains on them
    model = base
    start = 0
    if done is not None:
        rounds = done["rounds"]
        pool, pool_y = done["pool"].to(dev), done["pool_y"].to(dev)
        measured = done["measured"].to(dev)
        start = len(rounds)
        model = load_model(run.file(f"round-{start - 1}") / "model.pt", device=dev)
        run.truncate_log("round", start - 1)
    elif resume:
        run.truncate_log("round", -1)

    stage = on_stage or (lambda s: None)
    bar = tqdm(total=config.rounds + 1, initial=start, desc=f"retrain ({config.kind})", disable=None if progress else True,
               dynamic_ncols=True)
    try:
        for r in range(start, config.rounds + 1):
            t0 = time.time()
            if r > 0:
                stage(f"round {r}: harvesting")
                new_x, new_y, holdout = _harvest(model, config, train, measured, r, dev, progress)
                pool, pool_y = torch.cat([pool, new_x]), torch.cat([pool_y, new_y])
                stage(f"round {r}: retraining")
                model = _retrain(model, base, arch, config, train, pool, pool_y, r, dev, progress)
            else:
                holdout = None
            stage(f"round {r}: measuring")
            rec, gallery = _measure(model, config, test, holdout, r, dev, progress)
            if config.kind == "fooling":
                measured = gallery[0].to(dev)
            rec.seconds = round(time.time() - t0, 2)
            rec.pool_size = int(len(pool)) if r > 0 else 0
            rounds.append(rec)
            _save_round(run, r, model, arch, base, config, gallery, rec)
            run.log(dataclasses.asdict(rec))  # before the checkpoint: a resume truncates a line it did not save
            save_checkpoint(run.checkpoint_path, meta={"rounds": [dataclasses.asdict(x) for x in rounds], "data": data},
                            tensors={"pool": pool.cpu(), "pool_y": pool_y.cpu(), "measured": measured.cpu()})
            _write_report(run, config, rounds, data)
            bar.update(1)
            bar.set_postfix(_postfix(rec))
    finally:
        bar.close()
    if start > config.rounds:  # a finished run resumed: nothing ran; its report is rewritten, as the CLI says
        _write_report(run, config, rounds, data)
    return rounds


def _postfix(rec: Round) -> dict[str, str]:
    out = {"acc": f"{rec.clean_accuracy:.3f}"}
    if rec.fooled_classes is not None:
        out["fooled"] = str(rec.fooled_classes)
    if rec.robust_accuracy is not None:
        out["robust"] = f"{rec.robust_accuracy:.3f}"
    return out


def _evolve(model: Classifier, config: RetrainConfig, seed: int, classes: list[int], dev: torch.device,
            progress: bool) -> Any:
    from foolkit.evolve import EvolveConfig, run_evolution

    cfg = EvolveConfig(encoding=config.encoding, generations=config.generations, population=config.population,
                       classes=classes, seed=seed)
    return run_evolution(model, cfg, progress=False)


def _real_classes(model: Classifier) -> list[int]:
    return [i for i, c in enumerate(model.classes) if c != FOOLING]


def _round_seed(config: RetrainConfig, r: int, k: int) -> int:
    return config.seed * 1_000_003 + r * 1009 + k


def _harvest(model: Classifier, config: RetrainConfig, train: Dataset, measured: torch.Tensor, r: int,
             dev: torch.device, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """New training images for round ``r``, made against model ``r-1`` (the elites of its
    measuring evolution plus ``pool_runs`` more runs), and held-out ones."""
    if config.kind == "adversarial":
        from foolkit.attacks import make_attack

        attack = make_attack(config.method, eps=config.eps, norm=config.norm, steps=config.attack_steps,
                             seed=_round_seed(config, r, 0))
        x, y = train.images(dev), train.y.to(dev)
        advs = [attack(model, x[i:i + 500], y[i:i + 500]).adv for i in range(0, len(y), 500)]
        return torch.cat(advs).detach(), y, None
    classes = _real_classes(model)
    runs = [_evolve(model, config, _round_seed(config, r, k), classes, dev, progress)
            for k in range(1, 1 + config.pool_runs + config.holdout_runs)]
    train_imgs = torch.cat([measured, *(res.images.to(dev) for res in runs[:config.pool_runs])])
    holdout = torch.cat([res.images for res in runs[config.pool_runs:]]).to(dev)
    fooling_label = len(classes)  # the index `fooling` has (or will have) in the retrained model
    return train_imgs, torch.full((len(train_imgs),), fooling_label, dtype=torch.long, device=dev), holdout


def _retrain(model: Classifier, base: Classifier, arch: str, config: RetrainConfig, train: Dataset,
             pool: torch.Tensor, pool_y: torch.Tensor, r: int, dev: torch.device, progress: bool) -> Classifier:
    x, y = train.images(dev), train.y.to(dev)
    if config.kind == "fooling":
        g = torch.Generator().manual_seed(_round_seed(config, r, 99))
        x, y = mix_fooling(x, y, pool, pool_y, len(train.classes), g)
        target_classes = [*train.classes, FOOLING]
    else:
        x, y = torch.cat([x, pool]), torch.cat([y, pool_y])
        target_classes = list(model.classes)
    if config.from_scratch:
        mean, std = base.mean.flatten().tolist(), base.std.flatten().tolist()
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # the caller's RNG stays as it was
            torch.manual_seed(_round_seed(config, r, 7))
            new = new_model(arch, classes=target_classes, input_size=base.input_size, mean=mean, std=std, device=dev,
                            **base.meta.get("arch_kwargs", {}))
        new.meta = {**base.meta, "arch": arch}
    elif config.kind == "fooling" and FOOLING not in model.classes:
        new = add_class(model, generator=torch.Generator().manual_seed(_round_seed(config, r, 5)))
    else:
        new = copy.deepcopy(model)
    tc = TrainConfig(epochs=config.finetune_epochs, batch_size=config.batch_size, lr=config.lr,
                     seed=_round_seed(config, r, 3))
    fit(new, x, y, tc, progress=progress, desc=f"round {r} training")
    return new.eval()


def mix_fooling(x: torch.Tensor, y: torch.Tensor, pool: torch.Tensor, pool_y: torch.Tensor, num_real: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The real training data plus the class ``fooling``, balanced as Nguyen et al. did: the
    fooling class gets as many examples as an average real class, drawn (with replacement
    when the pool is smaller) from every round's fooling images so far."""
    if not len(pool):
        return x, y
    per_class = max(1, len(y) // num_real)
    if len(pool) >= per_class:
        pick = torch.randperm(len(pool), generator=generator)[:per_class]
    else:
        pick = torch.cat([torch.randperm(len(pool), generator=generator),
                          torch.randint(len(pool), (per_class - len(pool),), generator=generator)])
    pick = pick.to(pool.device)
    return torch.cat([x, pool[pick]]), torch.cat([y, pool_y[pick]])


@torch.no_grad()
def _real_accuracy(model: Classifier, test: Dataset, dev: torch.device) -> float:
    """Accuracy on the real test classes; predicting `fooling` counts as a mistake."""
    acc, _ = evaluate(model, test.images(dev), test.y.to(dev))
    return acc


def _measure(model: Classifier, config: RetrainConfig, test: Dataset, holdout: torch.Tensor | None, r: int,
             dev: torch.device, progress: bool) -> tuple[Round, tuple[torch.Tensor, list[str]]]:
    from foolkit.images import quantize

    rec = Round(round=r, clean_accuracy=_real_accuracy(model, test, dev))
    if config.kind == "fooling":
        if holdout is not None and FOOLING in model.classes:
            labels, _ = model.predict(holdout)
            rec.fooling_recall = float((labels == model.classes.index(FOOLING)).float().mean())
        res = _evolve(model, config, _round_seed(config, r, 0), _real_classes(model), dev, progress)
        conf = res.confidences.float()
        rec.fooled_classes = int((conf >= 0.99).sum())
        rec.median_confidence = median(conf)
        captions = [f"{model.classes[c]}\n{format_confidence(float(p))}" for c, p in zip(res.classes, conf)]
        return rec, (res.images, captions)
    from foolkit.attacks import make_attack

    sub = test.subset(config.attack_subset, seed=config.seed)  # every class: a sorted test set's first N are 0s and 1s
    x, y = sub.images(dev), sub.y.to(dev)
    budget = make_attack(config.method, eps=config.eps, norm=config.norm, steps=config.attack_steps,
                         seed=_round_seed(config, r, 1))(model, x, y)
    rec.robust_accuracy = float((budget.labels_after == y).float().mean())
    correct = budget.labels_before == y
    minnorm = make_attack("fmn", norm=config.norm, steps=config.norm_steps)(model, x[correct], y[correct])
    rec.median_norm = minnorm.median(config.norm)
    # one example per class (the test subset is sorted by label), captioned true -> new label
    y_ok = y[correct]
    pick = [int(k) for c in y_ok.unique().tolist()[:10] for k in (y_ok == c).nonzero().flatten()[:1].tolist()]
    imgs = [quantize(minnorm.adv[k]) for k in pick]
    size = getattr(minnorm, config.norm)
    captions = [f"{model.classes[int(y_ok[k])]} -> {model.classes[int(minnorm.labels_after[k])]} "
                f"({float(minnorm.confidences_after[k]) * 100:.0f}%)\n{config.norm} = {float(size[k]):.3f}" for k in pick]
    return rec, (torch.stack(imgs) if imgs else x[:0], captions)


def _save_round(run: RunDir, r: int, model: Classifier, arch: str, base: Classifier, config: RetrainConfig,
                gallery: tuple[torch.Tensor, list[str]], rec: Round) -> None:
    from foolkit.images import grid, save_image

    folder = run.file(f"round-{r}")
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "model.pt", arch=arch, arch_kwargs=base.meta.get("arch_kwargs", {}),
               name=f"{base.name}-{config.kind}-r{r}",  # not "model": it names evolve's folders and galleries
               extra={"retrain": {"round": r, "kind": config.kind, "from": config.model},
                      "test_accuracy": rec.clean_accuracy})
    images, captions = gallery
    if len(images):
        title = (f"round {r}: fooling images against the round-{r} model" if config.kind == "fooling"
                 else f"round {r}: minimum-norm adversarial examples")
        save_image(grid(list(images), captions, columns=5, tile=112, title=title), folder / "gallery.png")


def _write_report(run: RunDir, config: RetrainConfig, rounds: list[Round], data: dict[str, Any]) -> None:
    atomic_write_json(run.file("rounds.json"), {
        "kind": config.kind, "model": config.model, "dataset": config.dataset, "data": data,
        "rounds": [{k: v for k, v in dataclasses.asdict(r).items()} for r in rounds],
    })
    plot_rounds(rounds, config, run.file("rounds.png"))


def plot_rounds(rounds: list[Round], config: RetrainConfig, path: Path) -> None:
    """The figures over rounds: clean accuracy, and fooled classes / confidence / recall or
    robust accuracy / median norm."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    from foolkit.runs import atomic_write_bytes

    xs = [r.round for r in rounds]
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    accs = [r.clean_accuracy * 100 for r in rounds]
    axes[0].plot(xs, accs, "o-", color="tab:blue")
    axes[0].set_ylim(max(0.0, min(accs) - 3), 100.5)
    axes[0].set_title("clean test accuracy (%)")
    if config.kind == "fooling":
        axes[1].bar(xs, [r.fooled_classes or 0 for r in rounds], color="tab:red")
        axes[1].set_ylim(0, len(rounds) and max(10, max(r.fooled_classes or 0 for r in rounds)))
        axes[1].set_title("classes fooled at >= 99%")
        axes[2].plot(xs, [(r.median_confidence or 0) * 100 for r in rounds], "o-", color="tab:red",
                     label="median elite confidence")
        rec = [(r.round, r.fooling_recall * 100) for r in rounds if r.fooling_recall is not None]
        if rec:
            axes[2].plot([a for a, _ in rec], [b for _, b in rec], "s--", color="tab:green",
                         label="recall of 'fooling' (held out)")
        axes[2].set_ylim(0, 102)
        axes[2].set_title("confidence and recall (%)")
        axes[2].legend(fontsize=8, loc="lower left")
    else:
        axes[1].plot(xs, [(r.robust_accuracy or 0) * 100 for r in rounds], "o-", color="tab:red")
        axes[1].set_title(f"robust accuracy at {config.norm} eps={config.eps} (%)")
        axes[1].set_ylim(-2, 102)
        axes[2].plot(xs, [r.median_norm if r.median_norm is not None else float("nan") for r in rounds], "o-",
                     color="tab:purple")
        axes[2].set_title(f"median minimum {config.norm} perturbation")
    for ax in axes:
        ax.set_xlabel("round")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    fig.suptitle(f"retrain and reattack: {config.model} on {config.dataset} ({config.kind})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
