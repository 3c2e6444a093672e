"""`foolkit memorize ...`: output fields and one-line errors."""

from __future__ import annotations

import json

import pytest


def test_expressivity_json_fields(cli):
    r = cli("memorize", "expressivity", "--n", "400", "--d", "30", "--targets", "labels", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"n", "d", "parameters", "max_abs_error", "smallest_eigenvalue", "seconds"} <= out.keys()
    assert out["parameters"] == 2 * 400 + 30 and out["max_abs_error"] < 1e-6 and out["labels_reproduced"] == 1.0


def test_expressivity_on_real_digits_memorises_random_labels(cli):
    r = cli("memorize", "expressivity", "--dataset", "mnist", "--n", "300", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["train_accuracy"] == 1.0 and out["labels"] == "random" and out["test_accuracy"] < 0.25
    assert out["parameters"] == 2 * out["n"] + 784


def test_minnorm_json_fields(cli):
    r = cli("memorize", "minnorm", "--subset", "300", "--kernel", "gaussian", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"n", "kernel", "train_error", "test_error", "norm", "seconds"} <= out.keys()
    assert out["n"] == 300 and out["train_error"] == 0.0 and out["test_error"] < 0.25 and out["norm"] > 0
    assert out["data"]["train"]["n"] == 300 and out["data"]["test"]["n"] == out["n_test"]
    assert out["interpolates"] and out["max_residual"] < 1e-6


def test_minnorm_says_when_no_interpolant_exists(cli):
    """The linear kernel of n > d points has rank <= d: K⁺Y is a least-squares fit, and the run says so."""
    r = cli("memorize", "minnorm", "--dataset", "mnist", "--subset", "900", "--test-subset", "100",
            "--kernel", "linear", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert not out["interpolates"] and out["train_error"] > 0 and out["rank"] < 784
    assert f"rank {out['rank']}" in r.stderr and "least-squares" in r.stderr


def test_a_subset_bigger_than_the_data_is_reported_not_silent(cli, mnist_test):
    """Offline, MNIST's training split is 4,000 digits: asking for more uses them all, says so on
    stderr (not with --json, whose stdout is the record) and records what was used."""
    from foolkit.data import load_dataset

    n = len(load_dataset("mnist", "train", quiet=True))
    r = cli("memorize", "minnorm", "--subset", str(n + 1000), "--test-subset", "100", "--kernel", "gaussian")
    assert r.exit_code == 0, r.stderr
    assert f"asked for {n + 1000} train examples, {n} available: using all {n}" in r.stderr
    assert f"n: {n}" in r.stdout.splitlines()
    r = cli("memorize", "minnorm", "--subset", str(n + 1000), "--test-subset", "100", "--kernel", "gaussian", "--json")
    assert r.exit_code == 0 and "asked for" not in r.stderr
    assert json.loads(r.stdout)["data"]["train"]["notes"][-1].startswith(f"asked for {n + 1000}")


def test_randomize_json_and_files(cli, tmp_path):
    out = tmp_path / "r"
    r = cli("memorize", "randomize", "--subset", "100", "--test-subset", "100", "--variants", "true,random-pixels",
            "--epochs", "2", "--batch-size", "50", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert [x["variant"] for x in res["runs"]] == ["true", "random-pixels"]
    assert {"variant", "corruption", "model", "train_accuracy", "test_accuracy", "epochs_to_fit", "steps_to_fit",
            "seconds"} == set(res["runs"][0])
    assert (out / "results.json").is_file() and (out / "fig1a-loss.png").is_file()
    assert (out / "labels-random-pixels.pt").is_file()
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["train"]["n"] == 100 and data["test"]["n"] == 100 and data["train"]["source"]


@pytest.mark.parametrize("args,fragment", [
    (("randomize", "--variants", "true,noise"), "unknown data variant"),
    (("randomize", "--corrupt", "1.5"), "corruption level"),
    (("randomize", "--corrupt", "a,b"), "comma-separated"),
    (("randomize", "--model", "vgg16"), "unknown model"),
    (("randomize", "--epochs", "0"), "--epochs"),
    (("randomize", "--resume"), "--resume needs --out"),
    (("randomize", "--dataset", "nope"), "unknown dataset"),
    (("regularizers", "--regularizers", "mixup"), "unknown regulariser"),
    (("expressivity", "--n", "0"), "--n must be positive"),
    (("expressivity", "--theta", "1.5"), "--theta"),
    (("expressivity", "--n", "1000000", "--d", "784"), "memory"),
    (("expressivity", "--true-labels"), "--true-labels needs --dataset"),  # ignored, before
    (("expressivity", "--dataset", "mnist", "--d", "30"), "--d describes random points"),
    (("expressivity", "--dataset", "mnist", "--targets", "labels", "--d", "3"), "--d and --targets describe"),
    (("minnorm", "--kernel", "rbf"), "rbf"),
    (("minnorm", "--kernel", "linear", "--degree", "3"), "--degree is the polynomial kernel's"),  # ignored, before
    (("minnorm", "--sigma", "2"), "--sigma is the gaussian kernel's"),
    (("minnorm", "--sgd-subset", "50"), "--sgd-subset sets the SGD check: add --sgd-check"),
    (("minnorm", "--sigma", "-1"), "--sigma"),
    (("randomize", "--test-subset", "0"), "--test-subset must be positive"),
    (("randomize", "--test-subset", "-3"), "--test-subset must be positive"),
    (("randomize", "--subset", "-3"), "--subset must be >= 0"),
    (("regularizers", "--test-subset", "0"), "--test-subset must be positive"),
    (("regularizers", "--test-subset", "-3"), "--test-subset must be positive"),
    (("regularizers", "--subset", "-3"), "--subset must be >= 0"),
    (("minnorm", "--test-subset", "0"), "--test-subset must be positive"),
    (("minnorm", "--test-subset", "-3"), "--test-subset must be positive"),
    (("minnorm", "--subset", "0"), "--subset must be positive"),
    (("randomize", "--lr", "-1"), "--lr"),
    (("randomize", "--lr", "0"), "--lr"),
    (("randomize", "--lr", "nan"), "--lr"),
    (("randomize", "--lr", "inf"), "--lr"),
    (("regularizers", "--model", "lenet", "--regularizers", "batchnorm"), "no requested regulariser applies to lenet"),
    (("regularizers", "--labels", ""), "no label variants given"),
    (("regularizers", "--regularizers", " , "), "no regularisers given"),
    (("minnorm", "--kernel", "gaussian", "--sigma", "inf"), "--sigma must be a positive, finite number"),
])
def test_error_paths_are_one_line(cli, one_line_error, args, fragment):
    one_line_error(cli("memorize", *args), fragment)


def test_existing_run_folder_is_not_overwritten(cli, one_line_error, tmp_path):
    out = tmp_path / "r"
    args = ("memorize", "randomize", "--subset", "50", "--test-subset", "50", "--variants", "true", "--epochs", "1",
            "--out", out)
    assert cli(*args).exit_code == 0
    before = (out / "results.json").read_text()
    one_line_error(cli(*args), "already holds a run")
    assert (out / "results.json").read_text() == before


def test_group_without_subcommand_lists_them(cli):
    r = cli("memorize")
    assert r.exit_code == 0
    for sub in ("randomize", "regularizers", "expressivity", "minnorm"):
        assert sub in r.stdout


def test_a_list_option_names_each_item_once():
    from foolkit.commands.memorize import _names

    assert _names("none, none,dropout,,none") == ["none", "dropout"]  # regularizers none,none trained two rows


@pytest.mark.parametrize("command,stray", [("randomize", "results.json"), ("randomize", "fig1a-loss.png"),
                                           ("regularizers", "regularizers.md"), ("randomize", "log.jsonl")])
def test_a_new_run_never_overwrites_files_it_would_write(cli, one_line_error, tmp_path, command, stray):
    out = tmp_path / "r"
    out.mkdir()
    (out / stray).write_text("my precious results")
    small = ["--subset", "50", "--test-subset", "50", "--epochs", "1"]
    small += ["--variants", "true"] if command == "randomize" else ["--regularizers", "none", "--labels", "true"]
    one_line_error(cli("memorize", command, *small, "--out", out), f"already holds {stray}", "another --out")
    assert (out / stray).read_text() == "my precious results" and sorted(p.name for p in out.iterdir()) == [stray]
