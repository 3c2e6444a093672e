"""``run_evolution``: the whole run — search, run folder, logs, checkpoints, resume, Ctrl-C,
stopping rules and outputs."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from deap import tools
from tqdm import tqdm

from foolkit.errors import FoolkitError, Interrupted
from foolkit.evolve.archive import ArchiveUpdate
from foolkit.evolve.config import PAPER_OPERATORS, EvolveConfig, EvolveResult
from foolkit.evolve.gradient import GradientAscent
from foolkit.evolve.loop import MapElites
from foolkit.evolve.report import (read_elites, save_elites, save_gallery, save_progress,
                                   write_archive_json)
from foolkit.models.classifier import Classifier
from foolkit.runs import RunDir, load_checkpoint, save_checkpoint, undone_unless_saved
from foolkit.utils import rng_state, seed_everything, set_rng_state

#: at a checkpoint the elites, gallery, progress plot and archive.json so far are written too, once
#: OUTPUTS_EVERY_S seconds have passed since they were last written (or the run started) and
#: OUTPUTS_SPACING times what that writing took: a run killed overnight leaves them about as current
#: as its checkpoint, with at most a twentieth of its time spent on them (1000 ImageNet elites take
#: about 25 s to write, ten digits a fraction of a second), and a short run is not slowed down
OUTPUTS_EVERY_S = 60.0
OUTPUTS_SPACING = 20.0

#: what a run writes in its folder (besides config, log and checkpoint): a new run overwrites none of it
OUTPUTS = ("archive.json", "gallery.png", "progress.png", "elites")

#: settings a resumed run may change; everything else must match the saved run. (A new batch_size
#: can change the forward pass's last bits, so such a run may drift from an uninterrupted one.)
RESUMABLE_OVERRIDES = ("generations", "until", "time_limit", "checkpoint_every", "batch_size")


class _StopFlag:
    """Turns the first Ctrl-C (or ``kill``) into a request to stop after the current generation
    (so the checkpoint is consistent); a second one raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}  # kill as Ctrl-C
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def make_search(model: Classifier, config: EvolveConfig, classes: list[int]) -> MapElites | GradientAscent:
    return GradientAscent(model, config, classes) if config.method == "gradient" else MapElites(model, config, classes)


def _reached(search: MapElites | GradientAscent, until: float | None) -> torch.Tensor:
    """``(1,)``: whether every cell is at ``until`` (compared on the tensor, in float32)."""
    conf = search.archive.confidence
    return (conf >= until).all().view(1) if until is not None else torch.zeros(1, dtype=torch.bool, device=conf.device)


def readback_lag(device: torch.device) -> int:
    """How many generations late the loop reads a generation's statistics back on ``device``.

    Reading numbers back waits for the device to finish the queued work. Once a generation on a
    GPU, that leaves it idle while the host writes the log line and then launches the next
    generation's first small kernels (variation, a few microseconds each on the GPU, several on
    the host). Read one generation late, the host does that while the GPU still works on the
    generation after. On the CPU nothing runs ahead: 0."""
    return 1 if device.type == "cuda" else 0


class _Pending:
    """One generation's log statistics on their way back from the device: packed into one tensor
    and copied to the host without waiting (:meth:`read` waits)."""

    def __init__(self, search: MapElites | GradientAscent, update: ArchiveUpdate, until: float | None):
        conf = search.archive.confidence
        # the thresholds compared on the tensor, as --until compares
        counts = [(conf >= t).sum(0, keepdim=True) for t in (0.99, 0.9999)]
        stats = search.describe()
        packed = torch.cat([conf, *counts, update.improved.sum(0, keepdim=True), _reached(search, until)]
                           + [v.to(conf.dtype).view(1) for v in stats.values()])
        self.generation, self.evaluations, self.cells, self.names = (search.generation, search.evaluations,
                                                                     len(conf), list(stats))
        self.event: torch.cuda.Event | None = None
        if packed.device.type == "cuda":  # into pinned memory, in stream order; the event marks it done
            self.values = packed.to("cpu", non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(packed.device))  # the copy's device, not the current one
        else:
            self.values = packed

    def read(self, seconds: float) -> tuple[dict[str, Any], bool]:
        """The generation's log line (stamped ``seconds``), and whether every cell had reached ``until``."""
        if self.event is not None:
            self.event.synchronize()
        read, n = self.values.tolist(), self.cells
        values, (at_99, at_9999, improved, reached), described = read[:n], read[n:n + 4], read[n + 4:]
        srt = sorted(values)
        rec = {"generation": self.generation, "evaluations": self.evaluations, "min": srt[0],
               "median": float(np.median(srt)), "max": srt[-1], "at_99": int(at_99), "at_9999": int(at_9999),
               "improved": int(improved), "seconds": round(seconds, 3), **dict(zip(self.names, described))}
        return rec, bool(reached)


