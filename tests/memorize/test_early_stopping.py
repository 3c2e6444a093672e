"""Early stopping chooses on a held-out validation set, never on the test set: `fit(validation=...)`
counts patience on validation accuracy (also across a resume), and `train_variant` holds out a
seeded 10% of the training set and reports the best-validation epoch."""

from __future__ import annotations

import json

import pytest
import torch

import foolkit.memorize.experiments as experiments
from foolkit.memorize.experiments import (EARLY_STOPPING_PATIENCE, RunSettings, holdout, regularizer_markdown,
                                          regularizer_settings, run_regularizers, train_variant)
from foolkit.memorize.randomize import make_variant
from foolkit.models import new_model
from foolkit.models.training import TrainConfig, fit


@pytest.fixture(scope="module")
def digits(mnist_test):
    """100 training, 50 validation and 100 test digits, drawn at random from the held-out MNIST digits."""
    idx = torch.randperm(len(mnist_test.y), generator=torch.Generator().manual_seed(1))
    x, y = mnist_test.images()[idx], mnist_test.y[idx]
    return (x[:100], y[:100]), (x[100:150], y[100:150]), (x[150:250], y[150:250])


def _fresh():
    torch.manual_seed(0)
    return new_model("mlp1x512", classes=[str(c) for c in range(10)], input_size=(1, 28, 28), mean=[0.13], std=[0.3])


def _stale(history, key="val_accuracy"):
    """The patience counter after each epoch, as early stopping counts it."""
    best, stale, out = -1.0, 0, []
    for rec in history:
        best, stale = (rec[key], 0) if rec[key] > best else (best, stale + 1)
        out.append(stale)
    return out


def _config(epochs, patience=2):
    return TrainConfig(epochs=epochs, batch_size=25, lr=0.01, seed=3, eval_train=True, early_stopping=patience)


def test_fit_counts_patience_on_validation_not_on_test(digits):
    (x, y), (xv, yv), (xt, yt) = digits
    # random validation labels: a validation accuracy that soon stops improving
    noise = torch.randint(0, 10, yv.shape, generator=torch.Generator().manual_seed(1))
    h = fit(_fresh(), x, y, _config(30), test=(xt, yt), validation=(xv, noise), progress=False)
    assert all({"val_accuracy", "val_loss"} <= r.keys() for r in h)
    stale = _stale(h)
    assert len(h) < 30 and stale[-1] == 2 and all(s < 2 for s in stale[:-1])  # stopped the first time patience ran out
    # the test set decides nothing: a test accuracy that stops improving does not stop training without validation
    h2 = fit(_fresh(), x, y, _config(8, patience=1), test=(xv, noise), progress=False)
    assert len(h2) == 8 and max(_stale(h2, "test_accuracy")) >= 1
    assert "val_accuracy" not in h2[0]


def test_fit_resume_restores_the_validation_patience(digits, tmp_path):
    (x, y), (xv, yv), (xt, yt) = digits
    noise = torch.randint(0, 10, yv.shape, generator=torch.Generator().manual_seed(1))
    straight = _fresh()
    h = fit(straight, x, y, _config(30), test=(xt, yt), validation=(xv, noise), progress=False)
    stop = len(h)
    assert stop < 30 and _stale(h)[stop - 2] == 1  # interrupted one epoch before the stop, patience half spent
    for cut in (stop - 1, stop):
        ckpt = tmp_path / f"cut{cut}.ckpt"
        fit(_fresh(), x, y, _config(cut), test=(xt, yt), validation=(xv, noise), checkpoint=ckpt, progress=False)
        resumed = _fresh()
        h2 = fit(resumed, x, y, _config(30), test=(xt, yt), validation=(xv, noise), checkpoint=ckpt, resume=True,
                 progress=False)
        assert [r["epoch"] for r in h2] == list(range(1, stop + 1))
        assert [r["val_accuracy"] for r in h2] == [r["val_accuracy"] for r in h]
        for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
            assert torch.equal(a, b)


def test_holdout_is_a_fixed_seeded_tenth():
    keep, val = holdout(200, seed=4)
    assert len(val) == 20 and len(keep) == 180
    assert sorted(torch.cat([keep, val]).tolist()) == list(range(200))
    again = holdout(200, seed=4)
    assert torch.equal(again[0], keep) and torch.equal(again[1], val)
    assert not torch.equal(holdout(200, seed=5)[1], val)
    assert len(holdout(5, seed=0)[1]) == 1
    with pytest.raises(experiments.FoolkitError, match="at least 2 training examples"):
        holdout(1, seed=0)


