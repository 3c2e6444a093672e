"""`foolkit attack`: the files and JSON it writes, odd-but-valid images, evaluation mode, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foolkit.images import load_image, model_view, save_image


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, mnist_batch):
    x, _ = mnist_batch
    d = tmp_path_factory.mktemp("digits")
    save_image(x[0], d / "seven.png")
    save_image(x[5], d / "other.png")
    return d / "seven.png", d / "other.png"


def _classify(lenet, path):
    x = load_image(path)
    return lenet.predict(model_view(x.unsqueeze(0), lenet.input_size))


def test_attack_writes_files_and_fools_from_disk(cli, lenet, digit_png, tmp_path):
    out = tmp_path / "out"
    r = cli("attack", *digit_png, "--model", "lenet-mnist", "--out", out, "--steps", "40")
    assert r.exit_code == 0, r.stderr
    assert "original" in r.stdout and "seven.png" in r.stdout  # the table
    for path in digit_png:
        stem = path.stem
        for suffix in ("adv.png", "noise.png", "panel.png", "json"):
            assert (out / f"{stem}.{suffix}").is_file()
        rec = json.loads((out / f"{stem}.json").read_text())
        assert set(rec) >= {"model", "method", "original", "adversarial", "target", "success", "l2", "linf", "steps",
                            "seconds"}
        assert rec["method"] == "auto" and rec["success"] is True and rec["target"] is None
        assert Image.open(out / f"{stem}.adv.png").size == Image.open(path).size
        label, conf = _classify(lenet, out / f"{stem}.adv.png")
        assert int(label) == rec["adversarial"]["label"] != rec["original"]["label"]
        assert abs(float(conf) - rec["adversarial"]["confidence"]) < 1e-4
        adv, orig = load_image(out / f"{stem}.adv.png"), load_image(path)
        assert abs(float((adv - orig).norm()) - rec["l2"]) < 1e-3
        assert rec["l2"] < 4.0  # imperceptible-ish on a 28x28 digit


def test_targeted_by_name_and_json(cli, lenet, digit_png, tmp_path):
    r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--target", "3", "--method", "pgd", "--eps", "0.3",
            "--steps", "20", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[0])
    assert rec["target"]["label"] == 3 and rec["success"] and rec["adversarial"]["label"] == 3
    assert rec["linf"] <= 0.3 + 1e-6
    assert int(_classify(lenet, tmp_path / "seven.adv.png")[0]) == 3


def test_large_odd_images_are_attacked_at_their_resolution(cli, lenet, mnist_batch, tmp_path):
    x, _ = mnist_batch
    arr = (x[1, 0].numpy() * 255).astype(np.uint8)
    big = Image.fromarray(arr).resize((42, 35), Image.BILINEAR)
    rgba = big.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(tmp_path / "rgba.png")
    Image.fromarray((np.asarray(big).astype(np.uint16) * 257)).save(tmp_path / "deep.png")  # 16-bit gray
    big.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.new("L", (1, 1), 200).save(tmp_path / "dot.png")
    files = [tmp_path / n for n in ("rgba.png", "deep.png", "cmyk.jpg", "dot.png")]
    r = cli("attack", *files, "--model", "lenet-mnist", "--out", tmp_path / "o", "--steps", "20", "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(recs) == 4
    for f, rec in zip(files, recs):
        assert Image.open(tmp_path / "o" / f"{f.stem}.adv.png").size == Image.open(f).size
        assert rec["success"], rec
        assert int(_classify(lenet, tmp_path / "o" / f"{f.stem}.adv.png")[0]) == rec["adversarial"]["label"]


def test_evaluation_mode(cli, tmp_path):
    r = cli("attack", "--dataset", "mnist", "--subset", "40", "--model", "lenet-mnist", "--method", "pgd",
            "--eps", "0.2", "--steps", "10", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["n"] == 40 and s["clean_accuracy"] > 0.9 and s["success_rate"] > 0.8
    assert s["robust_accuracy"] < 0.2 and s["median_linf"] <= 0.2 + 1e-6
    assert (tmp_path / "eval-mnist-pgd-linf-eps0.2-steps10-n40.json").is_file()  # its settings in the name: no overwrites
    r = cli("attack", "--dataset", "mnist", "--subset", "20", "--model", "lenet-mnist", "--method", "fmn", "--norm",
            "linf", "--eps", "0.1", "--steps", "30", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "robust accuracy" in r.stdout and "median Linf" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--eps", "-0.1", "--method", "pgd"], "eps"),
    (["--method", "pgd"], "eps"),
    (["--target", "cat"], "unknown class"),
    (["--target", "12"], "out of range"),
    (["--method", "magic"], "magic"),
    (["--method", "deepfool", "--norm", "l1"], "norm"),
    (["--steps", "0"], "steps"),
    (["--method", "pgd", "--norm", "l1", "--eps", "1"], "attack pgd: norm"),
    (["--method", "ddn", "--eps", "2"], "robust accuracy"),  # accepted, then ignored, before
    (["--norm", "l1", "--eps", "2"], "changes nothing"),
    (["--method", "fgsm", "--eps", "0.1", "--steps", "5"], "fgsm takes one step"),
    (["--batch-size", "3", "--data-dir", "."], "--batch-size, --data-dir only apply with --dataset"),
    (["--method", "pgd", "--eps", "5"], "allows any image"),  # the same as --eps 1, before
])
def test_bad_options_fail_with_one_line(cli, one_line_error, digit_png, tmp_path, args, fragment):
    out = tmp_path / "out"
    r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--out", out, *args)
    one_line_error(r, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_broken_inputs_fail_and_write_nothing(cli, one_line_error, digit_png, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    one_line_error(cli("attack", digit_png[0], bad, "--model", "lenet-mnist", "--out", out), "broken.png")
    assert not out.exists() or not any(out.iterdir())
    one_line_error(cli("attack", tmp_path / "missing.png", "--model", "lenet-mnist", "--out", out), "no such file")
    one_line_error(cli("attack", "--model", "lenet-mnist", "--out", out), "image")
    one_line_error(cli("attack", digit_png[0], "--dataset", "mnist", "--model", "lenet-mnist"), "one of the two")
    one_line_error(cli("attack", digit_png[0], "--model", "no-such-model", "--out", out), "no-such-model")
    assert not out.exists() or not any(out.iterdir())


def test_train_with_pgd_adversarial_training(cli, tmp_path):
    out = tmp_path / "adv.pt"
    r = cli("train", "--model", "lenet", "--dataset", "mnist", "--subset", "64", "--epochs", "1", "--adv-method",
            "pgd", "--adv-eps", "0.3", "--adv-steps", "2", "--adv-norm", "linf", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["adversarial"] == {"method": "pgd", "eps": 0.3, "steps": 2, "norm": "linf"}


def test_failed_attack_is_reported_not_an_error(cli, digit_png, tmp_path):
    r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--method", "fgsm", "--eps", "0.004", "--out", tmp_path,
            "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[0])
    assert rec["success"] is False and rec["adversarial"]["label"] == rec["original"]["label"]
    assert rec["linf"] <= 0.004 + 1e-6 and (tmp_path / "seven.adv.png").is_file()
    r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--method", "fgsm", "--eps", "0.004", "--out", tmp_path)
    assert "NO" in r.stdout


def test_targeted_evaluation_counts_the_targets_own_images_as_robust(cli, tmp_path):
    """A targeted run does not attack images of the target class: those classified correctly stay
    robust. With an ε too small to do anything, robust accuracy equals clean accuracy."""
    r = cli("attack", "--dataset", "mnist", "--subset", "50", "--model", "lenet-mnist", "--method", "pgd",
            "--eps", "0.0001", "--steps", "2", "--target", "3", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["success_rate"] == 0 and s["attacked"] < 50 * s["clean_accuracy"]
    assert s["robust_accuracy"] == s["clean_accuracy"]
    assert (tmp_path / "eval-mnist-pgd-linf-eps0.0001-steps2-target3-n50.json").is_file()


def test_evaluation_refuses_a_dataset_of_other_classes(cli, one_line_error, tmp_path):
    """lenet-mnist's digits are not Fashion-MNIST's clothes (same image size, same count): an
    evaluation would report nonsense accuracy, so it is refused; a folder dataset is checked too."""
    from foolkit.data import check_classes
    from foolkit.errors import FoolkitError

    check_classes([str(i) for i in range(10)], [str(i) for i in range(10)] + ["fooling"], "mnist", "retrained")
    with pytest.raises(FoolkitError, match="class 0 is 't-shirt' in the data but '0' in the model"):
        check_classes(["t-shirt", "trouser"], ["0", "1"], "fashion-mnist", "lenet-mnist")
    folder = tmp_path / "data"
    for k in range(12):
        (folder / f"c{k:02d}").mkdir(parents=True)
        Image.new("L", (28, 28), 20 * k).save(folder / f"c{k:02d}" / "a.png")
        Image.new("L", (28, 28), 20 * k + 5).save(folder / f"c{k:02d}" / "b.png")
    one_line_error(cli("attack", "--dataset", folder, "--model", "lenet-mnist", "--method", "pgd", "--eps", "0.1",
                       "--out", tmp_path / "o"), "12 classes", "only 10")


def test_inputs_with_one_name_do_not_overwrite_each_other(cli, digit_png, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for d in (a, b):
        (d / "x.png").write_bytes(digit_png[0].read_bytes())
    (a / "x-1.png").write_bytes(digit_png[1].read_bytes())
    r = cli("attack", a / "x.png", b / "x.png", a / "x-1.png", "--model", "lenet-mnist", "--steps", "10",
            "--out", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.stderr
    images = [json.loads((tmp_path / "o" / f"{stem}.json").read_text())["image"] for stem in ("x", "x-1", "x-1-1")]
    assert images == [str(a / "x.png"), str(b / "x.png"), str(a / "x-1.png")]
    r = cli("attack", a / "x.png", b / "x.png", "--model", "lenet-mnist", "--steps", "10", "--out", tmp_path / "t")
    rows = [ln.split()[:3] for ln in r.stdout.splitlines()[2:]]  # the table tells the two x.png apart
    assert rows[0][0] == "x.png" and rows[0][1] != "->" and rows[1][:3] == ["x.png", "->", "x-1"]


def test_an_off_grid_input_reports_the_png_written(cli, lenet, mnist_batch, tmp_path):
    """A 16-bit input whose ε-ball holds no 8-bit grid point: the record's norms are those of
    the PNG written (beyond ε here), and it says so, rather than the off-grid result's."""
    x, _ = mnist_batch
    arr = (x[2, 0].numpy() * 65535 * 0.998 + 40).clip(0, 65535).astype(np.uint16)  # off the 8-bit grid
    Image.fromarray(arr).resize((56, 56), Image.BILINEAR).save(tmp_path / "deep.png")
    r = cli("attack", tmp_path / "deep.png", "--model", "lenet-mnist", "--method", "pgd", "--norm", "l2", "--eps",
            "0.1", "--steps", "5", "--confidence", "0", "--out", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[0])
    on_disk = load_image(tmp_path / "o" / "deep.adv.png") - load_image(tmp_path / "deep.png")
    assert abs(float(on_disk.norm()) - rec["l2"]) < 1e-4
    assert any("off the 8-bit grid" in n for n in rec["notes"]) and any("exceeds --eps" in n for n in rec["notes"])
    assert "exceeds --eps" in r.stderr


