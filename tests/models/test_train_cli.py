"""`foolkit train`: same seed same weights, resume checks, unfinished runs, Ctrl-C, bad values, output paths."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import foolkit.commands.train as train_cmd
from foolkit.errors import FoolkitError

TINY = ("--model", "lenet", "--dataset", "mnist", "--subset", "100", "--batch-size", "50", "--device", "cpu")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def log_metrics(path: Path) -> list[dict[str, Any]]:
    """The log's records without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def assert_ends_in_one_line(result: Any, *fragments: str) -> None:
    """Like the one-line-error contract, for a failure after the data were loaded or training
    began: once the (self-erasing) progress bar is gone, the output ends in one ``foolkit: error:``
    line, after at most foolkit's notices (such as the offline-data one)."""
    assert result.exit_code != 0 and "Traceback" not in result.stderr, result
    lines = [ln for ln in result.stderr.split("\r")[-1].splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("foolkit: error: "), result.stderr
    assert sum("error" in ln for ln in lines) == 1 and all(ln.startswith("foolkit: ") for ln in lines), result.stderr
    for frag in fragments:
        assert frag.lower() in lines[-1].lower(), f"{frag!r} not in {lines[-1]!r}"


@contextlib.contextmanager
def interrupted_after(epochs: int) -> Iterator[None]:
    """Within the block, `foolkit train --json` gets a Ctrl-C right after its ``epochs``-th epoch
    was checkpointed and logged (as a kill between two epochs would)."""
    seen = []

    def emit(obj: Any) -> None:
        seen.append(obj)
        if len(seen) == epochs:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_cmd, "emit_json", emit)
        yield


def test_same_seed_same_weights_and_the_global_rng_is_left_alone(cli, tmp_path):
    runs = []
    for i, noise in enumerate((1, 2)):
        torch.manual_seed(noise)  # the caller's global RNG differs between the runs...
        before = torch.get_rng_state()
        out = tmp_path / f"r{i}.pt"
        r = cli("train", *TINY, "--epochs", "1", "--arch-opt", "dropout=0.3", "--seed", "4", "--out", out)
        assert r.exit_code == 0, r.stderr
        assert torch.equal(torch.get_rng_state(), before)  # ...and is not touched by the command
        runs.append(out)
    assert same_weights(*runs)  # ...yet the seed alone decides the result
    assert log_metrics(runs[0].with_suffix(".log.jsonl")) == log_metrics(runs[1].with_suffix(".log.jsonl"))
    other = tmp_path / "other.pt"
    assert cli("train", *TINY, "--epochs", "1", "--arch-opt", "dropout=0.3", "--seed", "5", "--out", other).exit_code == 0
    assert not same_weights(runs[0], other)


