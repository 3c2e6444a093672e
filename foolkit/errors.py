"""The one exception type for failures a user can cause.

The CLI turns a :class:`FoolkitError` into one line on stderr and a non-zero exit, so its
message must stand on its own: say what is wrong and what to do about it.
"""


class FoolkitError(Exception):
    """A user-facing error: bad input, missing file, unknown name, offline without data."""

    exit_code = 2


class Interrupted(FoolkitError):
    """Ctrl-C or ``kill``: the command stopped after saving what it could; the message says
    what and how to go on (exit code 130, as for SIGINT)."""

    exit_code = 130


class MachineError(FoolkitError):
    """The machine said no to something reasonable: no permission, a full disk (exit code 1)."""

    exit_code = 1
