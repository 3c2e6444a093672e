"""Image reading/writing: every Pillow mode into [0, 1] tensors, model views, PNG round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from foolkit.errors import FoolkitError
from foolkit.images import grid, load_image, model_view, noise_image, panel, quantize, save_image, to_channels


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_and_gray_values(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = load_image(_save(Image.fromarray(arr), tmp_path / "rgb.png"))
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert torch.equal((x * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(arr))
    g = load_image(_save(Image.fromarray(arr[..., 0]), tmp_path / "g.png"))
    assert g.shape == (1, 5, 7)
    assert load_image(tmp_path / "g.png", channels=3).shape == (3, 5, 7)
    # RGB -> gray uses ITU-R 601 luma
    gray = load_image(tmp_path / "rgb.png", channels=1)
    expected = (0.299 * arr[..., 0] + 0.587 * arr[..., 1] + 0.114 * arr[..., 2]) / 255
    assert torch.allclose(gray[0], torch.from_numpy(expected).float(), atol=1e-5)


def test_rgba_and_palette_transparency_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)   # opaque red
    rgba[0, 1] = (0, 0, 0, 0)       # fully transparent -> white
    rgba[1, :] = (0, 0, 255, 128)   # half blue
    x = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert x.shape == (3, 2, 2)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(x[:, 0, 1], torch.ones(3))
    assert x[2, 1, 0] == 1.0 and 0.45 < x[0, 1, 0] < 0.55
    pal = Image.fromarray(rgba, "RGBA").convert("P")
    pal.info["transparency"] = 0
    assert load_image(_save(pal, tmp_path / "p.png")).shape == (3, 2, 2)
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert load_image(_save(la, tmp_path / "la.png")).shape == (1, 2, 2)


def test_16bit_keeps_precision(tmp_path):
    arr = np.array([[0, 1000, 65535]], dtype=np.uint16)
    x = load_image(_save(Image.fromarray(arr), tmp_path / "16.png"))
    assert x.shape == (1, 1, 3)
    assert torch.allclose(x[0, 0], torch.tensor([0.0, 1000 / 65535, 1.0]), atol=1e-6)


def test_cmyk_and_exif_rotation(tmp_path):
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # red in CMYK
    x = load_image(_save(cmyk, tmp_path / "c.jpg", quality=100))
    assert x.shape == (3, 3, 4) and x[0].mean() > 0.9 and x[1].mean() < 0.1
    img = Image.new("RGB", (6, 2), "white")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (3, 6, 2)


def test_one_pixel_image(tmp_path):
    x = load_image(_save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "1.png"))
    assert x.shape == (3, 1, 1)
    v = model_view(x.unsqueeze(0), (1, 28, 28))
    assert v.shape == (1, 1, 28, 28)


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "text", "truncated"])
def test_unreadable_inputs_raise_one_clear_error(tmp_path, case):
    path = tmp_path / "img.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    elif case == "text":
        path.write_text("not an image at all")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(FoolkitError) as info:
        load_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_model_view_is_differentiable_and_crops_to_aspect():
    x = torch.rand(2, 3, 40, 80, requires_grad=True)
    v = model_view(x, (1, 28, 28))
    assert v.shape == (2, 1, 28, 28)
    v.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the centre crop: the outer quarter columns do not influence a square model's input
    assert x.grad[..., :, :15].abs().sum() == 0 and x.grad[..., :, 25:55].abs().sum() > 0
    same = torch.rand(1, 1, 28, 28)
    assert torch.equal(model_view(same, (1, 28, 28)), same)


def test_png_round_trip_is_lossless_after_quantisation(tmp_path):
    x = torch.rand(3, 9, 11)
    save_image(x, tmp_path / "x.png")
    back = load_image(tmp_path / "x.png")
    assert torch.equal(back, quantize(x))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file


def test_channels_noise_panel_grid():
    assert to_channels(torch.rand(1, 1, 4, 4), 3).shape == (1, 3, 4, 4)
    d = torch.tensor([[[-0.02, 0.0, 0.01]]])
    n = noise_image(d)
    assert n.min() == 0.0 and n[0, 0, 1] == 0.5
    p = panel([torch.rand(1, 28, 28)] * 3, ["a\nb", "c", "d"], tile=64)
    assert p.size[0] > 3 * 64 and p.size[1] > 64
    g = grid([torch.rand(3, 8, 8)] * 7, [f"{i}" for i in range(7)], columns=3, tile=32, title="t")
    assert g.size[0] == 3 * (32 + 6) + 6


@pytest.mark.parametrize("a, b", [("é", "è"), ("ж", "ш"), ("α", "β")])
def test_captions_beyond_ascii_get_real_glyphs(a: str, b: str) -> None:
    # Pillow's built-in font draws the same box for every character it lacks (all but ASCII)
    def caption(c: str) -> np.ndarray:
        return np.asarray(grid([torch.zeros(1, 8, 8)], [f"{c}{c}{c}"], tile=64))[64:]

    assert not np.array_equal(caption(a), caption(b))
    assert not np.array_equal(caption(a), caption("\uffff"))  # a character no font has


def test_a_caption_too_wide_for_its_tile_is_cut_inside_it() -> None:
    g = np.asarray(grid([torch.zeros(1, 8, 8)] * 2, ["a" * 60 + "\nmiddle", "b"], columns=2, tile=64))
    gap = g[6 + 64 + 4:, 6 + 64 + 3 + 1:6 + 64 + 6]  # the caption band, between the columns
    assert (gap == 255).all()


def test_quantize_lands_on_the_values_a_png_is_read_back_as():
    """The oracle: numpy's correctly rounded k / 255, what load_image gives for each 8-bit level."""
    from foolkit.images import exact_div

    levels = torch.from_numpy(np.arange(256, dtype=np.float32) / np.float32(255))
    assert torch.equal(exact_div(torch.arange(256.0), 255.0), levels)
    noisy = (levels + torch.rand(256, generator=torch.Generator().manual_seed(0)) * 0.003 - 0.0015).clamp(0, 1)
    assert torch.equal(quantize(noisy), levels[(noisy * 255).round().long()])
    assert torch.equal(quantize(levels.clone()), levels)


