"""`foolkit train`: train an architecture on a dataset; weights + sidecar JSON that
``load_model`` (and so every other command's ``--model``) reads back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from foolkit.commands.common import command_line, data_dir_option, device_option, emit_json, info, seed_option
from foolkit.errors import FoolkitError


def parse_arch_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("dropout=0.5", "batchnorm=true")`` → ``{"dropout": 0.5, "batchnorm": True}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise FoolkitError(f"--arch-opt takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@click.command()
@click.option("--model", "-m", "arch", required=True, help="Architecture: lenet, mlp1x512, mlp3x512, small-inception, small-alexnet, small-resnet.")
@click.option("--dataset", "-d", required=True, help="mnist, fashion-mnist, cifar10, or folder:PATH.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output FILE(.pt); FILE.json is written beside it.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--lr-decay", type=float, default=1.0, show_default=True, help="Multiply the learning rate by this every epoch.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--augment", type=click.Choice(["none", "crop", "affine"]), default="none", show_default=True)
@click.option("--subset", type=int, default=None, help="Train on a deterministic subset of N examples.")
@click.option("--arch-opt", multiple=True, metavar="KEY=VALUE", help="Architecture option, e.g. dropout=0.5, depth=3, batchnorm=true, maxout=2.")
@click.option("--adv-method", default=None, help="Adversarial training: attack used on every batch (e.g. pgd).")
@click.option("--adv-eps", type=float, default=0.3, show_default=True, help="Adversarial training budget.")
@click.option("--adv-steps", type=int, default=10, show_default=True)
@click.option("--adv-norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from FILE.ckpt.")
@click.option("--force", is_flag=True, help="Overwrite an existing FILE.pt.")
@click.option("--json", "as_json", is_flag=True, help="Print each epoch's metrics as a JSON line.")
@data_dir_option
@seed_option
@device_option
def train(arch: str, dataset: str, epochs: int, out: str, batch_size: int, lr: float, momentum: float,
          weight_decay: float, lr_decay: float, optimizer: str, augment: str, subset: int | None,
          arch_opt: tuple[str, ...], adv_method: str | None, adv_eps: float, adv_steps: int, adv_norm: str,
          resume: bool, force: bool, as_json: bool, data_dir: str | None, seed: int, device: str) -> None:
    """Train a model; writes FILE.pt, FILE.json (sidecar) and FILE.log.jsonl (one line per epoch)."""
    from foolkit.data import load_dataset
    from foolkit.models import new_model, save_model
    from foolkit.models.training import TrainConfig, fit
    from foolkit.runs import atomic_write_text
    from foolkit.utils import resolve_device

    dev = resolve_device(device)
    path = Path(out).with_suffix(".pt")
    ckpt = path.with_suffix(".ckpt")
    log_path = path.with_suffix(".log.jsonl")
    if path.exists() and not (force or resume):
        raise FoolkitError(f"{path} exists; pass --force to overwrite it or --resume to continue its run")
    if resume and not ckpt.exists():
        raise FoolkitError(f"nothing to resume: no checkpoint {ckpt}")
    if adv_method is not None and adv_eps <= 0:
        raise FoolkitError(f"--adv-eps must be positive, got {adv_eps}")
    arch_kwargs = parse_arch_options(arch_opt)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         lr_decay=lr_decay, optimizer=optimizer, augment=augment, seed=seed)
    config.validate()
    train_ds = load_dataset(dataset, "train", data_dir=data_dir, subset=subset, seed=seed)
    test_ds = load_dataset(dataset, "test", data_dir=data_dir, seed=seed, quiet=True)
    mean, std = train_ds.stats()
    model = new_model(arch, classes=train_ds.classes, input_size=train_ds.input_size, mean=mean, std=std,
                      device=dev, name=path.stem, **arch_kwargs)
    perturb = None
    if adv_method is not None:
        from foolkit.attacks import make_attack

        attack = make_attack(adv_method, eps=adv_eps, steps=adv_steps, norm=adv_norm)
        perturb = lambda m, x, y: attack(m, x, y).adv  # noqa: E731

    if not resume and log_path.exists():
        log_path.unlink()
    lines: list[str] = [] if not resume or not log_path.exists() else log_path.read_text().splitlines(keepends=True)

    def on_epoch(rec: dict[str, Any]) -> None:
        lines.append(json.dumps(rec) + "\n")
        atomic_write_text(log_path, "".join(lines))
        if as_json:
            emit_json(rec)

    t0 = time.time()
    history = fit(model, train_ds.images(dev), train_ds.y, config, test=(test_ds.images(dev), test_ds.y.to(dev)),
                  perturb=perturb, checkpoint=ckpt, resume=resume, on_epoch=on_epoch, desc=f"train {arch}")
    last = history[-1] if history else {}
    command = command_line()
    extra = {"dataset": dataset, "dataset_source": train_ds.source, "train_size": len(train_ds),
             "test_size": len(test_ds), "epochs": len(history), "train_accuracy": last.get("train_accuracy"),
             "test_accuracy": last.get("test_accuracy"), "config": {**config.__dict__},
             "adversarial": ({"method": adv_method, "eps": adv_eps, "steps": adv_steps, "norm": adv_norm}
                             if adv_method else None),
             "command": command, "seconds": round(time.time() - t0, 1)}
    save_model(model, path, arch=arch, arch_kwargs=arch_kwargs, extra=extra)
    ckpt.unlink(missing_ok=True)
    acc = last.get("test_accuracy")
    info(f"saved {path} (+ {path.with_suffix('.json').name}); test accuracy {acc:.4f}" if acc is not None else f"saved {path}")
