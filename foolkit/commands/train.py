"""`foolkit train`: train an architecture on a dataset; weights + sidecar JSON that
``load_model`` (and so every other command's ``--model``) reads back."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click

from foolkit.commands.common import (check_writable_folder, command_line, data_dir_option, device_option, emit_json,
                                     info, seed_option, typed_options)
from foolkit.errors import FoolkitError, Interrupted

#: attacks that adversarial training can use: the budget attacks (they take --adv-eps/--adv-steps/--adv-norm)
ADV_METHODS = ("fgsm", "bim", "pgd")

#: the run's settings (checkpoint key → CLI option): a resumed run must keep them; the ones
#: not given on the command line are taken from the checkpoint
RUN_SETTINGS: dict[str, str] = {
    "arch": "--model", "dataset": "--dataset", "subset": "--subset", "arch_kwargs": "--arch-opt", "seed": "--seed",
    "batch_size": "--batch-size", "lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay",
    "lr_decay": "--lr-decay", "optimizer": "--optimizer", "augment": "--augment", "adv_method": "--adv-method",
    "adv_eps": "--adv-eps", "adv_steps": "--adv-steps", "adv_norm": "--adv-norm",
}
#: what a resumed run may change (besides where the data live, the device and --json)
RESUMABLE = ("--epochs",)


def parse_arch_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("dropout=0.5", "batchnorm=true")`` → ``{"dropout": 0.5, "batchnorm": True}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise FoolkitError(f"--arch-opt takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        if key.strip() in out:
            raise FoolkitError(f"--arch-opt {key.strip()} is given twice; give each option once")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def init_seed(seed: int) -> int:
    """The seed of a new model's initial weights for run seed ``seed`` (kept apart from the
    per-epoch seeds :func:`foolkit.models.training.fit` derives for batch order and dropout)."""
    return (seed * 6_700_417 + 2_147_483_659) % 2**63


def output_path(out: str) -> Path:
    """The model file ``--out`` names: ``.pt`` appended unless the name already ends in it
    (``mlp-lr0.05`` → ``mlp-lr0.05.pt``, not ``mlp-lr0.pt``)."""
    p = Path(out)
    if p.name in ("", ".", ".."):
        raise FoolkitError(f"--out needs a file name, got {out!r}")
    return p if p.name.endswith(".pt") else p.with_name(p.name + ".pt")


def check_output(path: Path, others: list[Path]) -> None:
    """Refuse an output that cannot be written, before any work: a folder in the way, a file
    where a folder must be, or a folder we may not write into. Creates nothing."""
    for p in [path, *others]:
        if p.is_dir():
            raise FoolkitError(f"cannot write {p}: it is a folder; choose another --out")
    check_writable_folder(path.parent, "the folder of --out")


_PARAM = {"arch_kwargs": "arch_opt"}  # a setting whose click parameter is named otherwise


def merge_resumed(saved: dict[str, Any], given: dict[str, Any], typed: set[str], ckpt: Path) -> dict[str, Any]:
    """The settings of a resumed run: the saved ones, with the options ``typed`` on the command
    line checked against them. Any change but :data:`RESUMABLE` is an error naming the options."""
    merged = dict(given)
    changed: list[str] = []
    for key, option in RUN_SETTINGS.items():
        if key not in saved:  # a checkpoint from before foolkit saved it: keep what was given
            continue
        if given[key] == saved[key]:
            continue
        if _PARAM.get(key, key) in typed:
            changed.append(f"{option} ({_show(saved[key])} -> {_show(given[key])})")
        else:
            merged[key] = saved[key]
    if changed:
        raise FoolkitError(f"cannot change {', '.join(changed)} when resuming {ckpt} "
                           f"(only {', '.join(RESUMABLE)} may change; leave the others out or as they were, "
                           f"or pass --force instead of --resume to start over)")
    return merged


def _progress(ckpt: Path) -> str:
    """``" (2 of 10 epochs done)"`` for a readable checkpoint, else ``""``."""
    from foolkit.runs import load_checkpoint

    try:
        meta, _ = load_checkpoint(ckpt)
        return f" ({int(meta['epoch'])} of {int(meta['config']['epochs'])} epochs done)"
    except (FoolkitError, KeyError, TypeError, ValueError):
        return ""


def data_difference(saved: dict[str, Any], now: dict[str, dict[str, Any]], classes: list[str]) -> str | None:
    """How the data a resumed run loaded (``now``: ``{split: provenance}``, and their ``classes``)
    differ from those its checkpoint recorded (None if they do not): by classes, size and content,
    not by where they were read from. ``saved`` is ``{"train": provenance, "test": provenance,
    "classes": [...]}``, or, from a checkpoint saved before fingerprints, ``{"source",
    "train_size", "classes"}`` (then compared by size and classes only)."""
    from foolkit.data import data_changed

    if "train_size" in saved:
        splits: dict[str, Any] = {"train": {"source": saved.get("source"), "n": saved.get("train_size")}}
    else:
        splits = {k: v for k, v in saved.items() if k in ("train", "test")}
    old = saved.get("classes")
    if isinstance(old, list) and old != list(classes):
        return f"the data's classes differ from the run's ({_show_classes(old)}; now {_show_classes(classes)})"
    return data_changed(splits, now)


def _show_classes(classes: list[Any]) -> str:
    names = ", ".join(str(c) for c in classes[:4]) + (", ..." if len(classes) > 4 else "")
    return f"{len(classes)} classes: {names}"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={json.dumps(v)}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


@click.command()
@click.option("--model", "-m", "arch", default=None,
              help="Architecture: lenet, mlp1x512, mlp3x512, small-inception, small-alexnet, small-resnet "
                   "(needed unless --resume).")
@click.option("--dataset", "-d", default=None, help="mnist, fashion-mnist, cifar10, or folder:PATH (needed unless --resume).")
@click.option("--epochs", type=int, default=10, show_default=True, help="Total epochs (the one setting --resume may change).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output FILE.pt (.pt is added unless the name ends in it); FILE.json and FILE.log.jsonl "
                   "are written beside it.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum, in [0, 1).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 penalty, >= 0.")
@click.option("--lr-decay", type=float, default=1.0, show_default=True, help="Multiply the learning rate by this every epoch.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--augment", type=click.Choice(["none", "crop", "affine"]), default="none", show_default=True)
@click.option("--subset", type=int, default=None, help="Train on a deterministic subset of N examples.")
@click.option("--arch-opt", multiple=True, metavar="KEY=VALUE", help="Architecture option, e.g. dropout=0.5, depth=3, batchnorm=true, maxout=2.")
@click.option("--adv-method", type=click.Choice(ADV_METHODS, case_sensitive=False), default=None,
              help="Adversarial training: attack each batch with this budget attack.")
@click.option("--adv-eps", type=float, default=0.3, show_default=True, help="Adversarial training budget.")
@click.option("--adv-steps", type=int, default=10, show_default=True)
@click.option("--adv-norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from FILE.ckpt (same settings; --epochs may change).")
@click.option("--force", is_flag=True, help="Overwrite an existing FILE.pt, or start an interrupted run (FILE.ckpt) over.")
@click.option("--json", "as_json", is_flag=True, help="Print each epoch's metrics as a JSON line.")
@data_dir_option
@seed_option
@device_option
def train(arch: str | None, dataset: str | None, epochs: int, out: str, batch_size: int, lr: float, momentum: float,
          weight_decay: float, lr_decay: float, optimizer: str, augment: str, subset: int | None,
          arch_opt: tuple[str, ...], adv_method: str | None, adv_eps: float, adv_steps: int, adv_norm: str,
          resume: bool, force: bool, as_json: bool, data_dir: str | None, seed: int, device: str) -> None:
    """Train a model; writes FILE.pt, FILE.json (sidecar) and FILE.log.jsonl (one line per epoch).

    Same --seed, same result on CPU. After every epoch the run is checkpointed in FILE.ckpt;
    Ctrl-C (or a kill) keeps it, and the same command with --resume continues the run (so does
    `--out FILE --resume` alone: options left out come from the run, and the data may have moved).
    """
    import torch

    from foolkit.data import load_dataset, say_capped
    from foolkit.models import new_model, save_model
    from foolkit.models.archs import check_arch_options
    from foolkit.models.training import TrainConfig, evaluate, fit
    from foolkit.runs import atomic_write_text, load_checkpoint
    from foolkit.utils import resolve_device

    if resume and force:
        raise FoolkitError("--resume continues the run in FILE.ckpt and --force starts it over: pass one of them")
    if not resume:
        missing = [opt for opt, value in (("--model", arch), ("--dataset", dataset)) if value is None]
        if missing:
            them = "them" if len(missing) > 1 else "it"
            raise FoolkitError(f"missing option{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
                               f"(a new run needs {them}; --resume takes {them} from the run's checkpoint)")
        if epochs <= 0:
            raise FoolkitError(f"--epochs must be at least 1, got {epochs}")
    path = output_path(out)
    ckpt = path.with_suffix(".ckpt")
    log_path = path.with_suffix(".log.jsonl")
    check_output(path, [path.with_suffix(".json"), ckpt, log_path])
    given: dict[str, Any] = {
        "arch": arch, "dataset": dataset, "subset": subset, "arch_kwargs": parse_arch_options(arch_opt), "seed": seed,
        "batch_size": batch_size, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "lr_decay": lr_decay,
        "optimizer": optimizer, "augment": augment, "adv_method": adv_method.lower() if adv_method else None,
        "adv_eps": adv_eps, "adv_steps": adv_steps, "adv_norm": adv_norm,
    }
    done: list[dict[str, Any]] = []  # the epochs a resumed run has behind it
    saved_data: dict[str, Any] | None = None
    command: str | None = command_line()  # the command that started the run
    resumed_with: list[str] = []  # the commands that resumed it
    if resume:
        if not ckpt.exists():
            if path.exists():
                raise FoolkitError(f"nothing to resume: {path} is a finished run (no checkpoint {ckpt.name}); "
                                   "pass --force instead of --resume to train it again, or choose another --out")
            raise FoolkitError(f"nothing to resume: no checkpoint {ckpt}")
        meta, _ = load_checkpoint(ckpt)
        saved_config = meta.get("config", {})
        saved_extra = saved_config.get("extra", {})
        saved = {**{k: v for k, v in saved_config.items() if k in RUN_SETTINGS}, **saved_extra.get("run", {})}
        saved_data = saved_extra.get("data")
        command = saved_extra.get("command")  # None: a checkpoint from before foolkit saved it
        resumed_with = [*saved_extra.get("resumed_with", []), command_line()]
        typed = typed_options()
        given = merge_resumed(saved, given, typed, ckpt)
        for key, option in (("arch", "--model"), ("dataset", "--dataset")):
            if given[key] is None:
                raise FoolkitError(f"{ckpt} does not record the run's {option} (an older checkpoint); "
                                   f"pass the {option} it was started with")
        done = list(meta.get("history", []))
        if "epochs" not in typed and "epochs" in saved_config:
            epochs = int(saved_config["epochs"])  # the run's own length unless --epochs says otherwise
        if epochs < len(done):
            raise FoolkitError(f"{ckpt} already holds {len(done)} epoch{'s' if len(done) != 1 else ''}; "
                               "--epochs must be at least that "
                               f"(it is the total, not the number still to go), got {epochs}")
        if epochs <= 0:
            raise FoolkitError(f"--epochs must be at least 1, got {epochs}")
    elif ckpt.exists() and not force:
        raise FoolkitError(f"{ckpt} holds an unfinished run{_progress(ckpt)}; pass --resume to continue it "
                           "or --force to delete it and start over")
    elif not force:
        for p in (path, path.with_suffix(".json"), log_path):  # the model, its card and its log: all or none
            if p.exists():
                raise FoolkitError(f"{p} exists; pass --force to overwrite it, or choose another --out")

    # every value checked before any data are loaded or files touched
    if given["subset"] is not None and given["subset"] <= 0:
        raise FoolkitError(f"--subset must be positive, got {given['subset']}")
    arch, dataset, seed = given["arch"], given["dataset"], given["seed"]
    arch_kwargs: dict[str, Any] = given["arch_kwargs"]
    check_arch_options(arch, arch_kwargs)
    run_settings = {k: given[k] for k in ("arch", "dataset", "subset", "arch_kwargs", "adv_method", "adv_eps",
                                          "adv_steps", "adv_norm")}
    config = TrainConfig(epochs=epochs, batch_size=given["batch_size"], lr=given["lr"], momentum=given["momentum"],
                         weight_decay=given["weight_decay"], lr_decay=given["lr_decay"], optimizer=given["optimizer"],
                         augment=given["augment"], seed=seed,
                         extra={"run": run_settings, "command": command,
                                **({"resumed_with": resumed_with} if resumed_with else {})})
    config.validate()
    adv_method = given["adv_method"]
    typed_now = typed_options()
    orphans = [f"--{k.replace('_', '-')}" for k in ("adv_eps", "adv_steps", "adv_norm") if k in typed_now]
    if adv_method == "fgsm" and "adv_steps" in typed_now:
        raise FoolkitError("--adv-method fgsm takes one step; drop --adv-steps (bim and pgd iterate)")
    if given["optimizer"] == "adam" and "momentum" in typed_now:
        raise FoolkitError("--momentum is SGD's; Adam keeps its own moving averages: drop it or use --optimizer sgd")
    if adv_method is None and orphans:
        raise FoolkitError(f"{' and '.join(orphans)} set{'s' if len(orphans) == 1 else ''} adversarial training, "
                           f"which needs --adv-method ({', '.join(ADV_METHODS)})")
    adv = None
    perturb = None
    if adv_method is not None:
        from foolkit.attacks import make_attack

        adv = {"method": adv_method, "eps": given["adv_eps"], "steps": given["adv_steps"], "norm": given["adv_norm"]}
        if not (adv["eps"] > 0 and math.isfinite(adv["eps"])):
            raise FoolkitError(f"--adv-eps must be positive, got {adv['eps']}")
        if adv["steps"] <= 0:
            raise FoolkitError(f"--adv-steps must be positive, got {adv['steps']}")
        attack = make_attack(adv_method, eps=adv["eps"], steps=adv["steps"], norm=adv["norm"])
        perturb = lambda m, x, y: attack(m, x, y).adv  # noqa: E731
    dev = resolve_device(device)

    train_ds = load_dataset(dataset, "train", data_dir=data_dir, subset=given["subset"], seed=seed)
    test_ds = load_dataset(dataset, "test", data_dir=data_dir, seed=seed, quiet=True)
    # the data as the checkpoint keeps them: a resumed run compares them by content, wherever they now live
    provenance = {"train": train_ds.provenance(), "test": test_ds.provenance()}
    if isinstance(saved_data, dict):
        changed = data_difference(saved_data, provenance, list(train_ds.classes))
        if changed:
            raise FoolkitError(f"cannot resume {ckpt}: {changed}; pass the --data-dir it was started with")
    config.extra["data"] = {**provenance, "classes": list(train_ds.classes)}
    mean, std = train_ds.stats()
    # initial weights from --seed, the caller's global RNG left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed))
        model = new_model(arch, classes=train_ds.classes, input_size=train_ds.input_size, mean=mean, std=std,
                          device=dev, name=path.stem, **arch_kwargs)

    # the log holds exactly the epochs the checkpoint holds (a kill may fall between the two writes)
    lines: list[str] = [json.dumps(rec) + "\n" for rec in done]
    if resume:
        atomic_write_text(log_path, "".join(lines))
    else:
        ckpt.unlink(missing_ok=True)  # --force: the old run is given up
        if not path.exists():  # a finished model's log stays beside it until the new run's first epoch replaces it
            log_path.unlink(missing_ok=True)

    def on_epoch(rec: dict[str, Any]) -> None:
        lines.append(json.dumps(rec) + "\n")
        atomic_write_text(log_path, "".join(lines))
        if as_json:
            emit_json(rec)

    if not as_json:
        say_capped(dataset, {"train": provenance["train"]})
    t0 = time.time()
    try:
        history = fit(model, train_ds.images(dev), train_ds.y, config, test=(test_ds.images(dev), test_ds.y.to(dev)),
                      perturb=perturb, checkpoint=ckpt, resume=resume, on_epoch=on_epoch, desc=f"train {arch}")
    except KeyboardInterrupt:
        finished = len(lines)
        if ckpt.exists():
            try:  # the checkpoint, not the log, says how far the run got
                finished = int(load_checkpoint(ckpt)[0]["epoch"])
            except (FoolkitError, KeyError, TypeError, ValueError):
                pass
            raise Interrupted(
                f"interrupted during epoch {min(finished + 1, epochs)} of {epochs}; {ckpt} holds the "
                f"{finished} finished epoch{'s' if finished != 1 else ''}: continue with `foolkit train --out {out} "
                "--resume`") from None
        raise Interrupted(f"interrupted during epoch 1 of {epochs}, before the first checkpoint; "
                                  "nothing was saved") from None
    last = history[-1] if history else {}
    # the saved model's own clean accuracy on its training images (eval mode); the log's per-epoch
    # figure is a running average over the epoch's batches in train mode (dropout on, weights
    # changing; adversarial batches with --adv-method), which understates it
    train_accuracy, _ = evaluate(model, train_ds.images(dev), train_ds.y)
    extra = {"dataset": dataset, "dataset_source": train_ds.source, "train_size": len(train_ds),
             "test_size": len(test_ds), "epochs": len(history), "train_accuracy": train_accuracy,
             "last_epoch_train_accuracy": last.get("train_accuracy"), "test_accuracy": last.get("test_accuracy"), "config": {**config.__dict__},
             "adversarial": adv, "command": command, **({"resumed_with": resumed_with} if resumed_with else {}),
             "seconds": round(time.time() - t0, 1)}
    save_model(model, path, arch=arch, arch_kwargs=arch_kwargs, extra=extra)
    ckpt.unlink(missing_ok=True)
    acc = last.get("test_accuracy")
    info(f"saved {path} (+ {path.with_suffix('.json').name}); test accuracy {acc:.4f}" if acc is not None else f"saved {path}")
