"""The ``foolkit`` console script: Ctrl-C or ``kill`` is one line and exit 130 from the first
moment, even while the command line's modules (torch among them) are still being imported."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _quit_while_importing(signum: int, frame: Any) -> None:
    # Nothing is written before the imports end, so there is nothing to save: leave at once. (A
    # KeyboardInterrupt raised into an import can be swallowed by a library's import-time fallback,
    # leaving a half-initialised module behind that fails later with some other error.)
    os.write(2, b"foolkit: interrupted\n")
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    previous = {sig: signal.signal(sig, _quit_while_importing) for sig in (signal.SIGINT, signal.SIGTERM)}
    from foolkit.cli import main as run

    for sig, handler in previous.items():  # Ctrl-C a KeyboardInterrupt again; foolkit.cli.main handles kill
        signal.signal(sig, handler)
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
