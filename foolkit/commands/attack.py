"""`foolkit attack`: adversarial examples for image files, or an attack evaluated on a dataset.

Image mode writes, per input, ``STEM.adv.png`` (lossless, at the input's own resolution: the
attack runs on the full-size pixels through the model's resize, so the saved file itself fools
the model), ``STEM.noise.png``, ``STEM.panel.png`` and ``STEM.json``, and prints a table.
Evaluation mode (``--dataset``) reports success rate, robust accuracy, median norms and time.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from foolkit.attacks import ATTACKS, make_attack
from foolkit.commands.common import (cell, check_writable_folder, data_dir_option, device_option, emit_json, info,
                                     model_options, seed_option, typed_options)
from foolkit.errors import FoolkitError
from foolkit.utils import format_confidence, median  # rounded down: never a 100.0% that was not

BUDGET_METHODS = tuple(k for k, v in ATTACKS.items() if v.budget)


class _FullResolution(nn.Module):
    """Full-resolution images → the model's logits, through the differentiable ``model_view``."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int]):
        super().__init__()
        self.model = model
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from foolkit.images import model_view

        return self.model(model_view(x, self.input_size))


def full_resolution_classifier(model: Any, channels: int, height: int, width: int) -> Any:
    """A :class:`Classifier` that takes ``(B, channels, height, width)`` images and classifies them
    the way ``foolkit classify`` does (channel conversion, centre crop, resize)."""
    from foolkit.images import view_scale
    from foolkit.models import Classifier

    clf = Classifier(_FullResolution(model, model.input_size), mean=[0.0], std=[1.0], classes=model.classes,
                     input_size=(channels, height, width), bounds=model.bounds, name=model.name).to(model.device)
    clf.view_scale = view_scale(height, width, model.input_size) * model.view_scale
    return clf


def _build(method: str, norm: str | None, eps: float | None, steps: int | None, seed: int) -> Any:
    cls = ATTACKS[method]
    kwargs: dict[str, Any] = {"seed": seed, "steps": steps, "norm": norm}
    if cls.budget or (method == "auto" and eps is not None):  # auto: PGD at ε where the min-norm search stalls above it
        kwargs["eps"] = eps
    if method in ("ddn", "cw", "lbfgs") and norm not in (None, "l2"):
        raise FoolkitError(f"--method {method} minimises the L2 norm; drop --norm or use --norm l2")
    if method in ("ddn", "cw", "lbfgs"):
        kwargs.pop("norm")
    return make_attack(method, **kwargs)


@click.command()
@click.argument("images", nargs=-1, type=click.Path())
@model_options
@click.option("--method", type=click.Choice(list(ATTACKS)), default="auto", show_default=True,
              help="Attack; 'auto' is foolkit's strongest minimum-norm attack for --norm.")
@click.option("--norm", type=click.Choice(["l1", "l2", "linf"]), default=None,
              help="Norm of the perturbation (default: l2 for minimum-norm attacks, linf for budget attacks).")
@click.option("--eps", type=float, default=None,
              help="Budget of fgsm/bim/pgd; for minimum-norm attacks the ε at which --dataset reports robust accuracy "
                   "(auto with l2 or linf then also runs PGD at ε on the images it has not fooled within it).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Iterations (default: the attack's own).")
@click.option("--target", default=None, help="Class index or name to reach (targeted attack); default untargeted.")
@click.option("--confidence", type=float, default=None,
              help="Required confidence of the wrong class, in [0, 1): minimum-norm attacks find the smallest "
                   "noise reaching it. Default 0.9 for IMAGES (a confident mistake), 0 with --dataset "
                   "(the decision boundary, as peers report).")
@click.option("--out", "-o", "out_dir", type=click.Path(), default="foolkit-out", show_default=True,
              help="Folder for the output files.")