def test_a_target_the_image_already_has_is_said(cli, digit_png, lenet, tmp_path):
    label = int(_classify(lenet, digit_png[0])[0])
    r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--target", str(label), "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[0])
    assert rec["l2"] == 0 and "already classified as the target" in rec["notes"][0]


def test_noise_amplification_caption():
    from foolkit.commands.attack import _amplification

    assert _amplification(0.01) == "50" and _amplification(0.25) == "2" and _amplification(1.0) == "0.5"


def test_ctrl_c_says_what_was_written(cli, one_line_error, digit_png, tmp_path, interrupt_on_call):
    import foolkit.commands.attack as attack_cmd

    interrupt_on_call(attack_cmd, "_attack_one")  # Ctrl-C during the second image
    r = cli("attack", *digit_png, "--model", "lenet-mnist", "--steps", "10", "--out", tmp_path / "o")
    one_line_error(r, "interrupted after 1 of 2 images", str(tmp_path / "o"))
    assert r.exit_code == 130 and "seven.png" in r.stdout  # the finished image's row
    assert (tmp_path / "o" / "seven.json").is_file() and not (tmp_path / "o" / "other.json").exists()


def test_the_full_resolution_classifier_lives_on_the_models_device(lenet):
    """Image mode wraps the model; the wrapper's own buffers must follow it (checked on the meta
    device, which enforces device agreement as CUDA does)."""
    import copy

    from foolkit.commands.attack import full_resolution_classifier

    model = copy.deepcopy(lenet).to("meta")
    clf = full_resolution_classifier(model, 1, 56, 56)
    assert clf(torch.zeros(2, 1, 56, 56, device="meta")).shape == (2, 10)


