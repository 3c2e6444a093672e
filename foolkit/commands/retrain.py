"""`foolkit retrain`: retrain on the fooling (or adversarial) images, attack again, report every round."""

from __future__ import annotations

from pathlib import Path

import click

from foolkit.commands.common import data_dir_option, device_option, info, seed_option, typed_options
from foolkit.errors import FoolkitError


@click.command()
@click.option("--model", "-m", "model_name", default=None, help="Bundled model or a `foolkit train` output (required unless --resume).")
@click.option("--dataset", "-d", default=None, help="Its training data: mnist, fashion-mnist, cifar10 (required unless --resume).")
@click.option("--kind", type=click.Choice(["fooling", "adversarial"]), default="fooling", show_default=True)
@click.option("--rounds", "-r", type=int, default=3, show_default=True, help="Retraining rounds after round 0.")
@click.option("--encoding", type=click.Choice(["direct", "cppn"]), default="direct", show_default=True)
@click.option("--generations", "-g", type=int, default=100, show_default=True, help="Generations per evolution.")
@click.option("--population", "-p", type=int, default=200, show_default=True)
@click.option("--pool-runs", type=int, default=2, show_default=True, help="Extra evolutions per round for the training pool.")
@click.option("--holdout-runs", type=int, default=1, show_default=True, help="Evolutions per round held out for recall.")
@click.option("--method", default="pgd", show_default=True, help="Attack for --kind adversarial.")
@click.option("--eps", type=float, default=0.3, show_default=True, help="Attack budget for --kind adversarial.")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--attack-steps", type=int, default=20, show_default=True)
@click.option("--finetune-epochs", type=int, default=3, show_default=True, help="Epochs of training per round.")
@click.option("--from-scratch", is_flag=True, help="Train each round's model from a fresh initialisation.")
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--subset", type=int, default=None, help="Training images to use (default: all).")
@click.option("--test-subset", type=int, default=1000, show_default=True, help="Test images to measure on.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="foolkit-retrain", show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last finished round, with its saved settings (only --rounds, "
                   "to extend or shorten it, --device and --data-dir may change).")
@data_dir_option
@seed_option
@device_option
def retrain(model_name: str | None, dataset: str | None, kind: str, rounds: int, encoding: str, generations: int,
            population: int, pool_runs: int, holdout_runs: int, method: str, eps: float, norm: str, attack_steps: int,
            finetune_epochs: int, from_scratch: bool, lr: float, subset: int | None, test_subset: int, out: str,
            resume: bool, data_dir: str | None, seed: int, device: str) -> None:
    """Show that a network retrained on its fooling images is fooled again.

    Writes OUT/rounds.json, OUT/rounds.png, OUT/round-R/{model.pt,model.json,gallery.png} and a
    log line per round; a killed or interrupted run continues with --resume (more --rounds extend
    a finished one).
    """
    import dataclasses

    from foolkit.errors import Interrupted
    from foolkit.retrain import RetrainConfig, run_rounds, saved_config

    values = {"model": model_name, "dataset": dataset, "kind": kind, "rounds": rounds, "encoding": encoding,
              "generations": generations, "population": population, "pool_runs": pool_runs,
              "holdout_runs": holdout_runs, "method": method, "eps": eps, "norm": norm, "attack_steps": attack_steps,
              "finetune_epochs": finetune_epochs, "from_scratch": from_scratch, "lr": lr, "subset": subset,
              "test_subset": test_subset, "seed": seed, "device": device, "data_dir": data_dir}
    typed = typed_options()
    only = {"fooling": ("encoding", "generations", "population", "pool_runs", "holdout_runs"),
            "adversarial": ("method", "eps", "norm", "attack_steps")}
    other = "adversarial" if kind == "fooling" else "fooling"
    if "kind" in typed or not resume:  # (a resume's kind comes from the run: run_rounds compares the rest)
        moot = [f"--{k.replace('_', '-')}" for k in only[other] if k in typed]
        if moot:
            raise FoolkitError(f"{', '.join(moot)} {'is' if len(moot) == 1 else 'are'} for --kind {other}, "
                               f"not --kind {kind}")
    if method == "fgsm" and "attack_steps" in typed:
        raise FoolkitError("--method fgsm takes one step; drop --attack-steps (bim and pgd iterate)")
    if resume:
        # the saved config wins; options given on this command line are checked against it by run_rounds
        given = {"model" if name == "model_name" else name for name in typed}
        config = dataclasses.replace(saved_config(out), **{k: v for k, v in values.items() if k in given})
    else:
        if not model_name or not dataset:
            raise FoolkitError("--model and --dataset are required (or --resume with --out DIR)")
        config = RetrainConfig(**values)
        config.validate()
    try:
        results = run_rounds(config, out, resume=resume)
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C in training, or in an evolution (which stops at a generation)
        raise Interrupted(_interrupted(Path(out))) from None
    head = f"{'round':>5} {'clean acc':>9}"
    head += f" {'fooled':>6} {'median conf':>11} {'recall':>7}" if config.kind == "fooling" else f" {'robust acc':>10} {'median ' + config.norm:>11}"
    click.echo(head)
    for r in results:
        row = f"{r.round:>5} {r.clean_accuracy:>9.4f}"
        if config.kind == "fooling":
            recall = "-" if r.fooling_recall is None else f"{r.fooling_recall:.3f}"
            row += f" {r.fooled_classes:>6} {r.median_confidence:>11.5f} {recall:>7}"
        else:
            row += f" {r.robust_accuracy:>10.4f} {r.median_norm:>11.4f}"
        click.echo(row)
    info(f"wrote {Path(out) / 'rounds.json'} and {Path(out) / 'rounds.png'}")


def _interrupted(out: Path) -> str:
    """The one line Ctrl-C ends with: what is saved in ``out`` and how to go on."""
    from foolkit.runs import load_checkpoint, read_json

    resume = f"continue with `foolkit retrain --out {out} --resume`"
    if not (out / "config.json").is_file():
        return f"interrupted before the run started; nothing was written to {out}"
    try:
        done = len(load_checkpoint(out / "checkpoint.pt")[0]["rounds"]) if (out / "checkpoint.pt").is_file() else 0
    except FoolkitError:
        done = 0
    if done == 0:
        return f"interrupted in round 0, before any round finished; {resume} (it starts round 0 again)"
    finished = "round 0" if done == 1 else f"rounds 0-{done - 1}"
    try:
        last = int(read_json(out / "config.json")["rounds"])
    except (FoolkitError, KeyError, TypeError, ValueError):
        last = None
    if last is not None and done > last:  # every round done: it was writing the report
        return f"interrupted while writing the report; {finished} saved in {out / 'checkpoint.pt'}; {resume} (it writes the report)"
    return f"interrupted in round {done}; {finished} saved in {out / 'checkpoint.pt'}; {resume}"