def _save(run: RunDir, search: MapElites | GradientAscent, config: EvolveConfig, model_name: str,
          logbook: tools.Logbook, seconds: float) -> None:
    state = rng_state()
    meta = {"generation": search.generation, "evaluations": search.evaluations, "seconds": seconds,
            "model": model_name, "device": search.gen.device.type, "config": config.to_dict(),
            "logbook": list(logbook),
            "rng": {"python": state["python"], "numpy": state["numpy"]}}
    tensors = {"search": search.state_dict(), "rng_torch": state["torch"]}
    if "cuda" in state:
        tensors["rng_cuda"] = state["cuda"]
    save_checkpoint(run.checkpoint_path, meta=meta, tensors=tensors)


def _resume_config(run: RunDir, config: EvolveConfig, model: Classifier) -> EvolveConfig:
    """The saved run's config with the :data:`RESUMABLE_OVERRIDES` taken from ``config``; any
    other difference is an error (a resumed run must be the run it continues). Settings are
    compared by what they mean for this model: ``classes`` ``5,3`` is ``3,5`` and ``"3"`` (a
    class named 3) may be ``3``; ``channels`` and ``size`` left to the model equal the model's own."""
    saved = run.create({}, resume=True)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise FoolkitError(f"{run.config_path} is not an evolve run's config")
    if saved.get("model") != model.name:
        raise FoolkitError(f"{run.path} was evolved against {saved.get('model')!r}, not {model.name!r}")
    if saved.get("weights") not in (None, model.fingerprint()):  # (runs from before fingerprints have none)
        raise FoolkitError(f"{run.path} was evolved against other weights of {model.name} (fingerprint "
                           f"{saved['weights']}, these are {model.fingerprint()}): pass the --weights it was started with")
    old = EvolveConfig.from_dict(saved["config"])
    old.validate()

    def meaning(c: EvolveConfig) -> dict[str, Any]:
        return {**c.to_dict(), "classes": c.class_indices(model), "channels": c.image_channels(model),
                "size": list(c.image_size(model))}

    new, was = meaning(config), meaning(old)
    changed = [k for k, v in was.items() if k not in RESUMABLE_OVERRIDES and new[k] != v]
    if "crops" in changed and "size" in changed and config.size is None and old.size is None:  # (it follows crops)
        changed.remove("size")
    paper = [k for k in PAPER_OPERATORS if k in changed]
    if len(paper) > 1:  # what --paper sets, named as such
        changed = [k for k in changed if k not in paper] + [f"the paper's operators ({', '.join(paper)})"]
    if changed:
        raise FoolkitError(f"cannot change {', '.join(changed)} when resuming {run.path} "
                           f"(only {', '.join(RESUMABLE_OVERRIDES)} may change)")
    return replace(old, **{k: getattr(config, k) for k in RESUMABLE_OVERRIDES})


