"""`foolkit classify`: top-K classes of images, as a table or JSON lines."""

from __future__ import annotations

import click
import torch

from foolkit.commands.common import device_option, emit_json, model_options


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--top", "-k", type=click.IntRange(min=1), default=5, show_default=True, help="How many classes to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per image.")
@device_option
def classify(images: tuple[str, ...], model_name: str, weights: str | None, top: int, as_json: bool, device: str) -> None:
    """Classify IMAGES with a model: a table of the top-K classes and confidences."""
    from foolkit.images import load_image, model_view
    from foolkit.models import load_model

    model = load_model(model_name, device=device, weights=weights)
    # read every image first, so a broken one fails the command before anything is printed
    pixels = [load_image(p) for p in images]
    batch = torch.cat([model_view(x.unsqueeze(0), model.input_size) for x in pixels]).to(model.device)
    probs = model.probabilities(batch)
    k = min(top, model.num_classes)
    conf, labels = probs.topk(k, dim=1)
    for path, cs, ls in zip(images, conf.tolist(), labels.tolist()):
        rows = [{"label": int(lab), "name": model.classes[lab], "confidence": float(c)} for c, lab in zip(cs, ls)]
        if as_json:
            emit_json({"image": path, "model": model_name, "top": rows})
        else:
            click.echo(f"{path}  ({model_name})")
            for rank, r in enumerate(rows, 1):
                click.echo(f"  {rank:>2}. {r['name'][:40]:<40} {r['label']:>5}  {r['confidence']:8.4f}")
