"""`foolkit evolve`: unrecognisable images the model labels with ≥ 99.99% confidence
(MAP-Elites over the classes with a direct or CPPN encoding, or gradient ascent)."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

import click

from foolkit.commands.common import SEED, device_option, emit_json, info, model_options
from foolkit.errors import FoolkitError

_DURATION = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


#: what --until and --time-limit take to mean "no such limit" (to lift a saved one on --resume)
NO_LIMIT = ("none", "off")


def parse_duration(text: str) -> float | None:
    """``"90"``, ``"90s"``, ``"15m"``, ``"8h"``, ``"1d"`` → seconds; ``"none"`` / ``"off"`` → None."""
    if text.strip().lower() in NO_LIMIT:
        return None
    m = _DURATION.match(text)
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()] if m else 0.0
    if not 0 < seconds < math.inf:
        raise FoolkitError(f"bad --time-limit {text!r}: use a positive number of seconds, e.g. 90s, 15m, 8h, "
                           f"or none")
    return seconds


def parse_confidence(text: str) -> float | None:
    """``"0.9999"`` or ``"99.99%"`` → 0.9999 (not 0.99989999...); ``"none"`` / ``"off"`` → None."""
    t = text.strip()
    if t.lower() in NO_LIMIT:
        return None
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise FoolkitError(f"bad --until {text!r}: use a confidence such as 0.9999 or 99.99%, or none") from None
    if not 0.0 < value <= 1.0:
        raise FoolkitError(f"bad --until {text!r}: a confidence must be in (0, 1] (or (0%, 100%])")
    return float(f"{value:.12g}")  # 12 significant digits: 99.99% is 0.9999, and 1e-30 stays 1e-30


def parse_classes(text: str) -> list[int | str] | None:
    """``"all"`` → None; ``"3,5"`` / ``"cat,dog"`` → the list, resolved against the model later the
    way ``attack --target`` is (:meth:`Classifier.class_index`: a class name first, then an index,
    so ``5`` is the class named "5" where there is one)."""
    if text.strip().lower() == "all":
        return None
    items = [s.strip() for s in text.split(",")]
    if not any(items) or not all(items):
        raise FoolkitError(f"bad --classes {text!r}: use all or a comma-separated list of indices or names, "
                           f"none of them empty")
    twice = sorted({s for s in items if items.count(s) > 1})
    if twice:
        raise FoolkitError(f"bad --classes {text!r}: {', '.join(twice)} given twice")
    return items


#: options that mean nothing to a method (or encoding), by EvolveConfig field
_ONLY_EVOLVE = ("population", "selection", "halve_every", "cppn_hidden", "cppn_activations", "paper")
_ONLY_CPPN = ("cppn_hidden", "cppn_activations")


def _refuse_moot(config: Any, typed: set[str]) -> None:
    """One line for options typed that the run's method or encoding would ignore."""
    if config.method == "gradient":
        moot, why = [k for k in _ONLY_EVOLVE if k in typed], "--method gradient (one image per class, no operators)"
    elif config.encoding == "direct":
        moot, why = [k for k in _ONLY_CPPN if k in typed], "the direct encoding"
    else:
        return
    if moot:
        raise FoolkitError(f"{', '.join('--' + k.replace('_', '-') for k in moot)} mean{'s' if len(moot) == 1 else ''} "
                           f"nothing to {why}: drop {'it' if len(moot) == 1 else 'them'}")


@click.command()
@model_options
@click.option("--encoding", type=click.Choice(["direct", "cppn"]), default=None, help="Genome encoding [default: direct].")
@click.option("--method", type=click.Choice(["evolve", "gradient"]), default=None,
              help="evolve (MAP-Elites) or gradient (ascent from noise) [default: evolve].")
@click.option("--generations", "-g", type=int, default=None, help="Generations (gradient steps) [default: 100].")
@click.option("--population", "-p", type=int, default=None, help="Offspring per generation [default: 200].")
@click.option("--classes", "classes_text", default=None, metavar="all|LIST",
              help="Classes to fool: all, or indices/names like 3,5 [default: all].")
