"""Randomisation runs on real MNIST digits: random labels are memorised, test accuracy sits at chance."""

from __future__ import annotations

import json

import pytest
import torch

from foolkit.errors import FoolkitError
from foolkit.memorize.experiments import (RunSettings, epoch_decay, regularizer_markdown, regularizer_settings,
                                          run_randomization, run_regularizers, train_variant)
from foolkit.memorize.randomize import make_variant
from foolkit.runs import load_checkpoint

FIELDS = {"variant", "corruption", "model", "train_accuracy", "test_accuracy", "epochs_to_fit", "steps_to_fit", "seconds"}


@pytest.fixture(scope="module")
def small(mnist_test):
    idx = torch.randperm(len(mnist_test.y), generator=torch.Generator().manual_seed(0))
    x, y = mnist_test.images()[idx], mnist_test.y[idx]
    return x[:200], y[:200], x[200:600], y[200:600]


def test_tiny_random_label_fit_memorises_at_chance(small):
    x, y, xt, yt = small
    settings = RunSettings(model="mlp1x512", epochs=150, batch_size=25, seed=0)
    rand = train_variant(make_variant("random-labels", x, y, xt, yt, num_classes=10, seed=0), classes=list("0123456789"),
                         settings=settings)
    true = train_variant(make_variant("true", x, y, xt, yt, num_classes=10, seed=0), classes=list("0123456789"),
                         settings=settings)
    assert rand["train_accuracy"] == 1.0 and rand["epochs_to_fit"] is not None
    assert rand["steps_to_fit"] == rand["epochs_to_fit"] * 8
    assert rand["test_accuracy"] < 0.25                        # chance is 0.1
    assert true["train_accuracy"] == 1.0 and true["test_accuracy"] > 0.7
    assert rand["epochs_to_fit"] > true["epochs_to_fit"]       # random labels take longer
    assert FIELDS <= rand.keys() and rand["parameters"] == 784 * 512 + 512 + 512 * 10 + 10
    h = rand["history"]
    assert [r["epoch"] for r in h] == list(range(1, len(h) + 1)) and h[-1]["train_accuracy"] == 1.0


def test_paper_schedule_per_step():
    assert epoch_decay(0.95, n=50_000, batch_size=128) == pytest.approx(0.95)
    assert epoch_decay(0.95, n=1000, batch_size=128) == pytest.approx(0.95 ** (8 / 391))
    assert epoch_decay(0.95, n=1000, batch_size=128, decay_steps=0) == 0.95
    with pytest.raises(FoolkitError):
        RunSettings(model="vgg").validate()


def test_run_randomization_writes_results_masks_figures_and_resumes(tmp_path):
    out = tmp_path / "run"
    kw = dict(dataset="mnist", subset=120, test_subset=100, variants=("true", "gaussian"), corrupt=(0.5,),
              settings=RunSettings(model="mlp1x512", epochs=3, batch_size=40), out=out)
    runs, figures = run_randomization(**kw)
    assert [r["variant"] for r in runs] == ["true", "gaussian", "corrupt:0.5"]
    data = json.loads((out / "results.json").read_text())
    assert all(FIELDS <= r.keys() for r in data["runs"])
    assert set(figures) == {"loss", "time_to_fit", "test_error"}
    for p in figures.values():
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    meta, t = load_checkpoint(out / "labels-corrupt-0.5.pt")
    assert meta["corruption"] == 0.5
    assert (t["y_train"][~t["replaced"]] == t["y_original"][~t["replaced"]]).all()
    assert 0.3 < float(t["replaced"].float().mean()) < 0.7
    # a killed run: only the first variant was recorded; resume runs just the rest
    data["runs"] = data["runs"][:1]
    (out / "results.json").write_text(json.dumps(data))
    seen: list[str] = []
    runs2, _ = run_randomization(**{**kw, "resume": True}, on_run=lambda r: seen.append(r["variant"]))
    assert seen == ["gaussian", "corrupt:0.5"] and len(runs2) == 3
    with pytest.raises(FoolkitError, match="already holds a run"):
        run_randomization(**kw)


