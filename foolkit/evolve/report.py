"""What a finished (or stopped) run leaves in its folder: elites as PNGs, archive.json, the
gallery (the paper's figure 1) and the progress plot."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from foolkit.images import grid, load_image, save_image
from foolkit.runs import atomic_path, atomic_write_json
from foolkit.utils import format_confidence

GALLERY_MAX = 100


def slug(name: str) -> str:
    """A file-name-safe version of a class name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "class"


def elite_path(out: Path, index: int, name: str) -> Path:
    return out / "elites" / f"{index}_{slug(name)}.png"


def _threads(n: int) -> int:
    """Workers for PNG encoding / decoding (zlib lets go of the GIL): 1000 ImageNet elites took
    about 25 s to write one at a time."""
    return max(1, min(8, os.cpu_count() or 1, n))


def save_elites(out: Path, images: torch.Tensor, classes: Sequence[int], names: Sequence[str], *,
                on_saved: Callable[[], None] | None = None) -> list[Path]:
    """Write ``DIR/elites/<index>_<name>.png`` (lossless, atomic) for each image ``(K, C, H, W)``,
    several at a time; ``on_saved`` is called after each (a progress bar)."""
    def save(job: tuple[torch.Tensor, int, str]) -> Path:
        path = save_image(job[0], elite_path(out, job[1], job[2]))
        if on_saved is not None:
            on_saved()
        return path

    jobs = list(zip(images, classes, names))
    with ThreadPoolExecutor(_threads(len(jobs))) as pool:
        return list(pool.map(save, jobs))


def read_elites(paths: Sequence[Path], channels: int) -> torch.Tensor:
    """Read saved elites back: ``(K, C, H, W)`` in [0, 1]."""
    with ThreadPoolExecutor(_threads(len(paths))) as pool:
        return torch.stack(list(pool.map(lambda p: load_image(p, channels), paths)))


def caption_name(name: str, width: int = 18) -> str:
    """A class name on at most two lines of ``width`` characters (an ImageNet name such as "great
    white shark, white shark" keeps its first words, not 18 characters of them)."""
    lines = textwrap.wrap(name, width=width, max_lines=2, placeholder="…", break_long_words=True)
    return "\n".join(lines) or "?"


def save_gallery(path: Path, images: torch.Tensor, names: Sequence[str], confidences: Sequence[float], *,
                 title: str) -> None:
    """A captioned grid of the elites (at most :data:`GALLERY_MAX`, the most confident first when
    there are more)."""
    order = list(range(len(names)))
    if len(order) > GALLERY_MAX:
        order = sorted(order, key=lambda i: -confidences[i])[:GALLERY_MAX]
        title += f" (top {GALLERY_MAX} of {len(names)})"
    columns = 5 if len(order) <= 10 else 10
    tile = 112 if images.shape[-1] <= 64 else 160
    caps = [f"{caption_name(names[i])}\n{format_confidence(confidences[i])}" for i in order]
    img = grid([images[i] for i in order], caps, columns=columns, tile=tile, title=title)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_progress(path: Path, history: Sequence[dict[str, Any]], *, title: str) -> None:
    """Min / median / max elite confidence and classes at ≥ 99% / 99.99% over generations."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullFormatter

    gens = [r["generation"] for r in history]
    marker = "o" if len(gens) <= 30 else None  # a short run's points (one generation: no line at all)
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    # a logit axis: the climb from 99% to 99.99%, the part that matters, is as tall as 50% to 99%
    lo, hi = 1e-4, 1 - 1e-7
    for key in ("max", "median", "min"):
        ax1.plot(gens, [min(max(r[key], lo), hi) for r in history], marker=marker, markersize=3, label=key)
    ax1.axhline(0.9999, color="gray", linestyle="--", linewidth=0.8, label="99.99%")
    ax1.set_yscale("logit")
    ticks = [1e-4, 0.01, 0.5, 0.99, 0.9999, 0.999999]
    ax1.yaxis.set_major_locator(FixedLocator(ticks))
    ax1.yaxis.set_major_formatter(FixedFormatter(["0.01%", "1%", "50%", "99%", "99.99%", "99.9999%"]))
    ax1.yaxis.set_minor_formatter(NullFormatter())
    # headroom above the cap, so a curve at float32's 1.0 (drawn at the cap) is not hidden by the frame
    ax1.set_ylim(min([0.5] + [max(r["min"], lo) for r in history]) * 0.9, 1 - 2e-8)
    ax1.set_xlabel("generation")
    ax1.set_ylabel("elite confidence")
    ax1.legend(loc="lower right")
    ax1.grid(alpha=0.3)
    ax2.plot(gens, [r["at_99"] for r in history], marker=marker, markersize=3, label="≥ 99%")
    ax2.plot(gens, [r["at_9999"] for r in history], marker=marker, markersize=3, label="≥ 99.99%")
    ax2.set_xlabel("generation")
    ax2.set_ylabel("classes")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(gens)) == 1:  # one point: a range around it with whole generations on the axis
            ax.set_xlim(gens[0] - 1, gens[0] + 1)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylim(-0.3, max([1] + [r["at_99"] for r in history]) + 0.3)  # whole classes, even when none
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_archive_json(path: Path, *, model: str, method: str, encoding: str, generations_done: int,
                       evaluations: int, seconds: float, classes: Sequence[int], names: Sequence[str],
                       confidences: Sequence[float], found: Sequence[int], images: Sequence[Path | None],
                       root: Path, crops: int = 1, weights: str | None = None) -> None:
    """``confidence`` is the model's on the PNG read back; with ``crops`` 10, the average over the
    paper's ten crops (what the run maximised), not the single view ``foolkit classify`` takes.
    A class without an elite (no generation has run) has image null and confidence 0."""
    atomic_write_json(path, {
        "model": model, **({"weights": weights} if weights else {}), "method": method, "encoding": encoding,
        "crops": crops, "generations_done": generations_done, "evaluations": evaluations, "seconds": round(seconds, 3),
        "classes": [{"index": k, "name": n, "confidence": c, "generation": g,
                     "image": str(p.relative_to(root)) if p is not None else None}
                    for k, n, c, g, p in zip(classes, names, confidences, found, images)],
    })
