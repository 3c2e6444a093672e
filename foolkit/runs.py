"""Run folders: config, JSONL logs, atomic files, checkpoints (tensors + JSON, no pickle).

Every long command writes into one folder::

    DIR/config.json      the configuration the run was started with
    DIR/log.jsonl        one JSON object per step / generation / epoch / round
    DIR/checkpoint.pt    written atomically (temporary file, then rename)
    DIR/*.png, *.json    figures and summaries

A checkpoint is a ``torch.save`` of ``{"meta": <JSON text>, "tensors": {name: Tensor}}``,
so it loads with ``torch.load(..., weights_only=True)``: nothing in it can run code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from foolkit.errors import FoolkitError, Interrupted


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left as it was, so readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        # a failed write (torch.save reports a full disk as a RuntimeError, the OSError its context);
        # not Ctrl-C or a user error that merely happened while an OSError was being handled
        failed = _os_error_in(exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if failed is not None and failed.errno is not None:  # named by the file the user asked for, not the temporary
            raise OSError(failed.errno, failed.strerror, str(path)) from exc
        raise


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` if it is an OSError, else the first OSError among its causes and contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write_all({Path(path): data})


def atomic_write_all(files: dict[Path, bytes]) -> None:
    """Write several files as one: each to a temporary file first, then all renamed into place;
    a failure or Ctrl-C while writing leaves every one of them as it was (the renames take
    microseconds: only a kill in that instant could split them)."""
    for path in files:  # the one failure a rename would meet half-way through: refuse it before any
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
    with contextlib.ExitStack() as stack:
        temporaries = {path: stack.enter_context(atomic_path(path)) for path in files}
        for path, tmp in temporaries.items():
            with open(tmp, "wb") as f:
                f.write(files[path])
                f.flush()
                os.fsync(f.fileno())


def json_bytes(obj: Any) -> bytes:
    """What :func:`atomic_write_json` writes."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode("utf-8")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FoolkitError(f"missing file: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FoolkitError(f"{path} is not valid JSON: {exc}") from exc


