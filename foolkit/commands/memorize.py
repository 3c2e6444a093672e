"""`foolkit memorize` (its capability has not landed yet)."""

from __future__ import annotations

import click

from foolkit.commands.common import not_landed


@click.group(invoke_without_command=True, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def memorize() -> None:
    """Not available yet in this version."""
    not_landed("memorize")