def test_regularizer_settings_switch_one_thing_each():
    base = RunSettings(model="mlp1x512")
    none = regularizer_settings("none", base)
    assert none.arch_kwargs == {"batchnorm": False} and none.weight_decay == 0 and none.augment == "none"
    assert regularizer_settings("dropout", base).arch_kwargs["dropout"] == 0.5
    assert regularizer_settings("weight-decay", base).weight_decay > 0
    assert regularizer_settings("batchnorm", base).arch_kwargs["batchnorm"] is True
    assert regularizer_settings("crop", base).augment == "crop"
    assert regularizer_settings("early-stopping", base).early_stopping > 0
    every = regularizer_settings("all", base)
    assert every.arch_kwargs == {"batchnorm": True, "dropout": 0.5} and every.augment == "crop"
    assert every.weight_decay > 0 and every.early_stopping == 0  # the explicit ones, as the paper's tables
    assert regularizer_settings("batchnorm", RunSettings(model="lenet")) is None
    with pytest.raises(FoolkitError):
        regularizer_settings("mixup", base)


def test_regularizer_grid_table_and_figure(tmp_path):
    res = run_regularizers(dataset="mnist", subset=100, test_subset=100, regularizers=("none", "dropout"), epochs=2,
                           out=tmp_path / "reg")
    assert [(r["regularizer"], r["variant"]) for r in res["rows"]] == [
        ("none", "true"), ("dropout", "true"), ("none", "random-labels"), ("dropout", "random-labels")]
    md = (tmp_path / "reg" / "regularizers.md").read_text()
    assert md == res["markdown"] and "| dropout |" in md and md.count("\n|") >= 3
    assert json.loads((tmp_path / "reg" / "regularizers.json").read_text())["rows"][0]["regularizer"] == "none"
    assert open(res["figure"], "rb").read(4) == b"\x89PNG"
    row = dict(res["rows"][0], train_accuracy=1.0, test_accuracy=0.5, epochs_to_fit=3)
    assert "| none | 100.00 | 50.00 | 3 |" in regularizer_markdown([row])


def test_batchnorm_trains_when_one_example_is_left_over(small):
    """129 examples in batches of 128: batch norm cannot train on the last batch of one, so it joins the one before."""
    x, y, xt, yt = small
    v = make_variant("true", x[:129], y[:129], xt[:50], yt[:50], num_classes=10, seed=0)
    s = regularizer_settings("batchnorm", RunSettings(model="mlp1x512", epochs=2, batch_size=128))
    rec = train_variant(v, classes=list("0123456789"), settings=s)
    assert [h["step"] for h in rec["history"]] == [1, 2] and rec["n_train"] == 129
    plain = train_variant(v, classes=list("0123456789"), settings=regularizer_settings("none", s))
    assert [h["step"] for h in plain["history"]] == [2, 4]  # without batch norm the batches are as before


def test_a_resumed_grid_runs_again_the_all_rows_saved_with_early_stopping(tmp_path):
    """Until 2026-11-24 "all" included early stopping (on random labels it stopped at epoch 1)."""
    out = tmp_path / "reg"
    run_regularizers(dataset="mnist", subset=60, test_subset=50, regularizers=("none", "all"), labels=("true",),
                     epochs=1, out=out)
    saved = json.loads((out / "regularizers.json").read_text())
    for r in saved["rows"]:
        r["early_stopping"] = 5 if r["regularizer"] == "all" else 0
        r["marker"] = "old"
    (out / "regularizers.json").write_text(json.dumps(saved))
    res = run_regularizers(dataset="mnist", subset=60, test_subset=50, regularizers=("none", "all"),
                           labels=("true",), epochs=1, out=out, resume=True)
    by = {r["regularizer"]: r for r in res["rows"]}
    assert by["none"].get("marker") == "old" and "marker" not in by["all"] and by["all"]["early_stopping"] == 0