@click.option("--dataset", "-d", default=None, help="Evaluation mode: attack a dataset's test split instead of IMAGES.")
@click.option("--subset", type=click.IntRange(min=1), default=None, help="Evaluation mode: attack N test images (stratified).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Evaluation mode batch size.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout (one object per image, or the evaluation summary).")
@data_dir_option
@seed_option
@device_option
def attack(images: tuple[str, ...], model_name: str, weights: str | None, method: str, norm: str | None,
           eps: float | None, steps: int | None, target: str | None, confidence: float | None, out_dir: str,
           dataset: str | None, subset: int | None, batch_size: int, as_json: bool, data_dir: str | None, seed: int,
           device: str) -> None:
    """Fool a classifier: adversarial versions of IMAGES (or a --dataset evaluation).

    For every image, OUT/STEM.adv.png (same size as the input), STEM.noise.png, STEM.panel.png
    and STEM.json are written and a table is printed. A failed attack is reported, not an error.
    """
    from foolkit.models import load_model
    from foolkit.utils import resolve_device

    if bool(images) == bool(dataset):
        raise FoolkitError("give IMAGE files or --dataset D (one of the two)")
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise FoolkitError(f"--eps must be a positive number, got {eps}")
    if ATTACKS[method].budget and eps is None:
        raise FoolkitError(f"--method {method} needs a budget: pass --eps (e.g. 0.1 for linf, 2 for l2)")
    if norm is None:
        norm = "linf" if ATTACKS[method].budget else "l2"
    if eps is not None and eps > 1 and norm == "linf":  # pixels are in [0, 1]: any larger ball is the whole box
        raise FoolkitError(f"--eps {eps:g} with --norm linf allows any image (pixels lie in [0, 1]): use at most 1")
    if eps is not None and not dataset and not ATTACKS[method].budget and not (method == "auto" and norm != "l1"):
        raise FoolkitError(f"--eps with --method {method}{' --norm l1' if method == 'auto' else ''} is the radius "
                           "--dataset reports robust accuracy at; on IMAGES it changes nothing: drop it")
    typed = typed_options()
    if not dataset:
        moot = [f"--{k.replace('_', '-')}" for k in ("subset", "batch_size", "data_dir") if k in typed]
        if moot:
            raise FoolkitError(f"{', '.join(moot)} only appl{'ies' if len(moot) == 1 else 'y'} with --dataset")
    if dataset and eps is not None and not ATTACKS[method].budget and (target is not None or confidence):
        raise FoolkitError(f"--eps with --method {method} is the radius of robust accuracy, the smallest untargeted "
                           "mistake; a --target or --confidence search finds larger ones: drop one of them, or use "
                           "--method pgd")
    if method == "fgsm" and "steps" in typed:
        raise FoolkitError("--method fgsm takes one step; drop --steps (bim and pgd iterate)")
    if confidence is None:
        confidence = 0.0 if dataset else 0.9
    if not (math.isfinite(confidence) and 0 <= confidence < 1):
        raise FoolkitError(f"--confidence must be in [0, 1), got {confidence}")
    out = Path(out_dir)
    check_writable_folder(out)  # before the work, not after it
    dev = resolve_device(device)
    atk = _build(method, norm, eps, steps, seed)
    model = load_model(model_name, device=dev, weights=weights)
    tgt = model.class_index(target) if target is not None else None
    if dataset:
        _evaluate(model, model_name, atk, method, norm, eps, tgt, confidence, dataset, subset, batch_size, out,
                  as_json, data_dir, seed, steps)
    else:
        _attack_images(model, model_name, atk, method, norm, tgt, confidence, images, out, as_json)


def _attack_images(model: Any, model_name: str, atk: Any, method: str, norm: str, tgt: int | None,
                   confidence: float, images: tuple[str, ...], out: Path, as_json: bool) -> None:
    from tqdm import tqdm

    from foolkit.errors import Interrupted

    for p in images:  # read every image once first: a broken one fails the command before anything is written
        _check_readable(p)
    stems = _unique_stems(images)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(images), desc=f"attack {method}", unit="img", disable=None, leave=False)  # on a terminal
    try:
        for path, stem in zip(images, stems):
            bar.set_postfix_str(Path(path).name[:30])
            record = _attack_one(model, model_name, atk, method, norm, tgt, confidence, path, stem, out)
            rows.append(record)
            bar.update(1)
            if as_json:
                emit_json(record)
    except KeyboardInterrupt:
        bar.close()
        if rows and not as_json:
            _print_table(rows)
        raise Interrupted(f"interrupted after {len(rows)} of {len(images)} images; "
                          f"their results are in {out}/" if rows else "interrupted before any image was done") from None
    bar.close()
    if not as_json:
        _print_table(rows)
    info(f"wrote {len(rows)} result(s) to {out}/")


def _check_readable(path: str) -> None:
    from foolkit.images import load_image

    load_image(path)  # decoded and dropped: only one image at a time is held in memory


