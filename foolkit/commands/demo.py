"""`foolkit demo`: the whole story, offline, on one page."""

from __future__ import annotations

from pathlib import Path

import click

from foolkit.commands.common import device_option, info, seed_option
from foolkit.errors import Interrupted


@click.command()
@click.option("--out", "-o", type=click.Path(file_okay=False), default="foolkit-demo", show_default=True)
@click.option("--quick", is_flag=True, help="Smaller stages: under a minute on 2 CPU cores.")
@seed_option
@device_option
def demo(out: str, quick: bool, seed: int, device: str) -> None:
    """Attack, evolve, retrain and memorize against the bundled LeNet; writes OUT/index.html."""
    from foolkit.demo import again, run_demo

    try:
        summary = run_demo(out, quick=quick, seed=seed, device=device)
    except KeyboardInterrupt:  # before the stages (run_demo says which stages finished once they run)
        raise Interrupted(f"demo interrupted before its first stage; run "
                          f"`{again(out, quick=quick, seed=seed, device=device)}` again to start over") from None
    for name, st in summary["stages"].items():
        click.echo(f"{name:<9} {st['seconds']:6.1f} s  {st['text']}")
    info(f"open {Path(out) / 'index.html'} ({summary['seconds']:.0f} s in all)")
