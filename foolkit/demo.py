"""`foolkit demo`: the whole story in one offline command and one page.

Four stages against the bundled ``lenet-mnist`` and real MNIST digits, each writing its
pictures into a sub-folder of ``out`` and a few key figures into ``summary.json``:

1. **attack** — real digits turned into confident mistakes by minimal noise (Szegedy et al.);
2. **evolve** — unrecognisable images the network labels ≥ 99.99% (Nguyen et al. 2015);
3. **retrain** — add those images as a class ``fooling``, retrain, evolve again: fooled again;
4. **memorize** — random labels fitted to 100% while test accuracy sits at chance, and
   Theorem 1's exact fit (Zhang et al. 2017).

``index.html`` is one self-contained page (images embedded as data URIs; the PNG files are
also beside it) with each stage's pictures, key figures and what they show.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from foolkit.errors import FoolkitError, Interrupted, MachineError
from foolkit.runs import atomic_write_json, atomic_write_text
from foolkit.utils import format_confidence, median


@dataclass
class Stage:
    """What one stage shows: a title, a few sentences, figures (path, caption) and key numbers."""

    name: str
    title: str
    text: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class DemoSettings:
    """Sizes of each stage; ``quick()`` fits in well under a minute on 2 CPU cores."""

    digits: int = 10
    attack_steps: int = 100
    population: int = 200
    generations: int = 100
    cppn: bool = True
    retrain_rounds: int = 3
    retrain_generations: int = 300
    retrain_subset: int | None = None
    memorize_subset: int = 1000
    memorize_epochs: int = 400
    memorize_variants: tuple[str, ...] = ("true", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")
    expressivity_n: int = 4000

    @classmethod
    def quick(cls) -> DemoSettings:
        # evolution keeps the full settings: it stops once all ten digits are at 99.99%, about a second
        return cls(digits=3, attack_steps=40, cppn=False, retrain_rounds=1,
                   retrain_generations=15, retrain_subset=600, memorize_subset=150, memorize_epochs=60,
                   memorize_variants=("true", "random-labels"), expressivity_n=500)


#: the attack stage asks for confident mistakes: the wrong digit with at least this probability
CONFIDENCE = 0.9


# -- stages -----------------------------------------------------------------------------

def stage_attack(model: Any, out: Path, s: DemoSettings, seed: int) -> Stage:
    from foolkit.attacks import make_attack
    from foolkit.data import load_dataset
    from foolkit.images import noise_image, panel, save_image

    test = load_dataset("mnist", "test", quiet=True)
    x_all, y_all = test.images(model.device), test.y.to(model.device)
    pred, _ = model.predict(x_all)
    ok = (pred == y_all).nonzero().flatten()
    idx = torch.stack([ok[y_all[ok] == c][0] for c in range(s.digits)])  # one digit per class 0..digits-1
    x, y = x_all[idx], y_all[idx]
    result = make_attack("auto", norm="l2", steps=s.attack_steps, seed=seed)(model, x, y, confidence=CONFIDENCE)
    figures = []
    rows = []
    for i in range(len(y)):
        orig_c = float(result.confidences_before[i])
        adv_c = float(result.confidences_after[i])
        a = int(result.labels_after[i])
        img = panel([x[i], noise_image(result.adv[i] - x[i]), result.adv[i]],
                    [f"original: {int(y[i])} ({format_confidence(orig_c)})", f"noise (L2 {float(result.l2[i]):.2f})",
                     f"adversarial: {a} ({format_confidence(adv_c)})"], tile=160)
        path = save_image(img, out / f"digit{i}.panel.png")
        figures.append((str(path.relative_to(out.parent)), f"digit {int(y[i])} → {a}"))
        rows.append({"label": int(y[i]), "adversarial": a, "confidence": adv_c, "l2": float(result.l2[i]),
                     "linf": float(result.linf[i]), "success": bool(result.success[i])})
    n = {"images": len(y), "confidence_required": CONFIDENCE, "success_rate": result.success_rate, "median_l2": result.median("l2"),
         "median_linf": result.median("linf"), "median_confidence": median(result.confidences_after[result.success])
         if bool(result.success.any()) else None, "digits": rows}
    text = (f"{int(result.success.sum())} of {len(y)} correctly classified test digits are read as another digit with "
            f"at least {CONFIDENCE * 100:.0f}% confidence after adding the smallest noise foolkit finds for that "
            f"(median L2 norm {n['median_l2']:.2f}, median largest pixel change {n['median_linf'] * 255:.0f}/255); "
            f"the mistakes survive saving as 8-bit PNGs. The noise (middle, amplified) is structured, not random, "
            f"and the digits still look the same to a person.")
    return Stage("attack", "1. Minimal noise: real digits, confidently misread", text, figures, n)


def stage_evolve(model: Any, out: Path, s: DemoSettings, seed: int) -> Stage:
    from foolkit.evolve import EvolveConfig, run_evolution

    encodings = ["direct", "cppn"] if s.cppn else ["direct"]
    results = {}
    for enc in encodings:
        cfg = EvolveConfig(encoding=enc, generations=s.generations, population=s.population, seed=seed, until=0.9999)
        results[enc] = run_evolution(model, cfg, out=out / enc, progress=False)
    n: dict[str, Any] = {}
    for enc, res in results.items():
        conf = res.confidences.float()
        n[enc] = {"generations": res.generations_done, "evaluations": res.evaluations, "seconds": res.seconds,
                  "classes_at_99.99": int((conf >= 0.9999).sum()), "classes_at_99": int((conf >= 0.99).sum()),
                  "min_confidence": float(conf.min()), "median_confidence": median(conf)}
    d = n["direct"]
    text = (f"Evolution (MAP-Elites over the 10 digits, population {s.population}, every generation scored in one "
            f"batched forward pass) found, with the direct pixel encoding in {d['generations']} generations "
            f"({d['seconds']:.1f} s of search), images that the network labels as digits with confidence ≥ 99.99% for "
            f"{d['classes_at_99.99']} of 10 classes (lowest {format_confidence(d['min_confidence'])})")
    if "cppn" in n:
        c = n["cppn"]
        text += (f"; with the CPPN encoding (regular, abstract patterns) {c['classes_at_99.99']} of 10 in "
                 f"{c['generations']} generations")
    text += ". To a person they are noise or patterns, not digits."
    figs = [(str((out / enc / "gallery.png").relative_to(out.parent)), f"{enc} encoding: one elite per digit")
            for enc in encodings]
    figs.append((str((out / "direct" / "progress.png").relative_to(out.parent)),
                 "elite confidence over generations (direct encoding)"))
    # the headline figures (direct encoding) at the top level, as before
    return Stage("evolve", "2. Fooling images: noise labelled with 99.99% confidence", text, figs, {**d, **n})


def stage_retrain(out: Path, s: DemoSettings, seed: int, device: str,
                  on_stage: Callable[[str], None] | None = None) -> Stage:
    from foolkit.retrain import RetrainConfig, run_rounds

    cfg = RetrainConfig(model="lenet-mnist", dataset="mnist", rounds=s.retrain_rounds,
                        generations=s.retrain_generations, population=s.population, holdout_runs=1,
                        subset=s.retrain_subset, test_subset=1000, finetune_epochs=2, seed=seed, device=device)
    rounds = run_rounds(cfg, out, progress=False, on_stage=on_stage)  # the demo's bar says which round is running
    last = rounds[-1]
    n = {"rounds": [{k: v for k, v in r.__dict__.items()} for r in rounds]}
    text = (f"The network was retrained with its fooling images as an 11th class, 'fooling', for {s.retrain_rounds} "
            f"round(s). It learns to recognise the old fooling images (recall {(last.fooling_recall or 0) * 100:.0f}% "
            f"on held-out ones) while its test accuracy goes from {rounds[0].clean_accuracy * 100:.1f}% to "
            f"{last.clean_accuracy * 100:.1f}%, but a fresh evolution against the retrained network still fools "
            f"{last.fooled_classes} of 10 digit classes at ≥ 99% (median elite confidence "
            f"{format_confidence(last.median_confidence or 0)}). Classes fooled at ≥ 99% in rounds 0–{last.round}: "
            f"{', '.join(str(r.fooled_classes) for r in rounds)}.")
    figs = [(str((out / "rounds.png").relative_to(out.parent)), "accuracy, fooled classes and recall per round"),
            (str((out / f"round-{last.round}" / "gallery.png").relative_to(out.parent)),
             f"new fooling images against the round-{last.round} network")]
    return Stage("retrain", "3. Retrain on the fooling images — and be fooled again", text, figs, n)


def stage_memorize(out: Path, s: DemoSettings, seed: int, device: str) -> Stage:
    from foolkit.memorize import memorize_dataset, run_randomization

    runs, figures = run_randomization(dataset="mnist", subset=s.memorize_subset, model="mlp1x512",
                                      variants=s.memorize_variants, epochs=s.memorize_epochs, seed=seed,
                                      out=out, device=device)
    by = {r["variant"]: r for r in runs}
    mem = memorize_dataset("mnist", n=s.expressivity_n, random_labels=True, seed=seed)
    n = {"runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
         "expressivity": {k: v for k, v in mem.items() if isinstance(v, (int, float, str, bool)) or v is None}}
    rnd, true = by.get("random-labels", {}), by.get("true", {})
    text = (f"A 1×512 MLP fits {s.memorize_subset} real digits with random labels to "
            f"{rnd.get('train_accuracy', 0) * 100:.0f}% training accuracy while its test accuracy stays at chance "
            f"({rnd.get('test_accuracy', 0) * 100:.0f}%); with true labels it reaches "
            f"{true.get('test_accuracy', 0) * 100:.0f}% test accuracy{_ratio(rnd, true)}. Theorem 1's depth-2 ReLU net with 2n + d weights memorises "
            f"{s.expressivity_n} digits with random labels exactly (max error {mem.get('max_abs_error', float('nan')):.1e}, "
            f"{mem.get('train_accuracy', 0) * 100:.0f}% of labels reproduced) — capacity is no obstacle to fitting noise.")
    figs = [(str(Path(p).resolve().relative_to(out.parent.resolve())), cap) for key, cap in
            (("loss", "training loss per data variant (the paper's figure 1a)"),) if (p := figures.get(key))]
    return Stage("memorize", "4. Memorisation: random labels, fitted perfectly", text, figs, n)


def _ratio(rnd: dict[str, Any], true: dict[str, Any]) -> str:
    a, b = rnd.get("epochs_to_fit"), true.get("epochs_to_fit")
    if a and b:
        return f"; random labels took {a / b:.1f}× the epochs of true labels to fit ({a} vs {b})"
    return ""


# -- the page ---------------------------------------------------------------------------

def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_page(stages: list[Stage], out: Path, seconds: float, quick: bool) -> str:
    """One self-contained HTML page (images embedded)."""
    parts = []
    for st in stages:
        figs = "".join(
            f'<figure><a href="{html.escape(rel)}"><img src="{_data_uri(out / rel)}" alt="{html.escape(cap)}" '
            f'data-file="{html.escape(rel)}"></a><figcaption>{html.escape(cap)}</figcaption></figure>'
            for rel, cap in st.figures if (out / rel).is_file())
        parts.append(f'<section id="{st.name}"><h2>{html.escape(st.title)}</h2><p>{html.escape(st.text)}</p>'
                     f'<div class="figs">{figs}</div><p class="time">{st.seconds:.0f} s</p></section>')
    mode = "quick mode" if quick else "full demo"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>foolkit demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .sub {{ color: #666; margin-top: 0; }}
section {{ border-top: 1px solid #ddd; padding-top: 0.5em; margin-top: 1.5em; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: 0.9em; color: #555; }} .time {{ color: #888; font-size: 0.85em; }}
</style></head><body>
<h1>foolkit demo</h1>
<p class="sub">Deep networks are easily fooled — and why that is no surprise. Bundled LeNet on real MNIST digits,
offline, {mode}, {seconds:.0f} s in all.</p>
{''.join(parts)}
</body></html>
"""


