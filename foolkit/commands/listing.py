"""`foolkit models` and `foolkit datasets`: what is registered and what works offline now."""

from __future__ import annotations

import click

from foolkit.commands.common import data_dir_option, emit_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def models(as_json: bool) -> None:
    """List every model name with input size, classes and offline availability."""
    from dataclasses import asdict

    from foolkit.models import list_models

    rows = list_models()
    if as_json:
        for r in rows:
            emit_json(asdict(r))
        return
    click.echo(f"{'name':<20} {'kind':<12} {'input':<12} {'classes':>7}  offline  weights")
    for r in rows:
        size = "x".join(str(v) for v in r.input_size)
        click.echo(f"{r.name:<20} {r.kind:<12} {size:<12} {r.num_classes:>7}  {'yes' if r.offline else 'no':<7}  {r.weights}")


@click.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dataset.")
def datasets(data_dir: str | None, as_json: bool) -> None:
    """List the registered datasets, whether they load offline, and from where."""
    from pathlib import Path

    from foolkit.data import dataset_sources
    from foolkit.errors import FoolkitError

    if data_dir is not None and not Path(data_dir).is_dir():  # (as every command that loads data says)
        raise FoolkitError(f"--data-dir {data_dir} is not a folder")
    rows = dataset_sources(data_dir)
    if as_json:
        for r in rows:
            emit_json(r)
        return
    click.echo(f"{'name':<14} {'available':<9} {'train':>6} {'test':>6}  source")
    for r in rows:
        click.echo(f"{r['name']:<14} {'yes' if r['available'] else 'no':<9} {r['train'] or '-':>6} {r['test'] or '-':>6}  {r['source']}")
    click.echo("any folder of class sub-folders is a dataset too: --dataset folder:PATH")
