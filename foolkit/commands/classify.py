"""`foolkit classify`: top-K classes of images, as a table or JSON lines."""

from __future__ import annotations

from typing import Any

import click
import torch

from foolkit.commands.common import cell, device_option, emit_json, info, model_options
from foolkit.errors import FoolkitError
from foolkit.utils import format_confidence


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--top", "-k", type=click.IntRange(min=1), default=5, show_default=True, help="How many classes to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per image.")
@click.option("--crops", type=click.Choice(["1", "10"]), default="1", show_default=True,
              help="10: average the softmax over the ten crops of the model's input size that "
                   "`evolve --crops 10` scores (corners, centre, mirrored); 1: the whole image resized.")
@device_option
def classify(images: tuple[str, ...], model_name: str, weights: str | None, top: int, as_json: bool, crops: str,
             device: str) -> None:
    """Classify IMAGES with a model: a table of the top-K classes and confidences."""
    from foolkit.evolve.scoring import Scorer
    from foolkit.images import load_image, model_view
    from foolkit.models import load_model

    model = load_model(model_name, device=device, weights=weights)
    _, h, w = model.input_size
    for p in images:  # read every image once first, so a broken one fails the command before anything is printed
        notes: list[str] = []
        x = load_image(p, notes=notes)
        for note in notes:
            info(f"foolkit: {p}: {note}")
        if crops == "10" and (x.shape[1] < h or x.shape[2] < w):
            raise FoolkitError(f"--crops 10 takes crops of {h}x{w} from each image; {p} is only {x.shape[1]}x{x.shape[2]}")
    k = min(top, model.num_classes)
    if top > k and not as_json:
        info(f"foolkit: {model.name} has {k} classes: showing all of them, not {top}")
    scorer = Scorer(model, range(model.num_classes), crops=10) if crops == "10" else None
    for i in range(0, len(images), CHUNK):  # then a chunk at a time: memory stays bounded however many photos
        chunk = images[i:i + CHUNK]
        with torch.no_grad():
            if scorer is not None:  # images of any size: one at a time, ten crops each
                probs = torch.cat([scorer(load_image(p).unsqueeze(0).to(model.device)).exp() for p in chunk])
            else:
                probs = model.probabilities(torch.cat([model_view(load_image(p).unsqueeze(0), model.input_size)
                                                       for p in chunk]).to(model.device))
        conf, labels = probs.topk(k, dim=1)
        _show(chunk, conf.tolist(), labels.tolist(), model, model_name, as_json)


#: images read and classified at a time
CHUNK = 32


def _show(images: tuple[str, ...], conf: list[list[float]], labels: list[list[int]], model: Any, model_name: str,
          as_json: bool) -> None:
    for path, cs, ls in zip(images, conf, labels):
        rows = [{"label": int(lab), "name": model.classes[lab], "confidence": float(c)} for c, lab in zip(cs, ls)]
        if as_json:
            emit_json({"image": path, "model": model_name, "top": rows})
        else:
            click.echo(f"{path}  ({model_name}; class, its index, confidence)")
            for rank, r in enumerate(rows, 1):
                click.echo(f"  {rank:>2}. {cell(r['name'], 40)} {r['label']:>5}  {format_confidence(r['confidence']):>10}")