@click.option("--size", type=int, nargs=2, default=None, metavar="H W", help="Image size [default: the model's input].")
@click.option("--gray", is_flag=True, default=None, help="Evolve gray images for a colour model.")
@click.option("--crops", type=click.Choice(["1", "10"]), default=None,
              help="Average the softmax over the paper's 10 crops [default: 1].")
@click.option("--selection", type=click.Choice(["uniform", "lagging"]), default=None,
              help="Parents: uniform over occupied cells (the paper), or 90% drawn by each class's -log confidence "
                   "[default: lagging].")
@click.option("--cppn-activations", "activations_text", default=None, metavar="LIST",
              help="CPPN node activations, from sine,sigmoid,gaussian,linear,cosine,abs "
                   "[default: the paper's sine,sigmoid,gaussian,linear].")
@click.option("--cppn-hidden", type=int, default=None, metavar="N",
              help="Hidden-node capacity of each CPPN; add-node does nothing in a full one (see the log's "
                   "hidden_full) [default: 16].")
@click.option("--halve-every", type=int, default=None, metavar="K",
              help="Halve the per-gene mutation rate every K generations, as in the paper [default: never].")
@click.option("--paper", "paper_ops", is_flag=True,
              help="The paper's operators exactly (uniform parents, uniform-noise start, per-pixel mutation + SBX only).")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass (bounds memory) [default: 256].")
@click.option("--seed", type=SEED, default=None, help="Random seed [default: 0].")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/evolve-<model>-<encoding>, or runs/evolve-<model>-gradient].")
@click.option("--checkpoint-every", type=int, default=None, help="Checkpoint every K generations (with the elites and gallery so far, "
                   "once a minute at most) [default: 10].")
@click.option("--time-limit", default=None, metavar="T",
              help="Stop after T of this invocation (seconds, or 90s, 15m, 8h; a resumed run gets T again; "
                   "none lifts a resumed run's limit).")
@click.option("--until", "until_text", default=None, metavar="CONF",
              help="Stop once every evolved class reaches CONF (0.9999 or 99.99%; none lifts a resumed run's; "
                   "on a GPU it may run one generation more).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out (default: the folder this command would start) from its last checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the archive summary as JSON on stdout.")