def run_demo(out: str | Path, *, quick: bool = False, seed: int = 0, device: str = "auto", progress: bool = True,
             settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run every stage into ``out``; returns the summary (also written to summary.json)."""
    from foolkit.models import load_model
    from foolkit.utils import resolve_device

    out = Path(out)
    resolve_device(device)  # an unusable --device is refused before the folder is claimed
    _claim(out)
    s = settings or (DemoSettings.quick() if quick else DemoSettings())
    model = load_model("lenet-mnist", device=device)
    dev = str(model.device)
    plan: list[tuple[str, Callable[[], Stage]]] = [
        ("attack", lambda: stage_attack(model, out / "attack", s, seed)),
        ("evolve", lambda: stage_evolve(model, out / "evolve", s, seed)),
        ("retrain", lambda: stage_retrain(out / "retrain", s, seed, dev,
                                          on_stage=lambda what: bar.set_postfix(stage=f"retrain, {what}"))),
        ("memorize", lambda: stage_memorize(out / "memorize", s, seed, dev)),
    ]
    for page in ("index.html", "summary.json"):  # an earlier run's page would describe stages about to be replaced
        (out / page).unlink(missing_ok=True)
    stages: list[Stage] = []
    t_all = time.time()
    bar = tqdm(plan, desc="demo", disable=None if progress else True, dynamic_ncols=True)  # None: no bar off a terminal
    try:
        for name, fn in bar:
            bar.set_postfix(stage=name)
            _clear(out / name)  # a re-run starts each stage afresh, when it gets to it
            (out / name).mkdir(parents=True)
            t0 = time.time()
            st = fn()
            st.seconds = time.time() - t0
            stages.append(st)
    except (KeyboardInterrupt, Interrupted):  # an inner run's own message says "--resume": the demo has none
        for name, _ in plan[len(stages):]:  # the cut stage's part, and an earlier run's later stages (no page now)
            _clear(out / name)
        done = f"{out} holds the finished stage{'s' if len(stages) > 1 else ''} ({', '.join(st.name for st in stages)})" \
            if stages else "no stage had finished"
        raise Interrupted(f"demo interrupted in stage {len(stages) + 1} of {len(plan)}; {done}; "
                          f"run `{again(out, quick=quick, seed=seed, device=device)}` again to start over") from None
    finally:
        bar.close()
    seconds = time.time() - t_all
    summary = {"quick": quick, "seed": seed, "device": dev, "seconds": seconds,
               "stages": {st.name: {"title": st.title, "text": st.text, "seconds": st.seconds,
                                    "figures": [f for f, _ in st.figures], **_finite(st.numbers)} for st in stages}}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "index.html", render_page(stages, out, seconds, quick))
    return summary


def _finite(obj: Any) -> Any:
    """JSON has no NaN: turn non-finite floats into None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


#: marks a folder as a demo's own: a re-run may replace the stage folders in it
def again(out: str | Path, *, quick: bool, seed: int, device: str) -> str:
    """The command line that runs this demo again (its options as given, for the shell)."""
    import shlex

    return shlex.join(["foolkit", "demo", "--out", str(out), *(["--quick"] if quick else []),
                       *(["--seed", str(seed)] if seed else []), *(["--device", device] if device != "auto" else [])])


MARKER = ".foolkit-demo"
#: the folders the demo's stages write
STAGE_NAMES = ("attack", "evolve", "retrain", "memorize")


def _claim(out: Path) -> None:
    """Make ``out`` a demo folder: new, empty, or an earlier demo's (its marker, or the
    summary.json of a demo from before the marker). Anything else is refused: the demo replaces
    its stage folders, and must never delete a user's files."""
    if out.exists() and not out.is_dir():
        raise FoolkitError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not _old_demo(out / "summary.json"):
        raise FoolkitError(f"--out {out} holds files that are not a foolkit demo's; choose a new or empty folder")
    for stage in STAGE_NAMES:
        if (out / stage).exists() and not (out / stage).is_dir():
            raise FoolkitError(f"--out {out} holds a file named {stage}, where the demo writes a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as exc:  # a parent is a file
        raise FoolkitError(f"cannot make --out {out}: {exc.strerror or type(exc).__name__}") from exc
    except OSError as exc:  # no permission, a read-only disk
        raise MachineError(f"cannot make --out {out}: {exc.strerror or type(exc).__name__}") from exc
    (out / MARKER).touch()


def _old_demo(summary: Path) -> bool:
    """Whether ``summary`` is the summary.json of a demo (from before the marker)."""
    import json

    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"quick", "stages", "seconds"} <= data.keys()


def _clear(folder: Path) -> None:
    import shutil

    if folder.is_dir():
        shutil.rmtree(folder)


__all__ = ["DemoSettings", "Stage", "render_page", "run_demo"]
