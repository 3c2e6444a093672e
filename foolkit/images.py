"""Images in and out: Pillow files <-> float tensors in [0, 1]; panels and grids.

Tensors are ``(C, H, W)`` for one image and ``(B, C, H, W)`` for a batch, float32 in
``[0, 1]``. Everything written is a lossless 8-bit PNG, written atomically.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from foolkit.errors import FoolkitError
from foolkit.runs import atomic_write_bytes

# Pillow refuses decompression bombs with a warning first; treat that as an error too.
Image.MAX_IMAGE_PIXELS = 200_000_000


def load_image(path: str | os.PathLike[str], channels: int | None = None, *,
               notes: list[str] | None = None) -> torch.Tensor:
    """Read any image Pillow reads into a ``(C, H, W)`` float tensor in ``[0, 1]``.

    Handles RGB, grayscale, RGBA/LA and palette images with transparency (composited on
    white), 16- and 32-bit grayscale, CMYK and YCbCr, and EXIF orientation. ``channels``
    (1 or 3) converts to gray or RGB; ``None`` keeps 1 for gray sources and 3 otherwise.
    Of an animation (GIF, APNG, WebP, multi-page TIFF) the first frame is read, and ``notes``
    (when given) gets a line saying so. Raises :class:`FoolkitError` with one clear line for
    anything unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise FoolkitError(f"{path} is a link that leads nowhere (or in a loop)" if path.is_symlink()
                           else f"no such file: {path}")
    if path.is_dir():
        raise FoolkitError(f"{path} is a directory, not an image")
    if not path.is_file():
        raise FoolkitError(f"{path} is not a regular file (a pipe, socket or device), not an image")
    if path.stat().st_size == 0:
        raise FoolkitError(f"{path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                frames = int(getattr(img, "n_frames", 1))
                img = ImageOps.exif_transpose(img) or img
                arr = _to_array(img)
    except FoolkitError as exc:
        raise FoolkitError(f"{path} {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise FoolkitError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from exc
    if frames > 1 and notes is not None:
        notes.append(f"it has {frames} frames; the first is used")
    x = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return to_channels(x, channels) if channels is not None else x


def _to_array(img: Image.Image) -> np.ndarray:
    """``(H, W, C)`` float32 in [0, 1], C in {1, 3}."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(img, dtype=np.float64) / 65535.0
        return a[..., None].astype(np.float32)
    if mode == "I":
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if a.max(initial=0) <= 65535 else float(2**31 - 1)
        return np.clip(a / hi, 0, 1)[..., None].astype(np.float32)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise FoolkitError("has pixels that are not numbers (NaN or infinity)")  # load_image names the file
        lo, hi = float(a.min(initial=0)), float(a.max(initial=1))
        scale = 1.0 if (lo >= 0 and hi <= 1) else max(hi - lo, 1e-12)
        a = a if scale == 1.0 else (a - lo) / scale
        return np.clip(a, 0, 1)[..., None].astype(np.float32)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("L" if mode in ("LA", "La") else "RGB")
        mode = img.mode
    if mode in ("1", "L"):
        a = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return a[..., None]
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return a


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``(..., C, H, W)`` between 1 (luma, ITU-R 601) and 3 channels."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(dim=-3, keepdim=True)
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    raise FoolkitError(f"cannot convert a {c}-channel image to {channels} channels")


def view_crop(height: int, width: int, input_size: Sequence[int]) -> tuple[int, int, int, int]:
    """``(top, left, rows, columns)``: the centre region of a ``height x width`` image that
    :func:`model_view` keeps, cropped to the model's aspect ratio (the whole image when within 1%)."""
    h, w = int(input_size[1]), int(input_size[2])
    target_ratio = w / h
    if width / height > target_ratio * 1.01:  # too wide: crop width
        new_w = max(1, round(height * target_ratio))
        return 0, (width - new_w) // 2, height, new_w
    if width / height < target_ratio / 1.01:  # too tall: crop height
        new_h = max(1, round(width / target_ratio))
        return (height - new_h) // 2, 0, new_h, width
    return 0, 0, height, width


def view_scale(height: int, width: int, input_size: Sequence[int]) -> float:
    """How much longer (L2) a perturbation of a ``height x width`` image is than its effect on the
    model's view: ``sqrt(pixels kept / model pixels)``. A 10x larger photo needs a 10x longer
    perturbation for the same change of what the model sees (each view pixel averages 100 of its).
    Never below 1: an image smaller than the model's input is blown up, so it can only make the
    view's smooth patterns, which take longer perturbations than the defaults are made for anyway."""
    _, _, rows, cols = view_crop(height, width, input_size)
    return max(1.0, math.sqrt(rows * cols / (int(input_size[1]) * int(input_size[2]))))


def model_view(x: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    """Differentiable map from full-resolution images to a model's input.

    ``x`` is ``(B, C, H, W)`` in [0, 1] at any resolution; the result is
    ``(B, *input_size)``: channels converted, the centre cropped to the model's aspect
    ratio (:func:`view_crop`), then resized (bilinear, antialiased when shrinking). Gradients flow
    back to the full-resolution pixels, so attacks can perturb the image a user actually saves.
    """
    c, h, w = (int(v) for v in input_size)
    x = to_channels(x, c)
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    top, left, rows, cols = view_crop(H, W, input_size)
    x = x[..., top:top + rows, left:left + cols]
    shrinking = x.shape[-2] > h or x.shape[-1] > w
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrinking).clamp(0, 1)


def exact_div(x: torch.Tensor, d: float) -> torch.Tensor:
    """``x / d``, correctly rounded on every device (a new tensor).

    CUDA computes a tensor divided by a Python number as a product with its reciprocal, which is
    one bit off for many values (126 of the 256 levels ``k / 255``): an 8-bit image made on a GPU
    would then not be bit-equal to the same PNG read on the CPU, nor score exactly as it does.
    A divisor that is a tensor on the same device gets a true division everywhere (``torch.full``:
    made by a kernel, no host copy to wait for)."""
    return x / torch.full((), d, dtype=x.dtype, device=x.device)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """What a lossless 8-bit PNG keeps of ``x``: round to multiples of 1/255 (bit-equal to the PNG
    read back, on any device: :func:`exact_div`)."""
    k = x.clamp(0, 1).mul_(255).round_()
    return k.div_(torch.full((), 255.0, dtype=k.dtype, device=k.device))


def to_pil(x: torch.Tensor) -> Image.Image:
    """``(C, H, W)`` (or ``(H, W)``) in [0, 1] → an 8-bit gray or RGB Pillow image."""
    x = x.detach().float().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    arr = (quantize(x) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def png_bytes(x: torch.Tensor | Image.Image) -> bytes:
    """A lossless PNG of an image ``(C, H, W)`` in [0, 1] (or a PIL image), in memory."""
    img = x if isinstance(x, Image.Image) else to_pil(x)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_image(x: torch.Tensor | Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write a lossless PNG atomically; returns the path."""
    atomic_write_bytes(path, png_bytes(x))
    return Path(path)


def noise_image(delta: torch.Tensor, *, amplify: float | None = None) -> torch.Tensor:
    """Make a perturbation visible: centred on grey, amplified so the largest |δ| hits 0 or 1."""
    d = delta.detach().float()
    if amplify is None:
        peak = d.abs().max().item()
        amplify = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + amplify * d).clamp(0, 1)


def _font(size: int, text: str = "") -> ImageFont.ImageFont:
    """The captions' font: the first font with all of ``text``'s glyphs, matplotlib's DejaVu Sans
    (Latin, Greek, Cyrillic, ...) first, then the system's fonts; Pillow's built-in one only
    where there is none (it has glyphs for ASCII only, not even "é", and sets some spaces too
    narrow to see)."""
    path = _font_covering(frozenset(text) - frozenset(" \n\t"))
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@functools.lru_cache(maxsize=64)
def _font_covering(chars: frozenset[str]) -> str | None:
    """The path of the first font with a glyph for every one of ``chars`` (else the one with the
    most, if it has any); None when no font has any."""
    try:
        from matplotlib import font_manager
    except ImportError:
        return None
    first = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)
    plain_first = sorted(font_manager.fontManager.ttflist, key=lambda f: (f.style != "normal", f.weight != 400, f.fname))
    others = [f.fname for f in plain_first if f.fname != first and "LastResort" not in f.fname]  # all boxes
    best, best_n = None, 0
    for path in [first, *others]:
        n = sum(ord(c) in _charmap(path) for c in chars)
        if n == len(chars):
            return path
        if n > best_n:
            best, best_n = path, n
    return best


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    try:
        from matplotlib.ft2font import FT2Font

        return frozenset(FT2Font(path).get_charmap())
    except (ImportError, OSError, RuntimeError, ValueError):
        return frozenset()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Each line of ``text`` cut, with "…", to at most ``width`` pixels."""
    lines = []
    for line in text.split("\n"):
        if draw.textlength(line, font=font) > width:
            while line and draw.textlength(line + "…", font=font) > width:
                line = line[:-1]
            line = line.rstrip() + "…"
        lines.append(line)
    return "\n".join(lines)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` broken between words into lines of at most ``width`` pixels (a word longer than
    that is cut, as :func:`_fit` cuts)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        start = len(lines)
        for word in paragraph.split():
            if len(lines) > start and draw.textlength(lines[-1] + " " + word, font=font) <= width:
                lines[-1] += " " + word
            else:
                lines.append(word)
    return _fit(draw, "\n".join(lines), font, width)


def panel(images: Sequence[torch.Tensor], captions: Sequence[str], *, tile: int = 224,
          title: str | None = None) -> Image.Image:
    """Side-by-side tiles, each scaled to ``tile`` px high (nearest for small images) and
    captioned underneath; optional title on top."""
    return grid(images, captions, columns=len(images), tile=tile, title=title)


def grid(images: Sequence[torch.Tensor], captions: Sequence[str] | None = None, *, columns: int = 5,
         tile: int = 128, title: str | None = None) -> Image.Image:
    """A grid of ``(C, H, W)`` images with optional captions (several lines allowed)."""
    n = len(images)
    if n == 0:
        raise ValueError("grid of no images")
    captions = list(captions) if captions is not None else [""] * n
    columns = max(1, min(columns, n))
    rows = (n + columns - 1) // columns
    font_size = max(10, tile // 12)
    font = _font(font_size, (title or "") + "".join(captions))
    lines = max((c.count("\n") + 1 for c in captions if c), default=0)
    cap_h = (font_size + 4) * lines + (6 if lines else 0)
    pad = 6
    width = columns * (tile + pad) + pad
    title = _wrap(ImageDraw.Draw(Image.new("RGB", (1, 1))), title, font, width - 2 * pad) if title else ""
    title_h = (font_size + 4) * (title.count("\n") + 1) + 10 if title else 0
    canvas = Image.new("RGB", (width, title_h + rows * (tile + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.multiline_text((pad, 5), title, fill="black", font=font, spacing=4)
    for i, (img, cap) in enumerate(zip(images, captions)):
        r, c = divmod(i, columns)
        pil = to_pil(img).convert("RGB")
        scale = tile / max(pil.size)
        size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
        resample = Image.NEAREST if max(pil.size) <= tile // 2 else Image.LANCZOS
        pil = pil.resize(size, resample)
        x0 = pad + c * (tile + pad)
        y0 = title_h + pad + r * (tile + cap_h + pad)
        x, y = x0 + (tile - size[0]) // 2, y0 + (tile - size[1]) // 2
        canvas.paste(pil, (x, y))
        draw.rectangle((x - 1, y - 1, x + size[0], y + size[1]), outline=(190, 190, 190))  # a white image's edge
        if cap:
            draw.multiline_text((x0, y0 + tile + 4), _fit(draw, cap, font, tile + pad // 2), fill="black", font=font,
                                spacing=4)
    return canvas
