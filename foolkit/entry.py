"""The ``foolkit`` console script: Ctrl-C or ``kill`` is one line and exit 130 from the first
moment, even while the command line's modules (torch among them) are still being imported."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


def main(argv: list[str] | None = None) -> int:
    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)  # foolkit.cli.main installs its own once imported
    try:
        from foolkit.cli import main as run
    except KeyboardInterrupt:
        print("foolkit: interrupted", file=sys.stderr)
        return 130
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
