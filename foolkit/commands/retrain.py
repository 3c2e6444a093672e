"""`foolkit retrain` (its capability has not landed yet)."""

from __future__ import annotations

import click

from foolkit.commands.common import not_landed


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def retrain() -> None:
    """Not available yet in this version."""
    not_landed("retrain")