def test_evaluation_summaries_of_other_settings_or_folders_do_not_overwrite_each_other(tmp_path):
    from foolkit.commands.attack import _eval_name

    names = {_eval_name("mnist", "pgd", "linf", 0.1, None, 0.0, 30),
             _eval_name("mnist", "pgd", "linf", 0.1, None, 0.0, 30, steps=40),
             _eval_name("mnist", "pgd", "linf", 0.1, None, 0.0, 30, seed=1)}
    for d in ("a/fds", "b/fds"):
        (tmp_path / d).mkdir(parents=True)
        names.add(_eval_name(f"folder:{tmp_path / d}", "pgd", "linf", 0.1, None, 0.0, 30))
    assert len(names) == 5 and not any(":" in n for n in names)


def test_ctrl_c_in_an_evaluation_keeps_the_batches_done(cli, one_line_error, lenet, tmp_path, interrupt_on_call,
                                                       monkeypatch):
    from foolkit.attacks.base import Attack
    from foolkit.data import load_dataset

    interrupt_on_call(Attack, "__call__")  # Ctrl-C during the second batch
    out = tmp_path / "o"
    r = cli("attack", "--dataset", "mnist", "--subset", "100", "--batch-size", "40", "--model", "lenet-mnist",
            "--method", "fgsm", "--eps", "0.2", "--out", out, "--json")
    one_line_error(r, "interrupted after 40 of 100 images", ".partial.json")
    assert r.exit_code == 130
    (partial,) = out.glob("*.json")  # no whole-run summary beside it
    assert partial.name.endswith(".partial.json")
    summary = json.loads(partial.read_text())
    assert json.loads(r.stdout) == summary
    assert summary["interrupted"] and summary["n"] == 40 and summary["of"] == 100
    ds = load_dataset("mnist", "test", subset=100, seed=0)  # oracle: the model on the same 40 digits,
    first = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:40]  # drawn in the seed's order
    x = ds.x[first].float() / 255
    assert summary["clean_accuracy"] == pytest.approx(float((lenet.predict(x)[0] == ds.y[first]).double().mean()))
    assert summary["labels_covered"] == list(range(10))  # a fair sample, not the first classes of a sorted set
    monkeypatch.undo()  # the same command run to the end replaces the partial summary
    r = cli("attack", "--dataset", "mnist", "--subset", "100", "--batch-size", "40", "--model", "lenet-mnist",
            "--method", "fgsm", "--eps", "0.2", "--out", out, "--json")
    assert r.exit_code == 0 and [p.name for p in out.glob("*.json")] == [partial.name.replace(".partial", "")]