def save_checkpoint(path: str | os.PathLike[str], *, meta: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Atomically save ``meta`` (JSON-able) and ``tensors`` (nested dicts/lists of tensors)."""
    blob = {"meta": json.dumps(meta, default=_json_default), "tensors": tensors}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # straight to the file: no second copy of a big checkpoint in memory
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of :func:`save_checkpoint`: ``(meta, tensors)``. Never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise FoolkitError(f"no checkpoint at {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        return json.loads(blob["meta"]), blob["tensors"]
    except Exception as exc:  # corrupt, truncated, or not ours
        raise FoolkitError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to start over") from exc


@contextlib.contextmanager
def undone_unless_saved(run: RunDir | None, *, resume: bool, saved: Sequence[str] = ("checkpoint.pt",),
                        resumable: Sequence[str] = ()) -> Iterator[None]:
    """Around starting a new run (its :meth:`RunDir.create` inside): if it fails with an error, or
    is interrupted, before a file matching one of ``saved`` (names or glob patterns) exists, remove
    what it wrote (:meth:`RunDir.discard`), so that the corrected command can use the same folder (a
    resume could not change the setting at fault, and would start from the beginning anyway).
    Files matching ``resumable`` (a first run's epoch checkpoints) keep an *interrupted* run for
    ``--resume``; after an error they go too. A resumed run, or a folder that already holds one or
    a log (which ``create`` refuses), is never touched. The folder is held (:meth:`RunDir.lock`)
    until the block ends."""
    fresh = (run is not None and not resume and not run.config_path.exists()
             and not run.checkpoint_path.exists() and not run.log_path.exists())
    existed = run is not None and run.path.exists()
    if run is not None and resume:
        run.lock()  # before anything is written (a new run's create() takes it)
    try:
        yield
    except BaseException as exc:  # (a second Ctrl-C too: KeyboardInterrupt)
        interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
        kept = [*saved, *(resumable if interrupted else ())]
        if fresh and run is not None and not any(next(run.path.glob(p), None) for p in kept):
            for f in [f for p in resumable for f in run.path.glob(p)]:
                f.unlink(missing_ok=True)
            run.discard(remove_folder=not existed)
        raise
    finally:
        if run is not None:
            run.release()


class RunDir:
    """One folder for one long run: config, JSONL log, checkpoint, figures."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # -- files -----------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def create(self, config: dict[str, Any], *, resume: bool, outputs: Sequence[str] = ()) -> dict[str, Any]:
        """Start or resume the run; returns the config in force.

        Starting refuses a folder that already holds a run, or a log or any of the run's
        ``outputs`` (names or glob patterns: what the run will write), so nothing is lost by
        accident; resuming needs a run and returns the saved config.
        """
        if resume:
            saved = self.saved_config()
            self.lock()
            self.remove_stale_temporaries()
            return saved
        self.refuse_taken(outputs)
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        atomic_write_json(self.config_path, config)
        return config

    def saved_config(self) -> Any:
        """The run's config.json (read only: no lock taken), or a one-line "nothing to resume"."""
        if not self.config_path.is_file():
            raise FoolkitError(f"nothing to resume in {self.path}: no config.json")
        return read_json(self.config_path)

    def lock(self) -> None:
        """Hold the folder for this process until :meth:`release` (or the process ends, however it
        ends: the kernel drops the lock of a killed one). A second command on the same run (a
        ``--resume`` typed while the first is still saving after Ctrl-C) would interleave its
        log and checkpoints with the first's: it is refused in one line. (No-op where the OS has
        no ``flock``.)"""
        if self._lock_fd is not None or not self.path.is_dir():
            return
        try:
            import fcntl
        except ImportError:  # (Windows)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # a folder we may not open: nothing to hold (writing will say what is wrong)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FoolkitError(f"{self.path} is in use by another foolkit command (still running, or still "
                               "saving after a Ctrl-C); wait for it to end, or stop it, and try again") from None
        except OSError:  # a file system without flock on folders (some network mounts): run unheld
            os.close(fd)
            return
        self._lock_fd = fd

    def release(self) -> None:
        """Let go of the folder (see :meth:`lock`)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def refuse_taken(self, outputs: Sequence[str] = ()) -> None:
        """Raise :class:`FoolkitError` (one line) when a new run here would overwrite something:
        a run (config, checkpoint), a log, or a file matching one of ``outputs``."""
        if self.config_path.exists() or self.checkpoint_path.exists():
            raise FoolkitError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
        if not self.path.is_dir():
            return
        for pattern in ("log.jsonl", *outputs):
            taken = sorted(self.path.glob(pattern))
            if taken:
                raise FoolkitError(f"{self.path} already holds {taken[0].name}, which a new run would overwrite; "
                                   "choose another --out (or move it away)")

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of atomic writes that a ``kill -9`` cut short (``.NAME.*.tmp``,
        see :func:`atomic_path`; a checkpoint's can be big). Only call it when no other process
        is writing into the run. Returns what it removed."""
        stale = [f for f in self.path.rglob(".*.tmp") if f.is_file()]
        for f in stale:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        return stale

    def discard(self, *, remove_folder: bool) -> None:
        """Undo :meth:`create` for a run that failed before anything worth resuming was saved:
        remove its config, log and checkpoint, and with ``remove_folder`` (it did not exist
        before) the folder itself, if nothing else is in it."""
        for f in (self.config_path, self.log_path, self.checkpoint_path):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        self.remove_stale_temporaries()
        if remove_folder:
            with contextlib.suppress(OSError):  # not empty: keep what else is there
                self.path.rmdir()

    def save_config(self, config: dict[str, Any]) -> None:
        """Replace the run's config (atomically), e.g. with the settings a resume changed."""
        atomic_write_json(self.config_path, config)

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line and flush it to disk."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line torn by a kill: everything after it is suspect
        return records

    def write_log(self, records: list[dict[str, Any]]) -> None:
        """Replace the log with ``records`` (atomically)."""
        atomic_write_text(self.log_path, "".join(json.dumps(r, default=_json_default) + "\n" for r in records))

    def truncate_log(self, key: str, last: int) -> list[dict[str, Any]]:
        """Keep only log records with ``record[key] <= last`` (used on resume, so the log
        never repeats or skips a step); returns the records kept."""
        kept = [r for r in self.read_log() if r.get(key, 0) <= last]
        self.write_log(kept)
        return kept
