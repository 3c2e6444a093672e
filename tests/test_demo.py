"""`foolkit demo --quick`: all four stages, the page and the summary."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

STAGES = ["attack", "evolve", "retrain", "memorize"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from foolkit.cli import main

    out = tmp_path_factory.mktemp("demo") / "page"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    return out


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag == "a" and "href" in a:
            self.links.append(a["href"])


def test_summary_has_every_stage_and_its_figures(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert summary["quick"] is True and list(summary["stages"]) == STAGES
    for name, st in summary["stages"].items():
        assert st["figures"], name
        for rel in st["figures"]:
            assert (demo_dir / rel).is_file(), rel
        assert st["text"] and st["seconds"] >= 0
    att = summary["stages"]["attack"]
    assert att["success_rate"] == 1.0 and 0 < att["median_l2"] < 3
    evo = summary["stages"]["evolve"]
    assert evo["classes_at_99"] >= 8
    rounds = summary["stages"]["retrain"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["fooling_recall"] is not None
    mem = summary["stages"]["memorize"]
    rnd = next(r for r in mem["runs"] if r["variant"] == "random-labels")
    assert rnd["train_accuracy"] == 1.0 and rnd["test_accuracy"] < 0.3
    assert mem["expressivity"]["train_accuracy"] == 1.0


def test_page_is_self_contained_and_references_existing_images(demo_dir):
    page = (demo_dir / "index.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.images) >= 6
    for img in parser.images:
        assert img["src"].startswith("data:image/png;base64,")
        raw = base64.b64decode(img["src"].split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        assert (demo_dir / img["data-file"]).read_bytes() == raw  # the embedded copy is the file beside it
    for href in parser.links:
        assert (demo_dir / href).is_file()
    assert not re.search(r"(src|href)=\"https?://", page)  # nothing from the network
    for title in ("Minimal noise", "Fooling images", "Retrain", "Memorisation"):
        assert title in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed")
def test_page_renders_in_headless_chromium(demo_dir, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", "--hide-scrollbars",
           f"--screenshot={shot}", (demo_dir / "index.html").as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    from PIL import Image, ImageStat

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2400)
    # a rendered page with pictures: plenty of non-white pixels, not a blank or error page
    stat = ImageStat.Stat(img)
    assert stat.stddev[0] > 20
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", (demo_dir / "index.html").as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert dom.count("<img") >= 6 and "foolkit demo" in dom


def test_ctrl_c_during_the_demo_says_which_stages_finished_without_a_resume_hint(cli, monkeypatch, tmp_path):
    import foolkit.demo
    from foolkit.evolve import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted("interrupted after generation 27")  # what an inner evolution raises on Ctrl-C

    monkeypatch.setattr(foolkit.demo, "stage_evolve", stopped)
    out = tmp_path / "d"
    (out / "memorize").mkdir(parents=True)  # an earlier demo's last stage
    (out / "memorize" / "fig1.png").write_bytes(b"old")
    (out / ".foolkit-demo").touch()
    r = cli("demo", "--quick", "--out", out, "--device", "cpu")
    assert r.exit_code == 130 and r.stderr.strip().splitlines() == [
        f"foolkit: error: demo interrupted in stage 2 of 4; {out} holds the finished stage (attack); "
        f"run `foolkit demo --out {out} --quick --device cpu` again to start over"]  # the options it was given
    # what the message says: this run's finished stage, not the cut one's part or the earlier run's later ones
    assert sorted(p.name for p in out.iterdir()) == [".foolkit-demo", "attack"]
    assert any((out / "attack").iterdir())


def test_the_demo_never_deletes_files_it_did_not_write(cli, one_line_error, demo_dir, tmp_path):
    mine = tmp_path / "d" / "memorize" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("x")
    one_line_error(cli("demo", "--quick", "--out", tmp_path / "d"), "not a foolkit demo's")
    assert mine.read_text() == "x"
    assert (demo_dir / ".foolkit-demo").is_file()  # the demo's own folder: a re-run may replace its stages
    (tmp_path / "d" / "summary.json").write_text("{}")  # any summary.json made the folder a demo's
    one_line_error(cli("demo", "--quick", "--out", tmp_path / "d"), "not a foolkit demo's")
    assert mine.read_text() == "x"
    marked = tmp_path / "m"
    marked.mkdir()
    (marked / ".foolkit-demo").touch()
    (marked / "attack").write_text("a file")
    one_line_error(cli("demo", "--quick", "--out", marked), "a file named attack")
    one_line_error(cli("demo", "--quick", "--out", marked / "attack" / "sub"), "cannot make --out")

@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unusable_device_is_refused_before_the_folder_is_claimed(cli, one_line_error, tmp_path):
    one_line_error(cli("demo", "--quick", "--out", tmp_path / "d", "--device", "cuda"), "cuda")
    assert not (tmp_path / "d").exists()