def test_the_l1_table_shows_the_l1_distance(cli, digit_png, tmp_path):
    r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--norm", "l1", "--steps", "20", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    head, _, row = r.stdout.splitlines()[:3]
    rec = json.loads((tmp_path / "seven.json").read_text())
    assert head.split()[-4:] == ["L1", "L2", "Linf", "sec"] and f"{rec['l1']:.4f}" in row.split()


def test_robust_accuracy_is_accuracy_on_the_adversarials_whatever_target_or_confidence(cli, lenet, tmp_path):
    """Oracle: the model's accuracy on FGSM's images, computed here. FGSM ignores --confidence and
    --target changes which images it makes; neither may turn a misclassified image into a robust one."""
    from foolkit.attacks import make_attack
    from foolkit.data import load_dataset

    ds = load_dataset("mnist", "test", subset=60, seed=0)
    x, y = ds.x.float() / 255, ds.y
    for extra, target in (([], None), (["--confidence", "0.99"], None), (["--target", "3"], 3)):
        r = cli("attack", "--dataset", "mnist", "--subset", "60", "--model", "lenet-mnist", "--method", "fgsm",
                "--eps", "0.15", *extra, "--out", tmp_path, "--json")
        assert r.exit_code == 0, r.stderr
        res = make_attack("fgsm", eps=0.15)(lenet, x, y, target=target)
        oracle = float(((res.labels_before == y) & (res.labels_after == y)).float().mean())
        assert json.loads(r.stdout)["robust_accuracy"] == pytest.approx(oracle), extra


def test_table_cells_are_padded_by_terminal_columns():
    from foolkit.commands.common import cell

    assert cell("seven 七.png", 14) == "seven 七.png  "  # 七 takes two columns: 12 in all
    assert cell("七" * 20, 7) == "七七七 " and cell("ab", 4) == "ab  "