def _attack_one(model: Any, model_name: str, atk: Any, method: str, norm: str, tgt: int | None, confidence: float,
                path: str, stem: str, out: Path) -> dict[str, Any]:
    """Attack one image file and write its four outputs; returns its record. The figures are
    those of the PNG written: for an input off the 8-bit grid (16-bit) that can differ from the
    attack's own result, and the record says so."""
    from foolkit.attacks import norm_of
    from foolkit.images import load_image, noise_image, panel, png_bytes, quantize
    from foolkit.runs import atomic_write_all, json_bytes

    notes: list[str] = []
    x = load_image(path, notes=notes)
    c, h, w = x.shape
    clf = full_resolution_classifier(model, c, h, w)
    t0 = time.perf_counter()
    res = atk(clf, x.unsqueeze(0).to(model.device), target=tgt, confidence=confidence)
    seconds = time.perf_counter() - t0
    adv = res.adv[0].detach().cpu()
    lab0, conf0 = int(res.labels_before[0]), float(res.confidences_before[0])
    lab1, conf1, success = int(res.labels_after[0]), float(res.confidences_after[0]), bool(res.success[0])
    if tgt is not None and lab0 == tgt and conf0 >= confidence:
        notes.append(f"already classified as the target {model.classes[tgt]}: nothing to do")
    saved = quantize(adv.clone())  # what the PNG keeps
    if not torch.equal(saved, adv):  # off the 8-bit grid: a 16-bit input whose ε-ball holds no grid point
        with torch.no_grad():
            conf, label = clf.probabilities(saved.unsqueeze(0).to(model.device))[0].max(0)
        lab1, conf1 = int(label), float(conf)
        success = (lab1 == tgt if tgt is not None else lab1 != lab0) and conf1 >= confidence
        notes.append("the input is off the 8-bit grid (16-bit?): these figures are for the 8-bit PNG written")
    adv = saved
    delta = adv - x
    size = {k: float(norm_of(delta.unsqueeze(0), k)[0]) for k in ("l2", "linf", "l1")}
    eps = getattr(atk, "eps", None)
    if ATTACKS[method].budget and eps is not None and size[norm] > eps * (1 + 1e-5) + 1e-6:
        notes.append(f"its {norm} distance {size[norm]:.4g} exceeds --eps {eps:g}")
    record = {
        "image": str(path), "model": model_name, "method": method, "norm": norm,
        "original": {"label": lab0, "name": model.classes[lab0], "confidence": conf0},
        "adversarial": {"label": lab1, "name": model.classes[lab1], "confidence": conf1},
        "target": None if tgt is None else {"label": tgt, "name": model.classes[tgt]},
        "confidence_required": confidence,
        "success": success, **size, "steps": getattr(atk, "steps", 1), "seconds": round(seconds, 3),
        "size": [w, h], "forwards": res.forwards, "backwards": res.backwards, "params": res.params,
        "files": {k: str(out / f"{stem}.{k}.png") for k in ("adv", "noise", "panel")},
        **({"notes": notes} if notes else {}),
    }
    for note in notes:
        info(f"foolkit: {path}: {note}")
    peak = float(delta.abs().max())
    # the confidence on the first line: a long class name is cut on its own line, never the figure
    captions = [f"original ({format_confidence(conf0)})\n{model.classes[lab0]}",
                f"noise (x{_amplification(peak)})" if peak > 0 else "noise (none)",
                f"adversarial ({format_confidence(conf1)})\n{model.classes[lab1]}"]
    title = (f"{model_name} · {method} ({norm})" + (f" · target {model.classes[tgt]}" if tgt is not None else "")
             + ("" if success else " · FAILED"))
    noise = noise_image(delta)
    atomic_write_all({out / f"{stem}.adv.png": png_bytes(adv), out / f"{stem}.noise.png": png_bytes(noise),
                      out / f"{stem}.panel.png": png_bytes(panel([x, noise, adv], captions, title=title)),
                      out / f"{stem}.json": json_bytes(record)})  # all four or none: they describe each other
    return record


def _amplification(peak: float) -> str:
    """How much the noise image magnifies the noise (its largest |δ| maps to 0.5 around grey)."""
    scale = 0.5 / peak
    return f"{scale:.0f}" if scale >= 9.5 else f"{scale:.2g}"


def _unique_stems(paths: tuple[str, ...]) -> list[str]:
    """One output name per input: its stem, with -1, -2, ... where that name is taken (by an
    earlier input's stem or by a suffixed name: a/x.png, b/x.png and x-1.png give x, x-1, x-1-1)."""
    used: set[str] = set()
    out = []
    for p in paths:
        base = Path(p).stem or "image"
        stem, k = base, 0
        while stem in used:
            k += 1
            stem = f"{base}-{k}"
        used.add(stem)
        out.append(stem)
    return out


