"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: the arguments of the running ``foolkit`` invocation (set by ``foolkit.cli.main``)
INVOCATION: list[str] = []


def command_line() -> str:
    """The running command as a shell line, for model cards and run configs."""
    import shlex

    return " ".join(["foolkit", *(shlex.quote(a) for a in INVOCATION)])


def device_option(f: F) -> F:
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
                        help="Where to run: auto picks CUDA when present.")(f)


#: seeds a command takes: derived seeds (seed · 100003 + epoch, ...) stay within torch's 64 bits
SEED = click.IntRange(0, 2**32 - 1)


def seed_option(f: F) -> F:
    return click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed (same seed, same result on CPU).")(f)


def model_options(f: F) -> F:
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Local weights file for a registry model (e.g. when offline).")(f)
    return click.option("--model", "-m", "model_name", required=True,
                        help="Registry name (see `foolkit models`) or a model file with its sidecar JSON.")(f)


def data_dir_option(f: F) -> F:
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Where the dataset lives: its files, or a sub-folder named after it "
                             "(default: $FOOLKIT_DATA/<name>, system copies, then the cache).")(f)


def typed_options() -> set[str]:
    """The running command's parameters typed on the command line (not defaults or the
    environment): on ``--resume`` these are checked against the run, the rest come from it."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {p.name for p in ctx.command.params if p.name and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE}


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj))


def info(msg: str) -> None:
    """A progress / notice line on stderr (stdout stays machine-readable)."""
    print(msg, file=sys.stderr, flush=True)


def check_writable_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before any work, a folder that cannot be written: a file in its place or on its
    path (exit 2), or a place the machine will not let us write (exit 1: no permission, a
    read-only disk). Creates nothing."""
    from foolkit.errors import FoolkitError, MachineError

    if out.exists() and not out.is_dir():
        raise FoolkitError(f"{option} {out} exists and is not a folder")
    there = out
    while not there.exists():
        if there.is_symlink():
            raise FoolkitError(f"cannot write {option} {out}: {there} is a broken link")
        there = there.parent
    if not there.is_dir():
        raise FoolkitError(f"cannot write {option} {out}: {there} is a file, not a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        raise MachineError(f"cannot write {option} {out}: {there} is read-only or not ours to write in")


def cell(text: str, width: int) -> str:
    """``text`` cut and padded to ``width`` terminal columns (a CJK character takes two)."""
    import unicodedata

    out, used = "", 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 0 if unicodedata.combining(ch) else 1
        if used + w > width:
            break
        out, used = out + ch, used + w
    return out + " " * (width - used)