@pytest.mark.parametrize("extra", [["--target", "3"], ["--confidence", "0.9"]])
def test_robust_accuracy_of_a_minimum_norm_search_is_untargeted_at_the_boundary(cli, one_line_error, tmp_path, extra):
    """A targeted or confident search finds larger perturbations: robust accuracy at ε rose with them."""
    one_line_error(cli("attack", "--dataset", "mnist", "--subset", "20", "--model", "lenet-mnist", "--method", "ddn",
                       "--eps", "1", *extra, "--out", tmp_path), "smallest untargeted mistake")
    assert not any(tmp_path.iterdir())


def test_an_unwritable_out_is_refused_before_any_attack(cli, one_line_error, digit_png, tmp_path, monkeypatch):
    """A file on the --out path is the request's fault (exit 2); a folder the machine will not let
    us write in is the machine's (exit 1). Either way before the evaluation, not after it."""
    (tmp_path / "afile").write_text("x")
    for args in ((digit_png[0],), ("--dataset", "mnist", "--subset", "10")):
        r = cli("attack", *args, "--model", "lenet-mnist", "--out", tmp_path / "afile" / "sub")
        one_line_error(r, "afile is a file, not a folder")
        assert r.exit_code == 2
    monkeypatch.setattr("foolkit.commands.common.os.access", lambda path, mode: False)  # (root may write anywhere)
    r = cli("attack", "--dataset", "mnist", "--subset", "10", "--model", "lenet-mnist", "--out", tmp_path / "ro")
    one_line_error(r, "read-only or not ours to write in")
    assert r.exit_code == 1 and not (tmp_path / "ro").exists()


def test_the_table_is_printed_before_the_summary_is_written(cli, tmp_path, monkeypatch):
    """A write that fails after the work (a disk filling up) still shows the figures."""
    def full_disk(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("foolkit.runs.atomic_write_json", full_disk)
    r = cli("attack", "--dataset", "mnist", "--subset", "10", "--model", "lenet-mnist", "--method", "fgsm",
            "--eps", "0.1", "--out", tmp_path)
    assert r.exit_code == 1 and "robust accuracy" in r.stdout and "No space left" in r.stderr


def test_an_images_four_outputs_are_written_all_or_none(cli, digit_png, tmp_path):
    """adv, noise, panel and json describe each other: a failure writing one (here the json's
    place is taken by a folder) leaves none of them, and no temporary files."""
    stem = Path(digit_png[0]).stem
    for taken in (f"{stem}.json", f"{stem}.adv.png"):  # renamed last, and first
        out = tmp_path / taken
        (out / taken).mkdir(parents=True)
        r = cli("attack", digit_png[0], "--model", "lenet-mnist", "--out", out)
        assert r.exit_code == 2 and r.stderr.splitlines() == [  # what was asked, as for a file on the path
            f"foolkit: error: cannot write {out / taken}: a folder is in its place"]
        assert sorted(p.name for p in out.iterdir()) == [taken]


def test_evaluation_names_keep_every_digit_of_eps_and_confidence() -> None:
    from foolkit.commands.attack import _eval_name

    a = _eval_name("mnist", "pgd", "linf", 8 / 255, None, 0.0, 100)
    b = _eval_name("mnist", "pgd", "linf", 0.0313725, None, 0.0, 100)
    assert a != b and _eval_name("mnist", "pgd", "linf", 0.2, None, 0.0, 40) == "eval-mnist-pgd-linf-eps0.2-n40.json"
    assert _eval_name("mnist", "ddn", "l2", None, None, 0.9999999, None) != _eval_name("mnist", "ddn", "l2", None,
                                                                                       None, 0.99999999, None)


def test_an_animation_is_attacked_and_classified_by_its_first_frame_and_says_so(cli, lenet, mnist_batch, tmp_path):
    x, _ = mnist_batch
    frames = [Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)) for i in (0, 5)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r = cli("classify", tmp_path / "anim.gif", "--model", "lenet-mnist", "--json")
    assert r.exit_code == 0 and "anim.gif: it has 2 frames; the first is used" in r.stderr
    first = int(lenet.predict(x[:1])[0][0])
    assert json.loads(r.stdout)["top"][0]["label"] == first
    r = cli("attack", tmp_path / "anim.gif", "--model", "lenet-mnist", "--steps", "10", "--out", tmp_path / "o",
            "--json")
    assert r.exit_code == 0 and "it has 2 frames; the first is used" in r.stderr
    rec = json.loads(r.stdout)
    assert rec["original"]["label"] == first and rec["notes"] == ["it has 2 frames; the first is used"]
    assert Image.open(tmp_path / "o" / "anim.adv.png").size == (28, 28)
