"""`foolkit memorize`: the experiments of Zhang et al. 2017 (randomisation tests, regularisers,
finite-sample expressivity, min-norm interpolation)."""

from __future__ import annotations

from typing import Any

import click

from foolkit.commands.common import data_dir_option, device_option, emit_json, info, seed_option, typed_options
from foolkit.errors import FoolkitError


def _floats(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FoolkitError(f"{what} takes comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))  # each once, in the order given


def _positive(value: int | None, what: str) -> None:
    if value is not None and value <= 0:
        raise FoolkitError(f"{what} must be positive, got {value}")


def _subsets(subset: int | None, test_subset: int | None) -> None:
    """--subset counts training examples (0: all of them); --test-subset test examples (omitted: all)."""
    if subset is not None and subset < 0:
        raise FoolkitError(f"--subset must be >= 0 (0: all), got {subset}")
    if test_subset is not None and test_subset <= 0:
        raise FoolkitError(f"--test-subset must be positive (omit it for the whole test set), got {test_subset}")


def _device(device: str) -> Any:
    from foolkit.utils import resolve_device

    return resolve_device(device)


def _from_run(given: set[str], saved: dict[str, Any], **options: Any) -> list[Any]:
    """Each option's value on resume: as typed when typed (checked against the run later), else the saved run's."""
    return [value if name in given else saved.get(name, value) for name, value in options.items()]


def _interrupted(command: str, out: str | None, results: str, key: str, total: int) -> Any:
    """The error Ctrl-C ends with (exit code 130): what is saved and how to go on."""
    from pathlib import Path

    from foolkit.errors import Interrupted
    from foolkit.runs import read_json

    if out is None:
        return Interrupted("interrupted; nothing was saved (give --out DIR to make a run that --resume can continue)")
    if not (Path(out) / "config.json").is_file():
        return Interrupted(f"interrupted before the first of {total} runs saved an epoch; nothing was kept in {out}")
    path = Path(out) / results
    try:
        done = len(read_json(path)[key]) if path.is_file() else 0
    except (FoolkitError, KeyError, TypeError):
        done = 0
    going = " (and the run in progress from its last epoch)" if any(Path(out).glob("unfinished-*.pt")) else ""
    return Interrupted(f"interrupted; {done} of {total} runs finished and saved in {path if done else out}; "
                       f"continue with `foolkit memorize {command} --out {out} --resume`{going}")


@click.group(invoke_without_command=True)
@click.pass_context
def memorize(ctx: click.Context) -> None:
    """Networks memorise random labels (Zhang et al., 2017): randomisation tests, regularisers, expressivity, min norm."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


_MODELS = "mlp1x512, mlp3x512, small-inception, small-alexnet, lenet"


@memorize.command()
@click.option("--dataset", "-d", default="mnist", show_default=True, help="mnist, fashion-mnist, cifar10, or folder:PATH.")
@click.option("--subset", type=int, default=1000, show_default=True, help="Training examples (class-stratified; 0 = all).")
@click.option("--test-subset", type=int, default=None, help="Test examples (default: all).")
@click.option("--model", "-m", "model", default="mlp1x512", show_default=True, help=f"Architecture: {_MODELS}.")
@click.option("--variants", default="true,random-labels,shuffled-pixels,random-pixels,gaussian", show_default=True,
              help="Comma-separated: true, corrupt:P, random-labels, shuffled-pixels, random-pixels, gaussian.")
@click.option("--corrupt", default=None, metavar="P1,P2,...", help="Also run label corruption at these levels.")
@click.option("--epochs", type=int, default=400, show_default=True, help="Cap; each run stops once the training set is fitted (random labels on 10k Fashion-MNIST: ~270).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the paper's, 0.1 Inception / 0.01 others).")
@click.option("--lr-decay", type=float, default=0.95, show_default=True, help="Multiply the learning rate by this every --decay-steps steps.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--decay-steps", type=int, default=391, show_default=True,
              help="Apply --lr-decay every this many steps (391 = one CIFAR-10 epoch in the paper; 0 = every epoch).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder for results.json, masks and figures.")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its saved settings, skipping finished variants.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@data_dir_option
@seed_option
@device_option
def randomize(dataset: str, subset: int, test_subset: int | None, model: str, variants: str, corrupt: str | None,
              epochs: int, lr: float | None, lr_decay: float, batch_size: int, decay_steps: int, out: str | None, resume: bool,
              as_json: bool, data_dir: str | None, seed: int, device: str) -> None:
    """Randomisation tests: train until the training set is fitted, per data variant."""
    from foolkit.memorize.experiments import (RunSettings, expand_variants, fit_ratio, run_randomization, saved_config,
                                              summarize)

    if resume and out is None:
        raise FoolkitError("--resume needs --out DIR")
    given = typed_options()
    levels = _floats(corrupt, "--corrupt")
    if resume:  # options not given come from the saved run; given ones must match it (checked when it starts)
        saved = saved_config(out, "randomize")
        kept = saved["settings"]
        dataset, subset, test_subset, seed = _from_run(given, saved, dataset=dataset, subset=subset,
                                                       test_subset=test_subset, seed=seed)
        model, epochs, lr, lr_decay, batch_size, decay_steps = _from_run(
            given, kept, model=model, epochs=epochs, lr=lr, lr_decay=lr_decay, batch_size=batch_size,
            decay_steps=decay_steps)
        names = list(saved["variants"])
        if "variants" in given or "corrupt" in given:
            names = expand_variants(_names(variants) if "variants" in given else names, levels)
        settings = RunSettings(**{**kept, "model": model, "epochs": epochs, "lr": lr, "lr_decay": lr_decay,
                                  "batch_size": batch_size, "decay_steps": decay_steps, "seed": seed})
    else:
        names = expand_variants(_names(variants), levels)
        settings = RunSettings(model=model, epochs=epochs, lr=lr, lr_decay=lr_decay, batch_size=batch_size,
                               decay_steps=decay_steps, seed=seed)
    _positive(epochs, "--epochs")
    _positive(batch_size, "--batch-size")
    _subsets(subset, test_subset)
    settings.validate()

    def report(rec: dict[str, Any]) -> None:
        fitted = f"fitted in {rec['epochs_to_fit']} epochs" if rec["epochs_to_fit"] else f"not fitted after {rec['epochs']} epochs"
        info(f"{rec['variant']}: train {rec['train_accuracy']:.4f}, test {rec['test_accuracy']:.4f}, {fitted} "
             f"({rec['seconds']:.1f} s)")

    try:
        runs, figures = run_randomization(dataset=dataset, subset=subset or None, test_subset=test_subset,
                                          variants=names, settings=settings, seed=seed, out=out, resume=resume,
                                          device=_device(device), data_dir=data_dir, progress=not as_json,
                                          on_run=report)
    except KeyboardInterrupt:
        raise _interrupted("randomize", out, "results.json", "runs", len(names)) from None
    ratio = fit_ratio(runs)
    if ratio is not None:
        info(f"random labels took {ratio:.2f}x the epochs of true labels (paper, CIFAR-10: about 3x)")
    for path in figures.values():
        info(f"wrote {path}")
    if as_json:
        emit_json({"runs": summarize(runs), "random_over_true_epochs": ratio, "figures": figures, "out": out})


@memorize.command()
@click.option("--dataset", "-d", default="mnist", show_default=True)
@click.option("--subset", type=int, default=1000, show_default=True, help="Training examples (0 = all).")
@click.option("--test-subset", type=int, default=None)
@click.option("--model", "-m", "model", default="mlp1x512", show_default=True, help=f"Architecture: {_MODELS}.")
@click.option("--regularizers", default="none,dropout,weight-decay,batchnorm,crop,early-stopping,all", show_default=True,
              help="Comma-separated settings, each switched on alone (all: every one together).")
@click.option("--labels", default="true,random-labels", show_default=True, help="Label variants to run each setting on.")
@click.option("--epochs", type=int, default=400, show_default=True)
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder for the table and the figure.")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its saved settings, skipping finished rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the table rows as one JSON object.")
@data_dir_option
@seed_option
@device_option
def regularizers(dataset: str, subset: int, test_subset: int | None, model: str, regularizers: str, labels: str,
                 epochs: int, out: str | None, resume: bool, as_json: bool, data_dir: str | None, seed: int,
                 device: str) -> None:
    """Table 1: train / test accuracy with each regulariser on and off, on true and random labels."""
    from foolkit.memorize.experiments import regularizer_settings, run_regularizers, saved_config

    if resume and out is None:
        raise FoolkitError("--resume needs --out DIR")
    given = typed_options()
    if resume:  # options not given come from the saved run; given ones must match it (checked when it starts)
        saved = saved_config(out, "regularizers")
        dataset, subset, test_subset, model, epochs, seed = _from_run(
            given, saved, dataset=dataset, subset=subset, test_subset=test_subset, model=model, epochs=epochs,
            seed=seed)
        regs = _names(regularizers) if "regularizers" in given else list(saved.get("regularizers", []))
        labs = _names(labels) if "labels" in given else list(saved.get("labels", []))
    else:
        regs, labs = _names(regularizers), _names(labels)
    _positive(epochs, "--epochs")
    _subsets(subset, test_subset)

    def count() -> int:
        from foolkit.memorize.experiments import RunSettings

        try:
            base = RunSettings(model=model, epochs=epochs, seed=seed)
            return len(labs) * sum(regularizer_settings(r, base) is not None for r in regs)
        except FoolkitError:
            return len(labs) * len(regs)

    try:
        res = run_regularizers(dataset=dataset, subset=subset or None, test_subset=test_subset, model=model,
                               regularizers=regs, labels=labs, epochs=epochs, seed=seed, out=out,
                               resume=resume, device=_device(device), data_dir=data_dir, progress=not as_json,
                               on_run=lambda r: info(f"{r['variant']} / {r['regularizer']}: train "
                                                     f"{r['train_accuracy']:.4f}, test {r['test_accuracy']:.4f}"))
    except KeyboardInterrupt:
        raise _interrupted("regularizers", out, "regularizers.json", "rows", count()) from None
    if as_json:
        keys = ("regularizer", "variant", "model", "train_accuracy", "test_accuracy", "epochs_to_fit", "epochs",
                "chosen_epoch", "seconds")
        emit_json({"rows": [{k: r.get(k) for k in keys} for r in res["rows"]], "skipped": res["skipped"],
                   "figure": res["figure"], "out": out})
    else:
        click.echo(res["markdown"])


@memorize.command()
@click.option("--n", "n", type=int, default=1000, show_default=True, help="Number of points (training images with --dataset).")
@click.option("--d", "d", type=int, default=784, show_default=True, help="Dimension of random points (not with --dataset).")
@click.option("--targets", type=click.Choice(["random", "gaussian", "labels"]), default="random", show_default=True,
              help="random: uniform with unit variance; gaussian: N(0,1); labels: classes 0..9.")
@click.option("--dataset", "-d", "dataset", default=None, help="Memorise real images of this dataset (random labels).")
@click.option("--true-labels", is_flag=True, help="With --dataset: fit the true labels instead of random ones.")
@click.option("--theta", type=float, default=1e-3, show_default=True, help="Threshold position between sorted projections, in (0, 1).")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@seed_option
def expressivity(n: int, d: int, targets: str, dataset: str | None, true_labels: bool, theta: float, as_json: bool,
                 data_dir: str | None, seed: int) -> None:
    """Theorem 1: a 2-layer ReLU net with 2n+d weights fitting n arbitrary targets (float64)."""
    from foolkit.memorize.expressivity import fit_expressivity, memorize_dataset, random_problem

    _positive(n, "--n")
    _positive(d, "--d")
    if not 0 < theta < 1:
        raise FoolkitError(f"--theta must be in (0, 1), got {theta}")
    if true_labels and dataset is None:
        raise FoolkitError("--true-labels needs --dataset (random points have no true labels; --targets picks theirs)")
    moot = [f"--{k}" for k in ("d", "targets") if k in typed_options()]
    if dataset is not None and moot:
        raise FoolkitError(f"{' and '.join(moot)} describe{'s' if len(moot) == 1 else ''} random points; "
                           "with --dataset the images and their labels are used: drop "
                           f"{'it' if len(moot) == 1 else 'them'}")
    if dataset is not None:
        res = memorize_dataset(dataset, n=n, random_labels=not true_labels, theta=theta, seed=seed, data_dir=data_dir,
                               quiet=as_json)
        if res["n_images"] < n:  # the split is smaller than asked for: say so rather than report n silently changed
            info(f"foolkit: {dataset} has only {res['n_images']:,} training images here; memorised all of them, "
                 f"not --n {n:,}")
    else:
        z, y = random_problem(n, d, targets=targets, seed=seed)
        net, rep = fit_expressivity(z, y, theta=theta, seed=seed)
        res = rep.as_dict()
        res["targets"] = targets
        if targets == "labels":
            res["labels_reproduced"] = float((net(z).round() == y).double().mean())
    if as_json:
        emit_json(res)
    else:
        for key, value in res.items():
            click.echo(f"{key}: {value}")


@memorize.command()
@click.option("--dataset", "-d", default="mnist", show_default=True)
@click.option("--subset", type=int, default=2000, show_default=True)
@click.option("--test-subset", type=int, default=None)
@click.option("--kernel", type=click.Choice(["linear", "polynomial", "gaussian"]), default="polynomial", show_default=True)
@click.option("--degree", type=int, default=4, show_default=True, help="Polynomial kernel degree (on unit-norm inputs).")
@click.option("--sigma", type=float, default=None, help="Gaussian kernel width (default: median pairwise distance).")
@click.option("--sgd-check", "sgd", is_flag=True, help="Also run SGD from zero on a subset and compare with the min-norm solution.")
@click.option("--sgd-subset", type=int, default=200, show_default=True)
@click.option("--sgd-epochs", type=int, default=300, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@seed_option
def minnorm(dataset: str, subset: int, test_subset: int | None, kernel: str, degree: int, sigma: float | None,
            sgd: bool, sgd_subset: int, sgd_epochs: int, as_json: bool, data_dir: str | None, seed: int) -> None:
    """Minimum-norm interpolation by the kernel trick (Kα = y) and SGD-from-zero's convergence to it."""
    from foolkit.memorize.minnorm import run_minnorm

    _positive(subset, "--subset")
    _positive(test_subset, "--test-subset")
    _positive(sgd_subset, "--sgd-subset")
    _positive(sgd_epochs, "--sgd-epochs")
    if sigma is not None and not 0 < sigma < float("inf"):
        raise FoolkitError(f"--sigma must be a positive, finite number, got {sigma}")
    typed = typed_options()
    for option, key, kernel_of in (("--degree", "degree", "polynomial"), ("--sigma", "sigma", "gaussian")):
        if key in typed and kernel != kernel_of:
            raise FoolkitError(f"{option} is the {kernel_of} kernel's; --kernel {kernel} has none: drop it")
    moot = [f"--{k.replace('_', '-')}" for k in ("sgd_subset", "sgd_epochs") if k in typed]
    if moot and not sgd:
        raise FoolkitError(f"{' and '.join(moot)} set{'s' if len(moot) == 1 else ''} the SGD check: add --sgd-check")
    res = run_minnorm(dataset=dataset, subset=subset, test_subset=test_subset, kernel=kernel, degree=degree, sigma=sigma,
                      seed=seed, sgd=sgd, sgd_subset=sgd_subset, sgd_epochs=sgd_epochs, data_dir=data_dir,
                      quiet=as_json)
    if sgd and "sgd_subset" in typed and sgd_subset > res["n"]:
        info(f"foolkit: --sgd-subset {sgd_subset:,} is more than the {res['n']:,} training images: SGD ran on all of them")
    if not res["interpolates"]:
        info(f"foolkit: the {kernel} kernel matrix of these {res['n']:,} images has rank {res.get('rank', '< n')}: "
             f"no interpolant exists, so this is the least-squares fit (train error {100 * res['train_error']:.1f}%)")
    if as_json:
        emit_json(res)
    else:
        for key, value in res.items():
            click.echo(f"{key}: {value}")