def _load(run: RunDir, search: MapElites | GradientAscent) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the checkpoint into ``search`` and the global RNGs; returns ``(meta, tensors)``.

    Loaded onto the CPU: RNG states must be CPU byte tensors whatever the device, and the
    search moves its own tensors to the model's device. A generator's state only fits a
    generator of the same kind, so a run continues on the kind of device it started on."""
    meta, tensors = load_checkpoint(run.checkpoint_path, map_location="cpu")
    here = search.gen.device.type
    saved = meta.get("device")
    if saved is None:  # saved before the device was recorded: tell by the generator's state (CUDA's is 16 bytes)
        state = tensors["search"].get("generator")
        saved = here if state is None else "cuda" if state.numel() == 16 else "cpu"
    if saved != here:
        raise FoolkitError(f"{run.path} was evolved on {saved}; resume it there (--device {saved}), not on {here}")
    search.load_state_dict(tensors["search"])
    set_rng_state({"python": meta["rng"]["python"], "numpy": meta["rng"]["numpy"], "torch": tensors["rng_torch"],
                   **({"cuda": tensors["rng_cuda"]} if "rng_cuda" in tensors else {})})
    return meta, tensors


def run_evolution(model: Classifier, config: EvolveConfig, *, out: str | Path | None = None, resume: bool = False,
                  progress: bool = True,
                  on_generation: Callable[[dict[str, Any]], None] | None = None) -> EvolveResult:
    """Make fooling images for ``model`` as ``config`` says; see :mod:`foolkit.evolve`.

    With ``out``, the run folder gets config.json, log.jsonl (one line per generation),
    checkpoint.pt (every ``checkpoint_every`` generations, at the end and on Ctrl-C),
    archive.json, elites/*.png, gallery.png and progress.png (at the end, on Ctrl-C and with
    checkpoints now and then: :data:`OUTPUTS_EVERY_S`). ``resume=True`` continues the
    run in ``out`` from its checkpoint: ``config`` must be the saved run's, but for
    :data:`RESUMABLE_OVERRIDES` (which it may change; any other difference is an error).
    ``on_generation`` is called with each log record. Ctrl-C (or ``kill``) stops after the
    current generation, writes the checkpoint and the outputs so far, and raises
    :class:`Interrupted`. A new run that fails before its first checkpoint (a bad value found
    late, out of memory) removes what it wrote, so the same ``out`` can be used again.

    The run seeds python's, numpy's and torch's global RNGs (and a resumed run restores them from
    its checkpoint, as they were) for any library code that draws from them; the evolution itself
    draws only from its own generator. The caller's global RNG states are put back afterwards.
    """
    if resume and out is None:
        raise FoolkitError("resuming needs the run folder (--out)")
    caller = rng_state()
    run = RunDir(out) if out is not None else None
    try:
        return _run(model, config, run=run, resume=resume, progress=progress, on_generation=on_generation)
    finally:
        set_rng_state(caller)
        if run is not None:
            run.release()


def _run(model: Classifier, config: EvolveConfig, *, run: RunDir | None, resume: bool, progress: bool,
         on_generation: Callable[[dict[str, Any]], None] | None) -> EvolveResult:
    config.validate()
    if run is not None and resume:
        config = _resume_config(run, config, model)
        config.validate()
        _recover_outputs(run)
        if not run.checkpoint_path.exists():  # killed before its first checkpoint: it starts again, unless
            for name in OUTPUTS:              # it has results, which only a checkpoint can continue
                if run.file(name).exists():
                    raise FoolkitError(f"cannot resume {run.path}: its checkpoint.pt is gone, and starting over "
                                       f"would overwrite its {name}; choose another --out for a new run")
    classes = config.class_indices(model)
    if config.classes is not None:  # saved as indices: a name or a number means one thing from here on
        config = replace(config, classes=classes)
    config.image_size(model)  # validates the size against crops
    names = [model.classes[k] for k in classes]
    model.eval()

    seed_everything(config.seed)  # the global RNGs (DEAP's is python's): seeded here, saved in checkpoints
    search = make_search(model, config, classes)
    logbook = tools.Logbook()
    seconds_before = 0.0
    with undone_unless_saved(run, resume=resume):  # a new run failing before its first checkpoint leaves nothing
        if run is not None:
            if resume and run.checkpoint_path.exists():
                meta, _ = _load(run, search)
                logbook.extend(meta["logbook"])
                seconds_before = float(meta["seconds"])
            if resume:
                run.save_config({"model": model.name, "weights": model.fingerprint(),  # overrides included: the next base
                                 "config": config.to_dict()})
            else:
                run.create({"model": model.name, "weights": model.fingerprint(), "config": config.to_dict()},
                           resume=False, outputs=OUTPUTS)
            if len(logbook):  # the checkpoint's own lines: a log cut short or deleted is whole again
                run.write_log(list(logbook))
            else:
                run.truncate_log("generation", search.generation)
        return _generations(model, config, run, search, logbook, seconds_before, classes, names, on_generation,
                            progress)


def _generations(model: Classifier, config: EvolveConfig, run: RunDir | None, search: MapElites | GradientAscent,
                 logbook: tools.Logbook, seconds_before: float, classes: list[int], names: list[str],
                 on_generation: Callable[[dict[str, Any]], None] | None, progress: bool) -> EvolveResult:
    """The generation loop, then the outputs. A generation's log line is written when its
    statistics are read back, :func:`readback_lag` generations after it ran (all of them before a
    checkpoint and at the end): so on a GPU ``--until`` may stop one generation after the one that
    reached it."""
    t0 = time.perf_counter()
    stopped = "generations"
    reached: bool | None = None  # every cell at --until, as of the last generation read back
    lag = readback_lag(search.gen.device)
    pending: deque[_Pending] = deque()
    last: dict[str, Any] = {}  # the last log line read back
    written, writing = t0, 0.0  # when the outputs were last written at a checkpoint, and how long that took
    bar = tqdm(total=config.generations, initial=min(search.generation, config.generations), unit="gen",
               desc=f"{config.method} {config.encoding if config.method == 'evolve' else ''}".strip(),
               disable=None if progress else True, dynamic_ncols=True)

    def read_back(keep: int) -> None:
        """Log every pending generation but the last ``keep``."""
        nonlocal reached, last
        while len(pending) > keep:
            last, reached = pending.popleft().read(seconds_before + time.perf_counter() - t0)
            logbook.record(**last)
            if run is not None:
                run.log(last)
            bar.set_postfix(best=f"{last['max']:.4f}", median=f"{last['median']:.4f}", refresh=False)
            if on_generation is not None:
                on_generation(last)

    def outputs_so_far(progress: bool) -> None:
        assert run is not None
        _write_outputs(run, model, config, search, search.elite_images().cpu(), classes, names,
                       search.archive.found.tolist(), last["seconds"], logbook, progress)

    stop = _StopFlag()
    try:
        with stop.installed():
            while True:
                elapsed = time.perf_counter() - t0
                if search.generation >= config.generations:
                    stopped = "generations"
                    break
                if reached is None and config.until is not None and search.generation > 0:  # a resumed run
                    reached = bool(_reached(search, config.until))
                if reached:
                    stopped = "until"
                    break
                if config.time_limit is not None and elapsed >= config.time_limit:
                    stopped = "time-limit"
                    break
                pending.append(_Pending(search, search.step(), config.until))
                checkpoint = run is not None and search.generation % config.checkpoint_every == 0
                read_back(0 if checkpoint or stop.requested else lag)
                bar.update(1)
                if checkpoint and run is not None:
                    _save(run, search, config, model.name, logbook, last["seconds"])
                    if (search.generation < config.generations  # (the end writes them anyway)
                            and time.perf_counter() - written >= max(OUTPUTS_EVERY_S, OUTPUTS_SPACING * writing)):
                        w0 = time.perf_counter()
                        outputs_so_far(progress=False)  # (no second bar under the run's)
                        written = time.perf_counter()
                        writing = written - w0
                if stop.requested:
                    read_back(0)  # (asked for while reading back)
                    where = ""
                    if run is not None:
                        _save(run, search, config, model.name, logbook, last["seconds"])
                        outputs_so_far(progress)
                        where = f"; checkpoint and elites so far saved in {run.path}"
                    raise Interrupted(f"interrupted after generation {search.generation}{where}")
            read_back(0)
    finally:
        bar.close()

    seconds = seconds_before + time.perf_counter() - t0
    images = search.elite_images().cpu()
    confidences = search.archive.confidence.cpu()
    found = search.archive.found.tolist()
    if run is not None:
        _save(run, search, config, model.name, logbook, seconds)
        confidences = _write_outputs(run, model, config, search, images, classes, names, found, seconds, logbook,
                                     progress)
    return EvolveResult(images=images, classes=classes, names=names, confidences=confidences, found=found,
                        generations_done=search.generation, evaluations=search.evaluations, seconds=seconds,
                        history=list(logbook), stopped=stopped)


#: the folder inside a run where new elites are written before they replace the old ones
STAGE = ".saving-elites"


def _recover_outputs(run: RunDir) -> None:
    """Undo what a kill while saving the outputs left: new elites never swapped in are dropped;
    old ones swapped out, but with no new ones in their place, go back (archive.json names them)."""
    stage = run.file(STAGE)
    if not stage.is_dir():
        return
    if not run.file("elites").exists() and (stage / "old").is_dir():
        (stage / "old").rename(run.file("elites"))
    shutil.rmtree(stage, ignore_errors=True)


@torch.no_grad()
def _write_outputs(run: RunDir, model: Classifier, config: EvolveConfig, search: MapElites | GradientAscent,
                   images: torch.Tensor, classes: list[int], names: list[str], found: list[int], seconds: float,
                   logbook: tools.Logbook, progress: bool = False) -> torch.Tensor:
    """Write elites, archive.json, gallery and progress plot; the confidences in archive.json
    are re-measured on the PNGs read back from disk. Returns them ``(K,)``."""
    occupied = search.archive.occupied.cpu()
    held = [i for i, o in enumerate(occupied.tolist()) if o]  # every cell after a generation; none before one
    bs = config.genomes_per_forward
    stage = run.file(STAGE)  # the new elites go here first: the old ones and archive.json agree until the swap
    shutil.rmtree(stage, ignore_errors=True)
    # 1000 ImageNet elites take a while to encode and (on a CPU) to re-score: a bar of its own
    with tqdm(total=2 * len(held), desc="saving elites", unit="img", leave=False,
              disable=None if progress and len(held) > bs else True) as bar:
        saved = save_elites(stage, images[held], [classes[i] for i in held], [names[i] for i in held],
                            on_saved=lambda: bar.update(1))
        back = read_elites(saved, images.shape[1]) if held else images[:0]
        chunks = [torch.zeros(0, len(classes))]
        for i in range(0, len(back), bs):
            chunks.append(search.scorer(back[i:i + bs].to(model.device)).cpu())
            bar.update(len(chunks[-1]))
    logp = torch.cat(chunks)
    conf = torch.zeros(len(classes))
    conf[held] = logp[torch.arange(len(held)), torch.tensor(held, dtype=torch.long)].exp()
    paths: list[Path | None] = [None] * len(classes)
    for i, path in zip(held, saved):
        paths[i] = run.path / path.relative_to(stage)  # where the swap puts it
    if held:  # the swap: microseconds, where writing took up to minutes (a kill then left the two disagreeing)
        elites = run.file("elites")
        if elites.exists():
            elites.rename(stage / "old")
        (stage / "elites").rename(elites)
    label = config.encoding if config.method == "evolve" else "gradient ascent"
    write_archive_json(run.file("archive.json"), model=model.name, method=config.method, encoding=config.encoding,
                       generations_done=search.generation, evaluations=search.evaluations, seconds=seconds,
                       classes=classes, names=names, confidences=conf.tolist(), found=found, images=paths,
                       root=run.path, crops=config.crops, weights=model.fingerprint())
    shutil.rmtree(stage, ignore_errors=True)
    title = f"{model.name}, {label}, {search.generation} generation{'' if search.generation == 1 else 's'}"
    if held:  # (a run stopped before its first generation has no elites to show)
        save_gallery(run.file("gallery.png"), images[held], [names[i] for i in held], conf[held].tolist(),
                     title=title)
    if len(logbook):
        save_progress(run.file("progress.png"), list(logbook), title=title)
    return conf