@device_option
def evolve(model_name: str, weights: str | None, encoding: str | None, method: str | None, generations: int | None,
           population: int | None, classes_text: str | None, size: tuple[int, int] | None, gray: bool | None,
           crops: str | None, selection: str | None, activations_text: str | None, cppn_hidden: int | None,
           halve_every: int | None,
           paper_ops: bool,
           batch_size: int | None, seed: int | None, out: str | None,
           checkpoint_every: int | None, time_limit: str | None, until_text: str | None, resume: bool,
           as_json: bool, device: str) -> None:
    """Evolve (or optimise) images the model classifies with ≥ 99.99% confidence.

    Writes DIR/archive.json, DIR/elites/<index>_<name>.png, DIR/gallery.png, DIR/progress.png,
    DIR/log.jsonl (one line per generation), DIR/config.json and DIR/checkpoint.pt.
    Ctrl-C saves a checkpoint; --resume continues.
    """
    from foolkit.errors import Interrupted
    from foolkit.evolve import EvolveConfig, run_evolution
    from foolkit.evolve.config import PAPER_OPERATORS
    from foolkit.evolve.report import format_confidence, slug
    from foolkit.images import view_crop
    from foolkit.models import load_model
    from foolkit.runs import read_json
    from foolkit.utils import median as median_of

    given: dict[str, Any] = {
        "encoding": encoding, "method": method, "generations": generations, "population": population,
        "classes": parse_classes(classes_text) if classes_text is not None else None,
        "size": tuple(size) if size else None, "channels": 1 if gray else None,
        "crops": int(crops) if crops is not None else None, "selection": selection, "batch_size": batch_size,
        "halve_every": halve_every, "cppn_hidden": cppn_hidden,
        "cppn_activations": [a.strip() for a in activations_text.split(",")] if activations_text is not None else None,
        "seed": seed, "checkpoint_every": checkpoint_every,
    }
    # settings typed as "all" / "none": None in the config, where given's None means "not typed"
    lifted: dict[str, None] = {"classes": None} if classes_text is not None and given["classes"] is None else {}
    for key, text, parse in (("time_limit", time_limit, parse_duration), ("until", until_text, parse_confidence)):
        if text is not None:
            value = parse(text)
            if value is None:
                lifted[key] = None
            given[key] = value
    typed_here = {k for k, v in given.items() if v is not None} | ({"paper"} if paper_ops else set())  # as typed
    if paper_ops and selection == "lagging":
        raise FoolkitError("--paper draws parents uniformly, as the paper did: drop --selection lagging or --paper")
    if paper_ops:
        given.update(PAPER_OPERATORS)
    if method == "gradient" and encoding == "cppn":
        raise FoolkitError("--encoding cppn is for --method evolve: gradient ascent optimises the pixels themselves")
    typed = {k: v for k, v in given.items() if v is not None}
    model = load_model(model_name, device=device, weights=weights)
    if out is None:  # the folder a fresh run with these options would use, and so the one --resume looks in
        method_or_encoding = "gradient" if method == "gradient" else encoding or "direct"
        out = f"runs/evolve-{slug(model.name)}-{method_or_encoding}"
        before = f"runs/evolve-{Path(model_name).stem}-{method_or_encoding}"  # the default until 2026-11-23
        if resume and not (Path(out) / "config.json").is_file() and (Path(before) / "config.json").is_file():
            out = before
    base = EvolveConfig()
    if resume:
        saved = read_json(Path(out) / "config.json") if (Path(out) / "config.json").is_file() else None
        if saved is None:
            raise FoolkitError(f"nothing to resume in {out}: no config.json (give the run's folder with --out)")
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise FoolkitError(f"{Path(out) / 'config.json'} is not an evolve run's config")
        base = EvolveConfig.from_dict(saved["config"])
    config = EvolveConfig.from_dict({**base.to_dict(), **typed, **lifted})
    config.validate()
    _refuse_moot(config, typed_here)
    if gray and model.input_size[0] == 1:
        raise FoolkitError(f"--gray means nothing to {model.name}: it takes gray images already; drop it")
    h, w = config.image_size(model)
    _, _, rows, cols = view_crop(h, w, model.input_size)
    if config.crops == 10 and (h, w) == tuple(model.input_size[1:]):
        info(f"foolkit: at {model.name}'s own size the ten crops are five copies of the image and five of its "
             "mirror; a larger --size makes them differ")
    if config.crops == 1 and (rows, cols) != (h, w):
        info(f"foolkit: {model.name} sees the centre {rows}x{cols} of these {h}x{w} images (its own aspect "
             "ratio): the rest is evolved unseen")
    try:
        result = run_evolution(model, config, out=out, resume=resume, progress=True)
    except Interrupted as exc:
        again = ["foolkit", "evolve", "--model", model_name, *(["--weights", weights] if weights else []),
                 "--out", str(out), "--resume"]
        raise Interrupted(f"{exc}; continue with `{shlex.join(again)}`") from None
    conf = result.confidences
    goal = config.until if config.until is not None else 0.9999  # what the run was asked for, else the paper's bar
    fooled = int((conf >= goal).sum())
    median = median_of(conf)
    gens = f"{result.generations_done} generation{'' if result.generations_done == 1 else 's'}"
    info(f"{out}: {fooled}/{len(result.classes)} classes at >= {goal * 100:.10g}% after {gens} "
         f"({result.evaluations} evaluation{'' if result.evaluations == 1 else 's'}, {result.seconds:.1f} s, stopped by {result.stopped}); "
         f"median confidence {format_confidence(median)}")
    if as_json:
        emit_json(read_json(Path(out) / "archive.json"))