def test_each_tile_has_a_border_so_a_white_image_shows_where_it_ends() -> None:
    g = np.asarray(grid([torch.ones(1, 8, 8)], tile=32))  # at (6, 6), 32 x 32 px
    assert (g[5, 5:39] == 190).all() and (g[38, 5:39] == 190).all() and (g[6:38, 6:38] == 255).all()


def test_captions_set_a_visible_space_between_words():
    """Pillow's built-in font set 'fooling images against' as 'fooling imagesagainst'."""
    from PIL import Image, ImageDraw

    from foolkit.images import _font

    font = _font(14, "fooling images against")
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    space = draw.textlength("images against", font=font) - draw.textlength("imagesagainst", font=font)
    assert space >= 0.3 * 14  # DejaVu Sans: 4.45 px at 14 px; Pillow's built-in font: 3.0, drawn as nothing


def test_a_long_title_wraps_between_words_instead_of_being_cut() -> None:
    from PIL import Image, ImageDraw

    from foolkit.images import _font, _wrap, grid

    title = "lenet-mnist, gradient ascent, 100 generations\nsecond paragraph"
    font = _font(10, title)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = _wrap(draw, title, font, 120)
    assert wrapped.split() == title.split() and "…" not in wrapped  # every word, none cut
    assert all(draw.textlength(line, font=font) <= 120 for line in wrapped.split("\n"))
    assert wrapped.split("\n")[-1] == "second paragraph"  # a line break given stays one
    tiles = [torch.zeros(1, 8, 8)] * 2
    one_line, wrapped_height = grid(tiles, tile=112, title="short").height, grid(tiles, tile=112, title=title).height
    assert wrapped_height > one_line


def test_non_finite_pixels_a_pipe_and_a_dangling_link_are_one_clear_error(tmp_path) -> None:
    import os

    import numpy as np
    from PIL import Image

    from foolkit.errors import FoolkitError
    from foolkit.images import load_image

    for value, name in ((np.nan, "nan.tif"), (np.inf, "inf.tif")):
        a = np.full((4, 4), 0.5, dtype=np.float32)
        a[1, 2] = value
        Image.fromarray(a, "F").save(tmp_path / name)
        with pytest.raises(FoolkitError, match="not numbers"):
            load_image(tmp_path / name)
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(FoolkitError, match="not a regular file"):
        load_image(tmp_path / "pipe.png")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    with pytest.raises(FoolkitError, match="leads nowhere"):
        load_image(tmp_path / "loop.png")