def _print_table(rows: list[dict[str, Any]]) -> None:
    norms = (["l1"] if any(r["norm"] == "l1" for r in rows) else []) + ["l2", "linf"]
    head = (f"{'image':<28} {'original':<22} {'adversarial':<22} {'ok':<3} "
            + "".join(f"{k.capitalize():>9}" for k in norms) + f" {'sec':>6}")
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        o, a = r["original"], r["adversarial"]
        stem = Path(r["files"]["adv"]).name.removesuffix(".adv.png")
        name = Path(r["image"]).name + ("" if stem == Path(r["image"]).stem else f" -> {stem}")  # two x.png: x, x-1
        click.echo(f"{cell(name, 28)} {cell(o['name'][:14] + ' ' + format_confidence(o['confidence']), 22)} "
                   f"{cell(a['name'][:14] + ' ' + format_confidence(a['confidence']), 22)} {'yes' if r['success'] else 'NO':<3} "
                   + "".join(f" {r[k]:8.4f}" for k in norms) + f" {r['seconds']:6.2f}")


def _evaluate(model: Any, model_name: str, atk: Any, method: str, norm: str, eps: float | None, tgt: int | None,
              confidence: float, dataset: str, subset: int | None, batch_size: int, out: Path, as_json: bool, data_dir: str | None,
              seed: int, steps: int | None = None) -> None:
    from tqdm import tqdm

    from foolkit.data import check_classes, load_dataset, say_capped
    from foolkit.errors import Interrupted
    from foolkit.images import exact_div
    from foolkit.runs import atomic_write_json

    ds = load_dataset(dataset, "test", data_dir=data_dir, subset=subset, seed=seed, quiet=as_json)
    if tuple(ds.input_size) != tuple(model.input_size):
        raise FoolkitError(f"dataset {dataset} has {tuple(ds.input_size)} images but model {model_name} takes "
                           f"{tuple(model.input_size)}")
    check_classes(ds.classes, model.classes, dataset, model_name)
    if not as_json:
        say_capped(dataset, {"test": ds.provenance()})
    n = len(ds)
    # in a seeded random order, not the dataset's (sorted by class): a Ctrl-C's summary of the images
    # done is then a fair sample of all of them, not of the first classes
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    labels = ds.y[order]
    correct = torch.zeros(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    kept = torch.zeros(n, dtype=torch.bool)  # the adversarial image is still classified as its true label
    norms = {k: torch.zeros(n) for k in ("l1", "l2", "linf")}
    fwd = bwd = 0
    done = 0  # images attacked so far: a Ctrl-C keeps the summary of these
    t0 = time.perf_counter()
    try:
        with tqdm(total=n, desc=f"attack {method}", unit="img", disable=None, leave=False) as bar:
            for i in range(0, n, batch_size):
                xb = exact_div(ds.x[order[i:i + batch_size]].to(model.device).float(), 255.0)
                yb = labels[i:i + batch_size].to(model.device)
                res = atk(model, xb, yb, target=tgt, confidence=confidence)
                sl = slice(i, i + len(xb))
                correct[sl] = (res.labels_before == yb).cpu()
                success[sl] = res.success.cpu()
                kept[sl] = (res.labels_after == yb).cpu()
                for k in norms:
                    norms[k][sl] = getattr(res, k).float().cpu()
                fwd, bwd = fwd + res.forwards, bwd + res.backwards
                done = i + len(xb)
                bar.update(len(xb))
    except KeyboardInterrupt:
        if not done:
            raise Interrupted("interrupted before the first batch was done; nothing was written") from None
    seconds = time.perf_counter() - t0
    if done < n:  # interrupted: the summary of the images done, under a name of its own
        correct, success, kept = correct[:done], success[:done], kept[:done]
        norms = {k: v[:done] for k, v in norms.items()}
    attacked = correct if tgt is None else correct & (labels[:done] != tgt)
    won = success & attacked
    # robust: classified correctly, and so is the adversarial image (within ε, for a minimum-norm attack):
    # misclassified counts, whatever --target or --confidence asked (a wrong class other than the
    # target, or a mistake below the confidence, is not a success but still not robust)
    if ATTACKS[method].budget:
        robust = correct & kept
    elif eps is not None:
        robust = correct & (kept | (norms[norm] > eps * (1 + 1e-5) + 1e-6))
    else:
        robust = None

    def med(k: str) -> float | None:
        v = norms[k][won]
        return median(v) if len(v) else None

    summary = {
        "model": model_name, "dataset": dataset, "dataset_source": ds.source, "n": done, "method": method, "norm": norm,
        "eps": eps, "target": tgt, "confidence_required": confidence, "steps": getattr(atk, "steps", 1),
        "params": atk.params(),
        "clean_accuracy": int(correct.sum()) / max(1, done), "attacked": int(attacked.sum()),
        "success_rate": int(won.sum()) / max(1, int(attacked.sum())),
        "robust_accuracy": None if robust is None else int(robust.sum()) / max(1, done),
        "median_l2": med("l2"), "median_linf": med("linf"), "median_l1": med("l1"), "medians_of": "images fooled",
        "seconds": round(seconds, 2), "images_per_second": round(done / max(seconds, 1e-9), 2),
        "forwards": fwd, "backwards": bwd, "device": str(model.device),
        # the data may be in class order: say which classes the images done cover
        **({"interrupted": True, "of": n, "labels_covered": sorted(set(labels[:done].tolist()))} if done < n else {}),
    }
    name = _eval_name(dataset, method, norm, eps, tgt, confidence, None if subset is None else n, steps, seed)
    path = out / (name if done == n else name.replace(".json", ".partial.json"))  # never in place of a whole one
    if as_json:
        emit_json(summary)
    else:
        def fmt(v: float | None, pct: bool = False) -> str:
            return "n/a" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.4f}")

        click.echo(f"{model_name} on {dataset} ({done} test images{f' of {n}: interrupted' if done < n else ''}) "
                   f"· {method} ({norm})"
                   + (f" · eps {eps:g}" if eps is not None else "") + (f" · target {model.classes[tgt]}" if tgt is not None else ""))
        for label, v in (("clean accuracy", fmt(summary["clean_accuracy"], True)),
                         ("attack success", fmt(summary["success_rate"], True) + f" of {summary['attacked']}"),
                         ("robust accuracy", fmt(summary["robust_accuracy"], True)),
                         *((("median L1", fmt(summary["median_l1"])),) if norm == "l1" else ()),
                         ("median L2", fmt(summary["median_l2"])), ("median Linf", fmt(summary["median_linf"])),
                         ("", "(medians of the images fooled)"),
                         ("time", f"{seconds:.1f} s ({summary['images_per_second']:.1f} img/s)")):
            click.echo(f"  {label:<16} {v}")
    out.mkdir(parents=True, exist_ok=True)  # after the table: a failed write loses no figures
    atomic_write_json(path, summary)
    if done == n:  # an interrupted run's partial summary is superseded
        (out / name.replace(".json", ".partial.json")).unlink(missing_ok=True)
    if done < n:
        covered = summary["labels_covered"]
        some = f" (classes {', '.join(model.classes[k] for k in covered[:5])}{', ...' if len(covered) > 5 else ''} " \
               "only)" if len(covered) < len(ds.classes) else ""
        raise Interrupted(f"interrupted after {done} of {n} images{some}; their summary is in {path}")
    info(f"wrote {path}")


def _eval_name(dataset: str, method: str, norm: str, eps: float | None, tgt: int | None, confidence: float,
               subset: int | None, steps: int | None = None, seed: int = 0) -> str:
    """The summary's file name: every setting that changes the figures is in it (``steps`` when
    given, ``seed`` when not 0), so runs that differ do not overwrite each other. An image folder
    is named by its last part and a hash of its whole path: two folders of one name stay apart."""
    name = dataset
    if dataset.startswith("folder:") or Path(dataset).is_dir():
        folder = Path(dataset.removeprefix("folder:")).resolve()
        name = f"{folder.name}-{hashlib.sha1(str(folder).encode()).hexdigest()[:6]}"
    parts = [f"eval-{name}-{method}-{norm}"]
    if eps is not None:
        parts.append(f"eps{eps:.12g}")  # (not :g's 6 digits: 8/255 = 0.0313725... and 0.0313725 stay apart)
    if steps is not None:
        parts.append(f"steps{steps}")
    if tgt is not None:
        parts.append(f"target{tgt}")
    if confidence:
        parts.append(f"conf{confidence:.12g}")
    if subset is not None:
        parts.append(f"n{subset}")
    if seed:
        parts.append(f"seed{seed}")
    return "-".join(parts) + ".json"
