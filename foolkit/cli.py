"""The ``foolkit`` command line (click).

Every user-caused failure ends as one line on stderr (``foolkit: error: ...``) and a
non-zero exit; Ctrl-C ends with exit code 130 after the command has saved what it can.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from foolkit import __version__
from foolkit.commands.classify import classify
from foolkit.commands.listing import datasets, models
from foolkit.commands.train import train
from foolkit.errors import FoolkitError


class _Stopped(BaseException):
    """Ctrl-C or ``kill`` inside a command, carried past click to :func:`main`. click would turn
    a KeyboardInterrupt into ``Abort`` after writing a blank line to stderr; the contract is one line."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Stopped from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="foolkit")
def cli() -> None:
    """foolkit: fool image classifiers, and show why they can be fooled."""


for _cmd in (classify, models, datasets, train):
    cli.add_command(_cmd)


def _register_capabilities() -> None:
    """Commands that live in their capability's package (attack, evolve, retrain, memorize, demo)."""
    from foolkit.commands import attack, demo, evolve, memorize, retrain

    for module, name in ((attack, "attack"), (evolve, "evolve"), (retrain, "retrain"), (memorize, "memorize"),
                         (demo, "demo")):
        cli.add_command(getattr(module, name))


_register_capabilities()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning errors into one clear line and an exit code."""
    from foolkit.commands import common

    common.INVOCATION[:] = list(argv) if argv is not None else sys.argv[1:]
    previous = _terminate_as_interrupt()
    try:
        rv = cli.main(args=argv, prog_name="foolkit", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        message = exc.format_message().replace("\n", " ")
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"foolkit: error: {message}{where}", file=sys.stderr)
        return exc.exit_code
    except FoolkitError as exc:
        print(f"foolkit: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return exc.exit_code
    except (_Stopped, KeyboardInterrupt, click.exceptions.Abort):
        print("foolkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except NotADirectoryError as exc:  # an output path through a file: what was asked, not the machine
        print(f"foolkit: error: cannot write {exc.filename}: part of that path is a file, not a folder", file=sys.stderr)
        return 2
    except IsADirectoryError as exc:  # a folder where an output file goes: also what was asked
        print(f"foolkit: error: cannot write {exc.filename}: a folder is in its place", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no: no permission, a full disk
        what = exc.strerror or type(exc).__name__
        print(f"foolkit: error: {what}: {exc.filename}" if exc.filename else f"foolkit: error: {what}", file=sys.stderr)
        return 1
    except (MemoryError, *torch_oom_types()) as exc:  # type: ignore[misc]
        return _out_of_memory(exc)
    except RuntimeError as exc:
        if not _is_cpu_oom(exc):
            raise
        return _out_of_memory(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> Any:
    """``kill`` (SIGTERM) stops a command the way Ctrl-C does: what it has saved stays, and it
    ends with one line. Returns the handler it replaced (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _is_cpu_oom(exc: RuntimeError) -> bool:
    """torch's CPU allocator reports an allocation it cannot make as a plain RuntimeError."""
    text = str(exc)
    return "can't allocate memory" in text or "not enough memory" in text


def _out_of_memory(exc: BaseException) -> int:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(detail) > 160:  # cut between words, not inside a number
        detail = detail[:160].rsplit(" ", 1)[0] + " …"
    print(f"foolkit: error: out of memory ({detail}); try a smaller problem (--subset, --batch-size, --population, "
          f"--size), or another --device", file=sys.stderr)
    return 1


def torch_oom_types() -> tuple[type[BaseException], ...]:
    try:
        import torch

        return (torch.OutOfMemoryError,)
    except (ImportError, AttributeError):
        return (MemoryError,)


if __name__ == "__main__":
    sys.exit(main())