def test_ctrl_c_says_what_was_saved_and_a_resumed_run_equals_an_uninterrupted_one(cli, one_line_error, tmp_path):
    straight = tmp_path / "straight.pt"
    assert cli("train", *TINY, "--epochs", "3", "--out", straight).exit_code == 0
    out = tmp_path / "k3.pt"
    with interrupted_after(1):
        r = cli("train", *TINY, "--epochs", "3", "--out", out, "--json")
    assert r.exit_code == 130
    assert_ends_in_one_line(r, "interrupted during epoch 2 of 3", "k3.ckpt", "1 finished epoch",
                            f"continue with `foolkit train --out {out} --resume`")  # not with --force or the rest
    assert out.with_suffix(".ckpt").exists() and not out.exists()
    # the log may miss the last checkpointed epoch (a kill between the two writes): the checkpoint wins
    out.with_suffix(".log.jsonl").write_text("")
    r = cli("train", *TINY, "--epochs", "3", "--out", out, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["epoch"] for line in r.stdout.splitlines()] == [2, 3]
    assert same_weights(out, straight)
    assert log_metrics(out.with_suffix(".log.jsonl")) == log_metrics(straight.with_suffix(".log.jsonl"))
    assert not out.with_suffix(".ckpt").exists()


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(cli, one_line_error, tmp_path, monkeypatch):
    def fit(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("foolkit.models.training.fit", fit)
    r = cli("train", *TINY, "--epochs", "2", "--out", tmp_path / "m.pt")
    assert r.exit_code == 130
    one_line_error(r, "before the first checkpoint", "nothing was saved")


def test_an_interrupted_force_keeps_the_finished_models_files(cli, tmp_path, monkeypatch):
    out = tmp_path / "f.pt"
    assert cli("train", *TINY, "--epochs", "1", "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"f.pt", "f.json", "f.log.jsonl"}

    def fit(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("foolkit.models.training.fit", fit)
    assert cli("train", *TINY, "--epochs", "2", "--out", out, "--force").exit_code == 130
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.fixture
def killed_run(cli, tmp_path) -> Path:
    """A 3-epoch run (options TINY, --lr 0.02) that stopped after its first epoch."""
    out = tmp_path / "k3.pt"
    with interrupted_after(1):
        assert cli("train", *KILLED, "--out", out, "--json").exit_code == 130
    return out


KILLED = (*TINY, "--epochs", "3", "--lr", "0.02")


def with_options(args: tuple[str, ...], *change: str) -> list[str]:
    """``args`` with each ``FLAG VALUE`` of ``change`` replacing the flag's value, or added."""
    out = list(args)
    for flag, value in zip(change[::2], change[1::2]):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


@pytest.mark.parametrize("change, named", [
    (("--dataset", "fashion-mnist"), ["--dataset (mnist -> fashion-mnist)"]),
    (("--model", "mlp1x512"), ["--model (lenet -> mlp1x512)"]),
    (("--lr", "0.1", "--seed", "3"), ["--seed (0 -> 3)", "--lr (0.02 -> 0.1)"]),
    (("--arch-opt", "dropout=0.5"), ["--arch-opt (none -> dropout=0.5)"]),
    (("--adv-method", "fgsm"), ["--adv-method (none -> fgsm)"]),
])
def test_resume_refuses_other_settings_in_one_line(cli, one_line_error, killed_run, change, named):
    ckpt = killed_run.with_suffix(".ckpt")
    before = ckpt.read_bytes()
    r = cli("train", *with_options(KILLED, *change), "--out", killed_run, "--resume")
    one_line_error(r, "cannot change", *named, "only --epochs may change")
    assert ckpt.read_bytes() == before and not killed_run.exists()


def test_resume_takes_unspecified_settings_from_the_run_and_may_change_epochs(cli, killed_run, tmp_path):
    # --lr 0.02 and --epochs 3 left out: taken from the checkpoint, not the defaults (0.01, 10)
    r = cli("train", "--model", "lenet", "--dataset", "mnist", "--device", "cpu", "--out", killed_run, "--resume",
            "--json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["epoch"] for line in r.stdout.splitlines()] == [2, 3]
    meta = json.loads(killed_run.with_suffix(".json").read_text())
    assert meta["config"]["lr"] == 0.02 and meta["train_size"] == 100 and meta["epochs"] == 3
    straight = tmp_path / "straight.pt"
    assert cli("train", *KILLED, "--out", straight).exit_code == 0
    assert same_weights(killed_run, straight)


def test_resume_with_more_epochs_and_not_fewer_than_done(cli, one_line_error, killed_run):
    one_line_error(cli("train", *TINY, "--epochs", "0", "--out", killed_run, "--resume"),
                   "already holds 1 epoch;", "--epochs")
    r = cli("train", *TINY, "--epochs", "2", "--out", killed_run, "--resume")
    assert r.exit_code == 0, r.stderr
    assert [rec["epoch"] for rec in log_metrics(killed_run.with_suffix(".log.jsonl"))] == [1, 2]


def test_rerun_without_resume_refuses_an_unfinished_run_and_force_starts_over(cli, one_line_error, killed_run):
    ckpt, log = killed_run.with_suffix(".ckpt"), killed_run.with_suffix(".log.jsonl")
    before = ckpt.read_bytes(), log.read_text()
    r = cli("train", *KILLED, "--out", killed_run)
    one_line_error(r, "k3.ckpt", "unfinished run (1 of 3 epochs done)", "--resume", "--force")
    assert (ckpt.read_bytes(), log.read_text()) == before  # nothing lost
    r = cli("train", *TINY, "--epochs", "1", "--out", killed_run, "--force")
    assert r.exit_code == 0, r.stderr
    assert not ckpt.exists() and len(log.read_text().splitlines()) == 1 and killed_run.exists()


def test_an_old_checkpoint_of_another_model_is_one_line(cli, one_line_error, killed_run):
    """A checkpoint saved before the run settings were recorded: the model mismatch still ends in one line."""
    from foolkit.runs import load_checkpoint, save_checkpoint

    ckpt = killed_run.with_suffix(".ckpt")
    meta, tensors = load_checkpoint(ckpt)
    meta["config"]["extra"] = {}
    save_checkpoint(ckpt, meta=meta, tensors=tensors)
    r = cli("train", *with_options(KILLED, "--model", "mlp1x512"), "--out", killed_run, "--resume")
    assert_ends_in_one_line(r, "was saved by another model")


def edit_checkpoint(ckpt: Path, edit: Any) -> None:
    """Rewrite the checkpoint ``ckpt`` with ``edit(meta)`` applied to its metadata."""
    from foolkit.runs import load_checkpoint, save_checkpoint

    meta, tensors = load_checkpoint(ckpt)
    edit(meta)
    save_checkpoint(ckpt, meta=meta, tensors=tensors)


@pytest.mark.parametrize("split, key, value, fragment", [
    ("train", "fingerprint", "0123456789abcdef", "train data differ"),
    ("train", "n", 99, "train data differ"),
    ("test", "fingerprint", "0123456789abcdef", "test data differ"),
])
def test_resume_refuses_other_data(cli, killed_run, split, key, value, fragment):
    """Same --dataset, but --data-dir finds other files (other content or size): the run must not continue on them."""
    from foolkit.runs import load_checkpoint

    ckpt = killed_run.with_suffix(".ckpt")
    data = load_checkpoint(ckpt)[0]["config"]["extra"]["data"]
    assert data["train"]["n"] == 100 and data["test"]["n"] == 1000 and len(data["classes"]) == 10
    assert len(data["train"]["fingerprint"]) == len(data["test"]["fingerprint"]) == 16

    def edit(meta: dict[str, Any]) -> None:
        meta["config"]["extra"]["data"][split][key] = value
        meta["config"]["extra"]["data"][split]["source"] = "full MNIST"

    edit_checkpoint(ckpt, edit)
    before = ckpt.read_bytes()
    r = cli("train", *KILLED, "--out", killed_run, "--resume")
    assert_ends_in_one_line(r, "cannot resume", "k3.ckpt", fragment, "from full MNIST", "--data-dir")
    assert ckpt.read_bytes() == before and not killed_run.exists()


def test_resume_accepts_the_same_data_recorded_under_another_source(cli, killed_run):
    """Only where the data were read from differs (the source string): the run goes on."""
    def edit(meta: dict[str, Any]) -> None:
        for split in ("train", "test"):
            meta["config"]["extra"]["data"][split]["source"] = "--data-dir (/somewhere/else/mnist)"

    edit_checkpoint(killed_run.with_suffix(".ckpt"), edit)
    r = cli("train", *KILLED, "--out", killed_run, "--resume")
    assert r.exit_code == 0, r.stderr
    assert json.loads(killed_run.with_suffix(".json").read_text())["epochs"] == 3


@pytest.mark.parametrize("change, fragment", [
    ({}, None),  # same size and classes, another source: resumes
    ({"train_size": 99}, "train data differ"),
    ({"classes": [f"c{i}" for i in range(10)]}, "classes differ"),
])
def test_a_checkpoint_from_before_fingerprints_resumes_when_size_and_classes_match(cli, killed_run, change,
                                                                                     fragment):
    ckpt = killed_run.with_suffix(".ckpt")

    def edit(meta: dict[str, Any]) -> None:
        extra = meta["config"]["extra"]
        old = {"source": "--data-dir (/old/place/mnist)", "train_size": 100, "classes": extra["data"]["classes"]}
        extra["data"] = {**old, **change}
        del extra["command"]  # nor did it record the command

    edit_checkpoint(ckpt, edit)
    r = cli("train", *KILLED, "--out", killed_run, "--resume")
    if fragment is None:
        assert r.exit_code == 0, r.stderr
        meta = json.loads(killed_run.with_suffix(".json").read_text())
        assert meta["epochs"] == 3 and meta["command"] is None and len(meta["resumed_with"]) == 1
        assert len(meta["config"]["extra"]["data"]["train"]["fingerprint"]) == 16  # saved the new way from now on
    else:
        assert_ends_in_one_line(r, "cannot resume", fragment, "--data-dir")
        assert ckpt.exists() and not killed_run.exists()


def _write_idx(path: Path, arr: Any) -> None:
    import numpy as np

    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, seed: int, n: int = 120) -> Path:
    """MNIST-format files of ``n`` random training images (and n/3 test ones) in ``root``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for split, count in (("train", n), ("t10k", n // 3)):
        _write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)
    return root


def test_resume_finds_the_same_data_by_another_path_and_refuses_other_data(cli, tmp_path, monkeypatch):
    """--data-dir data/mnist, then $PWD/data, then $FOOLKIT_DATA: one run; other files of the same size: refused."""
    _fake_mnist(tmp_path / "data" / "mnist", seed=1)
    _fake_mnist(tmp_path / "other" / "mnist", seed=2)
    monkeypatch.chdir(tmp_path)
    args = ("--model", "lenet", "--dataset", "mnist", "--subset", "64", "--batch-size", "32", "--epochs", "3",
            "--device", "cpu")
    out = tmp_path / "moved.pt"
    with interrupted_after(1):
        assert cli("train", *args, "--data-dir", "data/mnist", "--out", out, "--json").exit_code == 130
    ckpt = out.with_suffix(".ckpt")
    before = ckpt.read_bytes()
    r = cli("train", "--out", out, "--resume", "--device", "cpu", "--data-dir", tmp_path / "other")
    assert_ends_in_one_line(r, "cannot resume", "train data differ", "--data-dir")
    assert ckpt.read_bytes() == before
    with interrupted_after(1):
        r = cli("train", "--out", out, "--resume", "--device", "cpu", "--data-dir", tmp_path / "data", "--json")
    assert r.exit_code == 130, r.stderr
    monkeypatch.setenv("FOOLKIT_DATA", str(tmp_path / "data"))
    r = cli("train", "--out", out, "--resume", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["epoch"] for line in r.stdout.splitlines()] == [3]
    monkeypatch.delenv("FOOLKIT_DATA")
    straight = tmp_path / "straight.pt"
    assert cli("train", *args, "--data-dir", tmp_path / "data", "--out", straight).exit_code == 0
    assert same_weights(out, straight)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert "--data-dir data/mnist" in meta["command"] and "--resume" not in meta["command"]
    assert len(meta["resumed_with"]) == 2 and all("--resume" in c for c in meta["resumed_with"])
    assert meta["train_size"] == 64 and "$FOOLKIT_DATA" in meta["dataset_source"]


@pytest.mark.parametrize("args, fragment", [
    (("--momentum", "-1"), "momentum"),
    (("--momentum", "nan"), "momentum"),
    (("--weight-decay", "-1"), "weight decay"),
    (("--model", "mlp3x512", "--arch-opt", "dropout=1.5"), "dropout must be a probability in [0, 1)"),
    (("--arch-opt", "dropout=abc"), "dropout must be a probability"),
    (("--model", "mlp3x512", "--arch-opt", "width=0"), "width must be a whole number >= 1"),
    (("--model", "mlp3x512", "--arch-opt", "batchnorm=yes"), "batchnorm must be true or false"),
    (("--model", "small-resnet", "--arch-opt", "n=1.5"), "n must be a whole number >= 1"),
    (("--arch-opt", "depth=3"), "has no option 'depth'"),
    (("--adv-method", "deepfool"), "'fgsm', 'bim', 'pgd'"),
    (("--adv-method", "pgd", "--adv-steps", "0"), "--adv-steps"),
    (("--adv-method", "pgd", "--adv-eps", "nan"), "--adv-eps"),
    (("--subset", "0"), "--subset"),
    (("--adv-eps", "0.1"), "--adv-eps sets adversarial training, which needs --adv-method"),  # ignored, before
    (("--adv-steps", "3", "--adv-norm", "l2"), "--adv-steps and --adv-norm set adversarial"),
    (("--adv-method", "fgsm", "--adv-steps", "5"), "fgsm takes one step"),
    (("--optimizer", "adam", "--momentum", "0.5"), "--momentum is SGD's"),
    (("--resume", "--force"), "pass one of them"),
])
def test_bad_values_fail_in_one_line_before_any_data_or_file(cli, one_line_error, tmp_path, monkeypatch, args,
                                                              fragment):
    monkeypatch.setattr("foolkit.data.load_dataset", lambda *a, **k: pytest.fail("data loaded before the options were checked"))
    one_line_error(cli("train", *with_options(TINY, *args), "--epochs", "1", "--out", tmp_path / "m.pt"), fragment)
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_adversarial_training_methods(cli):
    r = cli("train", "--help")
    assert r.exit_code == 0 and "[fgsm|bim|pgd]" in r.stdout


def test_output_under_a_file_or_onto_a_folder_fails_before_training(cli, one_line_error, tmp_path, monkeypatch):
    monkeypatch.setattr("foolkit.data.load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    (tmp_path / "afile").write_text("x")
    one_line_error(cli("train", *TINY, "--out", tmp_path / "afile" / "deeper" / "t.pt"), "afile is a file, not a folder")
    (tmp_path / "t.pt").mkdir()
    one_line_error(cli("train", *TINY, "--out", tmp_path / "t", "--force"), "t.pt: it is a folder")
    assert (tmp_path / "afile").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "t.pt"]


def test_output_in_new_folders_is_created_when_training_writes(cli, tmp_path):
    out = tmp_path / "new" / "dir" / "t.pt"
    assert cli("train", *TINY, "--epochs", "1", "--out", out).exit_code == 0
    assert out.exists() and out.with_suffix(".json").exists()


def test_check_arch_options_matches_the_builders():
    """Every option the validation table allows is one the architecture's builder accepts."""
    from foolkit.models.archs import ARCH_OPTIONS, ARCHS, build_arch, check_arch_options

    assert ARCH_OPTIONS.keys() == ARCHS.keys()
    samples = {"probability": 0.25, "count": 2, "pieces": 2, "switch": True}
    for name, options in ARCH_OPTIONS.items():
        for key, kind in options.items():
            check_arch_options(name, {key: samples[kind]})
            if name in ("small-inception", "small-alexnet"):
                continue  # slow-ish to build; their keywords are checked on the constructor below
            build_arch(name, in_channels=1, num_classes=10, input_hw=28, **{key: samples[kind]})
    import inspect

    from foolkit.models.archs import SmallAlexNet, SmallInception

    assert set(ARCH_OPTIONS["small-inception"]) <= set(inspect.signature(SmallInception).parameters)
    assert set(ARCH_OPTIONS["small-alexnet"]) <= set(inspect.signature(SmallAlexNet).parameters)
    with pytest.raises(FoolkitError, match="probability"):
        check_arch_options("lenet", {"dropout": True})


@pytest.mark.parametrize("out, expected", [
    ("sfx/mlp-lr0.05", "sfx/mlp-lr0.05.pt"),
    ("sfx/mlp-lr0.05.pt", "sfx/mlp-lr0.05.pt"),
    ("m", "m.pt"),
    ("m.v1.pth", "m.v1.pth.pt"),
])
def test_output_path_appends_pt_and_keeps_dots(out, expected):
    assert train_cmd.output_path(out) == Path(expected)


def test_out_with_a_dot_in_its_name_keeps_the_name(cli, tmp_path, monkeypatch):
    from foolkit.models import load_model

    monkeypatch.chdir(tmp_path)
    args = ("--model", "mlp1x512", "--dataset", "mnist", "--subset", "64", "--epochs", "2", "--lr", "0.05",
            "--device", "cpu", "--out", "sfx/mlp-lr0.05")
    with interrupted_after(1):
        assert cli("train", *args, "--json").exit_code == 130
    assert sorted(p.name for p in (tmp_path / "sfx").iterdir()) == ["mlp-lr0.05.ckpt", "mlp-lr0.05.log.jsonl"]
    r = cli("train", "--out", "sfx/mlp-lr0.05", "--resume")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "sfx").iterdir()) == ["mlp-lr0.05.json", "mlp-lr0.05.log.jsonl",
                                                                    "mlp-lr0.05.pt"]
    model = load_model("sfx/mlp-lr0.05.pt", device="cpu")
    assert model.name == "mlp-lr0.05" and len(model.classes) == 10
    assert load_model("sfx/mlp-lr0.05", device="cpu").name == "mlp-lr0.05"  # the name as --out took it
    assert json.loads((tmp_path / "sfx" / "mlp-lr0.05.json").read_text())["config"]["lr"] == 0.05


@pytest.mark.parametrize("epochs", ["0", "-2"])
def test_epochs_below_one_are_refused_before_any_data_or_file(cli, one_line_error, tmp_path, monkeypatch, epochs):
    monkeypatch.setattr("foolkit.data.load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    one_line_error(cli("train", *TINY, "--epochs", epochs, "--out", tmp_path / "m.pt"),
                   f"--epochs must be at least 1, got {epochs}")
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_offers_force_not_resume(cli, one_line_error, tmp_path):
    out = tmp_path / "done.pt"
    args = ("--model", "lenet", "--dataset", "mnist", "--subset", "64", "--epochs", "1", "--device", "cpu")
    assert cli("train", *args, "--out", out).exit_code == 0
    before = out.read_bytes()
    r = cli("train", *args, "--out", out)
    one_line_error(r, "done.pt exists", "--force to overwrite it", "choose another --out")
    assert "--resume" not in r.stderr
    r = cli("train", *args, "--out", out, "--resume")
    one_line_error(r, "nothing to resume", "done.pt is a finished run", "--force", "choose another --out")
    assert out.read_bytes() == before and not out.with_suffix(".ckpt").exists()


@pytest.mark.parametrize("left_out, named", [
    (("--model",), "missing option --model "),
    (("--dataset",), "missing option --dataset "),
    (("--model", "--dataset"), "missing options --model and --dataset"),
])
def test_a_new_run_without_model_or_dataset_is_one_line(cli, one_line_error, tmp_path, left_out, named):
    args = [a for flag, value in zip(TINY[::2], TINY[1::2]) if flag not in left_out for a in (flag, value)]
    one_line_error(cli("train", *args, "--epochs", "1", "--out", tmp_path / "m.pt"), named, "--resume")
    assert list(tmp_path.iterdir()) == []


def test_resume_needs_only_out_and_keeps_the_original_command(cli, killed_run):
    r = cli("train", "--out", killed_run, "--resume", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    meta = json.loads(killed_run.with_suffix(".json").read_text())
    assert meta["arch"] == "lenet" and meta["dataset"] == "mnist" and meta["epochs"] == 3
    assert meta["config"]["lr"] == 0.02 and meta["train_size"] == 100
    assert meta["command"].startswith("foolkit train --model lenet --dataset mnist") and "--lr 0.02" in meta["command"]
    assert "--resume" not in meta["command"]
    assert meta["resumed_with"] == [f"foolkit train --out {killed_run} --resume --device cpu"]


def test_resume_of_an_old_checkpoint_without_the_model_asks_for_it(cli, one_line_error, killed_run):
    ckpt = killed_run.with_suffix(".ckpt")
    edit_checkpoint(ckpt, lambda meta: meta["config"].__setitem__("extra", {}))
    before = ckpt.read_bytes()
    one_line_error(cli("train", "--out", killed_run, "--resume"), "does not record the run's --model",
                   "pass the --model it was started with")
    assert ckpt.read_bytes() == before and not killed_run.exists()
    r = cli("train", "--model", "lenet", "--dataset", "mnist", "--out", killed_run, "--resume", "--device", "cpu")
    assert r.exit_code == 0, r.stderr


def test_an_arch_option_given_twice_is_refused(cli, one_line_error, tmp_path):
    one_line_error(cli("train", "--model", "mlp3x512", "--dataset", "mnist", "--arch-opt", "dropout=0.1",
                       "--arch-opt", "dropout=0.5", "--out", tmp_path / "m"), "--arch-opt dropout is given twice")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch", ["lenet", "mlp1x512", "small-alexnet"])
def test_a_folder_of_images_that_are_not_square_trains_and_the_model_loads(cli, tmp_path, mnist_test, arch):
    """Architectures with a fully connected layer after their convolutions size it for both sides."""
    from PIL import Image

    from foolkit.models import load_model

    for c in range(2):
        (tmp_path / "set" / f"k{c}").mkdir(parents=True)
        for i, img in enumerate(mnist_test.x[mnist_test.y == c][:5]):
            Image.fromarray(img[0].numpy()).resize((24, 20)).save(tmp_path / "set" / f"k{c}" / f"{i}.png")
    r = cli("train", "--model", arch, "--dataset", f"folder:{tmp_path / 'set'}", "--epochs", "1", "--out",
            tmp_path / "t")
    assert r.exit_code == 0, r.stderr
    model = load_model(str(tmp_path / "t.pt"))
    assert model.input_size == (1, 20, 24) and model(torch.zeros(2, 1, 20, 24)).shape == (2, 2)


def test_images_too_small_for_lenet_are_refused_in_one_line(tmp_path):
    from foolkit.models.archs import build_arch

    with pytest.raises(FoolkitError, match="lenet takes images of at least 16x16 pixels, got 12x30"):
        build_arch("lenet", in_channels=1, num_classes=2, input_hw=(12, 30))
    assert build_arch("lenet", in_channels=1, num_classes=2, input_hw=16)(torch.zeros(1, 1, 16, 16)).shape == (1, 2)


@pytest.mark.parametrize("stray", ["t.json", "t.log.jsonl"])
def test_a_new_run_never_overwrites_a_models_card_or_log(cli, one_line_error, tmp_path, stray):
    (tmp_path / stray).write_text("kept")
    one_line_error(cli("train", *TINY, "--epochs", "1", "--out", tmp_path / "t"), f"{stray} exists", "--force")
    assert (tmp_path / stray).read_text() == "kept" and not (tmp_path / "t.pt").exists()


def test_the_model_card_gives_the_saved_models_own_training_accuracy(cli, tmp_path):
    """Not the last epoch's running average in train mode (0.961 where the model scored 0.979)."""
    from foolkit.data import load_dataset
    from foolkit.models import load_model
    from foolkit.models.training import evaluate

    assert cli("train", *TINY, "--epochs", "2", "--out", tmp_path / "t").exit_code == 0
    card = json.loads((tmp_path / "t.json").read_text())
    train = load_dataset("mnist", "train", subset=100, seed=0, quiet=True)
    acc, _ = evaluate(load_model(str(tmp_path / "t.pt")), train.images(), train.y)
    assert card["train_accuracy"] == pytest.approx(acc, abs=1e-9)
    assert card["last_epoch_train_accuracy"] == json.loads((tmp_path / "t.log.jsonl").read_text().splitlines()[-1])[
        "train_accuracy"]