def test_train_variant_chooses_by_validation_and_trains_on_the_rest(digits, monkeypatch):
    (x, y), _, (xt, yt) = digits
    seen = {}
    real_fit = experiments.fit

    def spy(model, xf, yf, config, **kw):
        seen.update(x=xf, y=yf, validation=kw["validation"], test=kw["test"])
        return real_fit(model, xf, yf, config, **kw)

    monkeypatch.setattr(experiments, "fit", spy)
    v = make_variant("random-labels", x, y, xt, yt, num_classes=10, seed=0)
    s = regularizer_settings("early-stopping", RunSettings(model="mlp1x512", epochs=25, batch_size=25, seed=2))
    rec = train_variant(v, classes=[str(c) for c in range(10)], settings=s)
    keep, val = holdout(100, seed=2)
    assert (rec["n_train"], rec["n_val"], rec["n_test"]) == (90, 10, 100)
    assert torch.equal(seen["x"], v.x_train[keep]) and torch.equal(seen["y"], v.y_train[keep])
    assert torch.equal(seen["validation"][0], v.x_train[val]) and torch.equal(seen["validation"][1], v.y_train[val])
    assert torch.equal(seen["test"][1], yt)
    h = rec["history"]
    vals = [r["val_accuracy"] for r in h]
    chosen = h[rec["chosen_epoch"] - 1]
    assert chosen["val_accuracy"] == max(vals) and rec["chosen_epoch"] == vals.index(max(vals)) + 1
    assert (rec["train_accuracy"], rec["test_accuracy"], rec["val_accuracy"]) == (
        chosen["train_accuracy"], chosen["test_accuracy"], chosen["val_accuracy"])
    assert rec["epochs"] == len(h) and rec["early_stopping"] == EARLY_STOPPING_PATIENCE
    # the table's epochs column is the epoch whose accuracies it shows
    md = regularizer_markdown([dict(rec, regularizer="early-stopping")])
    assert "trains on 90 examples and holds out 10 as validation" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| early-stopping"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[0] == "early-stopping" and cells[2] == f"{100 * rec['test_accuracy']:.2f}"
    assert cells[3] == str(rec["chosen_epoch"])
    # without early stopping nothing is held out and the last epoch is reported
    plain = train_variant(v, classes=[str(c) for c in range(10)],
                          settings=RunSettings(model="mlp1x512", epochs=2, batch_size=25, seed=2))
    assert plain["n_train"] == 100 and plain["n_val"] == 0 and plain["chosen_epoch"] == plain["epochs"] == 2
    assert seen["validation"] is None


def test_early_stopping_rows_resume_as_if_uninterrupted(tmp_path):
    kw = dict(dataset="mnist", subset=60, test_subset=40, regularizers=("none", "early-stopping"), labels=("true",),
              epochs=4, seed=1)
    full = run_regularizers(**kw, out=tmp_path / "a")["rows"]
    es = full[1]
    assert es["regularizer"] == "early-stopping" and es["n_val"] == 6 and es["n_train"] == 54
    path = tmp_path / "a" / "regularizers.json"
    saved = json.loads(path.read_text())
    saved["rows"] = saved["rows"][:1]
    path.write_text(json.dumps(saved))
    rows = run_regularizers(**kw, out=tmp_path / "a", resume=True)["rows"]
    keys = ("regularizer", "train_accuracy", "test_accuracy", "val_accuracy", "chosen_epoch", "epochs", "n_train",
            "n_val", "final_train_loss")
    assert [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys} for r in full]


def test_resume_reruns_early_stopping_rows_chosen_by_test_accuracy(tmp_path):
    """Rows saved before validation was held out (no ``n_val``) are run again, not kept."""
    kw = dict(dataset="mnist", subset=60, test_subset=40, regularizers=("none", "early-stopping"), labels=("true",),
              epochs=3, seed=1, out=tmp_path / "old")
    full = run_regularizers(**kw)["rows"]
    path = tmp_path / "old" / "regularizers.json"
    saved = json.loads(path.read_text())
    old = {k: v for k, v in saved["rows"][1].items() if k not in ("n_val", "val_accuracy")}
    saved["rows"][1] = dict(old, test_accuracy=1.0)  # what choosing by the test set could report
    path.write_text(json.dumps(saved))
    rows = run_regularizers(**kw, resume=True)["rows"]
    assert [r["regularizer"] for r in rows] == ["none", "early-stopping"]
    assert rows[1]["n_val"] == 6 and rows[1]["test_accuracy"] == full[1]["test_accuracy"]
