"""The CLI: classify, models, datasets, train — output formats and one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from foolkit.images import save_image

CHELSEA = Path(__import__("skimage").__file__).parent / "data" / "chelsea.png"


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, mnist_test):
    d = tmp_path_factory.mktemp("digits")
    paths = []
    for i in range(3):
        idx = int((mnist_test.y == i + 3).nonzero()[0])
        paths.append(save_image(mnist_test.images()[idx], d / f"digit{i + 3}.png"))
    return paths


def test_classify_json_lines(cli, digit_files):
    r = cli("classify", *digit_files, "--model", "lenet-mnist", "--top", "3", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    for i, obj in enumerate(lines):
        assert obj["image"] == str(digit_files[i]) and obj["model"] == "lenet-mnist"
        assert len(obj["top"]) == 3 and obj["top"][0]["label"] == i + 3 and obj["top"][0]["name"] == str(i + 3)
        confs = [t["confidence"] for t in obj["top"]]
        assert confs == sorted(confs, reverse=True) and 0 < sum(confs) <= 1.0001
    r = cli("classify", digit_files[0], "--model", "lenet-mnist", "--top", "20", "--device", "cpu")
    assert r.exit_code == 0 and "has 10 classes: showing all of them, not 20" in r.stderr
    assert [ln.split(".")[0].strip() for ln in r.stdout.splitlines()[1:]] == [str(i) for i in range(1, 11)]


def test_classify_table_and_a_photo_through_an_imagenet_net(cli, tmp_path):
    import torchvision

    weights = tmp_path / "sq.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights)
    r = cli("classify", CHELSEA, "--model", "squeezenet1_1", "--weights", weights, "-k", "2")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(str(CHELSEA)) and len(lines) == 3 and lines[1].strip().startswith("1.")
    # a colour photo into the gray digit model is converted, not refused
    r = cli("classify", CHELSEA, "--model", "lenet-mnist", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["top"]) == 5


@pytest.mark.parametrize("case", ["missing", "directory", "not-image", "unknown-model", "offline", "bad-top", "bad-device"])
def test_classify_errors_are_one_line(cli, one_line_error, tmp_path, digit_files, case):
    args = [str(digit_files[0]), "--model", "lenet-mnist"]
    frag = ""
    if case == "missing":
        args[0], frag = str(tmp_path / "nope.png"), "no such file"
    elif case == "directory":
        args[0], frag = str(tmp_path), "directory"
    elif case == "not-image":
        (tmp_path / "x.png").write_text("hello")
        args[0], frag = str(tmp_path / "x.png"), "not a readable image"
    elif case == "unknown-model":
        args[2], frag = "lenet-imagenet", "unknown model"
    elif case == "offline":
        args[2], frag = "resnet50", "--weights"
    elif case == "bad-top":
        args += ["--top", "0"]
        frag = "top"
    elif case == "bad-device":
        args += ["--device", "tpu"]
        frag = "device"
    one_line_error(cli("classify", *args), frag)


def test_ctrl_c_in_a_command_that_saves_nothing_is_one_line(cli, digit_files, interrupt_on_call):
    # click answers a KeyboardInterrupt with a blank line on stderr before Abort; ours is one line, exit 130
    import foolkit.models

    interrupt_on_call(foolkit.models, "load_model", n=1)
    r = cli("classify", *digit_files, "--model", "lenet-mnist")
    assert (r.exit_code, r.stderr, r.stdout) == (130, "foolkit: interrupted\n", "")


def test_models_and_datasets_listings(cli):
    r = cli("models")
    assert r.exit_code == 0 and "vit_b_16" in r.stdout and "lenet-fashion" in r.stdout
    rows = [json.loads(line) for line in cli("models", "--json").stdout.splitlines()]
    lenet = next(m for m in rows if m["name"] == "lenet-mnist")
    assert lenet["offline"] is True and lenet["num_classes"] == 10 and lenet["input_size"] == [1, 28, 28]
    assert cli("datasets", "--data-dir", "/no/such/folder").exit_code == 2  # it listed as if none was given
    r = cli("datasets", "--json")
    names = {json.loads(line)["name"]: json.loads(line) for line in r.stdout.splitlines()}
    assert names["mnist"]["available"] and not names["cifar10"]["available"]


def test_train_writes_a_model_the_registry_reads_back(cli, tmp_path):
    out = tmp_path / "tiny.pt"
    r = cli("train", "--model", "lenet", "--dataset", "mnist", "--subset", "300", "--epochs", "2", "--out", out,
            "--json", "--device", "cpu", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    epochs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    logged = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert logged == epochs
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"] == "lenet" and meta["train_size"] == 300 and "foolkit train" in meta["command"]
    assert not out.with_suffix(".ckpt").exists()
    from foolkit.models import load_model

    model = load_model(out, device="cpu")
    assert model.num_classes == 10 and model.meta["test_accuracy"] == epochs[-1]["test_accuracy"]


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(cli, one_line_error, tmp_path, monkeypatch):
    # torch.save reports a failed write as a RuntimeError whose context is the OSError
    import errno

    import foolkit.runs

    def full(obj, f):
        f.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 106496 vs 106392")

    monkeypatch.setattr(foolkit.runs.torch, "save", full)
    out = tmp_path / "m.pt"
    r = cli("train", "--model", "lenet", "--dataset", "mnist", "--subset", "100", "--epochs", "1", "--out", out)
    lines = r.stderr.splitlines()  # (the data's offline notice came first; off a terminal, no progress bar)
    assert r.exit_code == 1 and "Traceback" not in r.stderr and lines[:-1] == [ln for ln in lines if "offline" in ln]
    assert lines[-1] == f"foolkit: error: No space left on device: {out.with_suffix('.ckpt')}"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_train_refuses_to_overwrite_and_bad_values(cli, one_line_error, tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    one_line_error(cli("train", "--model", "lenet", "--dataset", "mnist", "--epochs", "1", "--out", out), "--force")
    assert out.read_bytes() == b"precious"
    one_line_error(cli("train", "--model", "lenet", "--dataset", "mnist", "--epochs", "-1", "--out", tmp_path / "a"), "epochs")
    one_line_error(cli("train", "--model", "resnet-9", "--dataset", "mnist", "--out", tmp_path / "b"), "architecture")
    one_line_error(cli("train", "--model", "lenet", "--dataset", "svhn", "--out", tmp_path / "c"), "unknown dataset")
    one_line_error(cli("train", "--model", "lenet", "--dataset", "mnist", "--out", tmp_path / "d", "--resume"), "resume")
    assert not any(p.name.startswith(("a", "b", "c", "d")) for p in tmp_path.iterdir())


def test_an_oversized_subset_is_said_once_the_checks_pass(cli, one_line_error, mnist_test, tmp_path):
    """More examples asked for than the data has: all of them are used, one line on stderr says
    so, and a command that fails anyway still prints only its error."""
    n = len(mnist_test)
    r = cli("attack", "--dataset", "mnist", "--subset", str(n + 1), "--model", "lenet-mnist", "--method", "fgsm",
            "--eps", "0.1", "--out", tmp_path / "eval")
    assert r.exit_code == 0, r.stderr
    assert f"mnist: asked for {n + 1} test examples, {n} available: using all {n}" in r.stderr
    assert f"({n} test images)" in r.stdout
    from foolkit.images import save_image

    for cls in ("cats", "dogs"):  # colour images that lenet-mnist cannot take
        for i in range(3):
            save_image(torch.rand(3, 12, 10), tmp_path / "set" / cls / f"{i}.png")
    one_line_error(cli("attack", "--dataset", tmp_path / "set", "--subset", "500", "--model", "lenet-mnist",
                       "--method", "fgsm", "--eps", "0.1", "--out", tmp_path / "e2"), "images but model")
    from foolkit.data import load_dataset

    train_n = len(load_dataset("mnist", "train", quiet=True))
    out = tmp_path / "m.pt"
    r = cli("train", "--model", "lenet", "--dataset", "mnist", "--subset", str(train_n + 5), "--epochs", "1",
            "--batch-size", "500", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert f"asked for {train_n + 5} train examples, {train_n} available" in r.stderr
    assert json.loads(out.with_suffix(".json").read_text())["train_size"] == train_n


def test_fit_resume_equals_uninterrupted_run(mnist_test):
    """A run stopped after 2 epochs and resumed to 4 ends with the same weights as 4 epochs straight."""
    from foolkit.models import new_model
    from foolkit.models.training import TrainConfig, fit

    sub = mnist_test.subset(120, seed=0)
    x, y = sub.images(), sub.y

    def fresh():
        torch.manual_seed(0)
        return new_model("lenet", classes=sub.classes, input_size=(1, 28, 28), mean=[0.13], std=[0.3], dropout=0.3)

    cfg = lambda epochs: TrainConfig(epochs=epochs, batch_size=32, augment="crop", seed=5)  # noqa: E731
    straight = fresh()
    h_straight = fit(straight, x, y, cfg(4), progress=False)
    ckpt = Path(os.environ["FOOLKIT_CACHE"]) / "resume.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    interrupted = fresh()
    fit(interrupted, x, y, cfg(2), checkpoint=ckpt, progress=False)
    resumed = fresh()  # a new process: only the checkpoint survives
    h_resumed = fit(resumed, x, y, cfg(4), checkpoint=ckpt, resume=True, progress=False)
    assert [h["epoch"] for h in h_resumed] == [1, 2, 3, 4]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert h_resumed[-1]["train_loss"] == pytest.approx(h_straight[-1]["train_loss"])
    # early stopping without a test set never triggers, resumed or not (epochs without a test don't count)
    stop = lambda epochs: TrainConfig(epochs=epochs, batch_size=32, seed=5, early_stopping=1)  # noqa: E731
    fit(fresh(), x, y, stop(2), checkpoint=ckpt.with_name("stop.ckpt"), progress=False)
    h = fit(fresh(), x, y, stop(4), checkpoint=ckpt.with_name("stop.ckpt"), resume=True, progress=False)
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]


def test_unlanded_or_bad_commands_fail_in_one_line(cli, one_line_error):
    one_line_error(cli("frobnicate"), "no such command")
    r = cli("--help")
    assert r.exit_code == 0 and "classify" in r.stdout


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_command_line_is_still_importing_is_one_line(sig, tmp_path):
    # the console script's entry point catches it before torch and the commands are imported
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-c", "import sys; from foolkit.entry import main; sys.exit(main())",
                          "evolve", "--model", "lenet-mnist", "--out", str(tmp_path / "run")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # importing torch takes longer than this
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err, err


def test_the_classify_table_lines_up_wide_class_names(cli, tmp_path):
    """A CJK character takes two terminal columns: the index column stays in one place."""
    import unicodedata

    from foolkit.models import new_model, save_model

    torch.manual_seed(0)
    names = ["猫猫猫", "dog", "ab"]
    model = new_model("lenet", classes=names, input_size=(1, 28, 28), mean=[0.1], std=[0.3])
    path = save_model(model, tmp_path / "wide", arch="lenet")
    save_image(torch.rand(1, 28, 28), tmp_path / "x.png")
    r = cli("classify", tmp_path / "x.png", "-m", path, "--top", "3")
    assert r.exit_code == 0, r.stderr

    def columns(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)

    rows = [line for line in r.stdout.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert len(rows) == 3 and len({columns(line) for line in rows}) == 1, r.stdout  # fixed-width fields
