"""Retrain and reattack: the extra class, the data mixing, the report, resume, error paths."""

from __future__ import annotations

import json

import pytest
import torch

from foolkit.retrain import FOOLING, RetrainConfig, add_class, mix_fooling, run_rounds

TINY = dict(model="lenet-mnist", dataset="mnist", rounds=2, generations=3, population=16, pool_runs=1,
            holdout_runs=1, subset=200, test_subset=100, finetune_epochs=1, device="cpu", seed=3)


def test_add_class_keeps_the_old_predictions(lenet, mnist_batch):
    x, _ = mnist_batch
    bigger = add_class(lenet)
    assert bigger.classes == [*lenet.classes, FOOLING] and bigger.num_classes == 11
    assert lenet.num_classes == 10  # the original is untouched
    with torch.no_grad():
        old, new = lenet(x), bigger(x)
    assert torch.allclose(new[:, :10], old) and torch.equal(new.argmax(1), old.argmax(1))
    assert type(bigger.net) is type(lenet.net)  # same architecture, one more output
    assert add_class(bigger).num_classes == 11  # adding it twice is a no-op


def test_mixing_balances_the_fooling_class():
    x, y = torch.rand(100, 1, 4, 4), torch.arange(100) % 10
    pool, pool_y = torch.rand(3, 1, 4, 4), torch.full((3,), 10)
    mx, my = mix_fooling(x, y, pool, pool_y, 10, torch.Generator().manual_seed(0))
    assert len(my) == 110 and int((my == 10).sum()) == 10  # an average real class has 10
    assert torch.equal(mx[:100], x)
    # every added image is one of the pool's, and all three pool images are used
    added = mx[100:].flatten(1)
    assert all(any(torch.equal(a, p) for p in pool.flatten(1)) for a in added)
    assert len({tuple(a.tolist()) for a in added}) == 3
    big_pool = torch.rand(50, 1, 4, 4)
    mx, my = mix_fooling(x, y, big_pool, torch.full((50,), 10), 10, torch.Generator().manual_seed(0))
    assert len({tuple(a.tolist()) for a in mx[100:].flatten(1)}) == 10  # no repeats when the pool is big enough


def _strip(rounds):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]


def test_tiny_fooling_loop_report_models_and_resume(tmp_path):
    out = tmp_path / "run"
    rounds = run_rounds(RetrainConfig(**TINY), out, progress=False)
    report = json.loads((out / "rounds.json").read_text())
    assert report["kind"] == "fooling" and report["model"] == "lenet-mnist" and report["dataset"] == "mnist"
    assert report["data"]["train"]["n"] == TINY["subset"] and report["data"]["test"]["n"] == TINY["test_subset"]
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    for r in report["rounds"]:
        assert set(r) >= {"round", "clean_accuracy", "fooled_classes", "median_confidence", "fooling_recall",
                          "robust_accuracy", "median_norm", "seconds"}
        assert r["robust_accuracy"] is None and r["median_norm"] is None and 0 <= r["fooled_classes"] <= 10
    assert report["rounds"][0]["fooling_recall"] is None and report["rounds"][1]["fooling_recall"] is not None
    assert (out / "rounds.png").stat().st_size > 0 and (out / "round-1" / "gallery.png").is_file()
    from foolkit.models import load_model

    m1 = load_model(out / "round-1" / "model.pt", device="cpu")
    assert m1.classes[-1] == FOOLING and m1.num_classes == 11
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    assert rounds[-1].pool_size == 2 * 2 * 10  # (1 measuring + 1 pool run) x 10 classes, two rounds

    # a run killed during round 2 resumes there and ends where the uninterrupted run did
    killed = tmp_path / "killed"

    def kill(stage: str) -> None:
        if stage.startswith("round 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rounds(RetrainConfig(**TINY), killed, progress=False, on_stage=kill)
    assert [r["round"] for r in json.loads((killed / "rounds.json").read_text())["rounds"]] == [0, 1]
    run_rounds(RetrainConfig(**TINY), killed, resume=True, progress=False)
    resumed = json.loads((killed / "rounds.json").read_text())
    assert _strip(resumed["rounds"]) == _strip(report["rounds"])
    lines = [json.loads(x)["round"] for x in (killed / "log.jsonl").read_text().splitlines()]
    assert lines == [0, 1, 2]


def test_tiny_adversarial_loop(tmp_path):
    cfg = RetrainConfig(**{**TINY, "kind": "adversarial", "rounds": 1, "attack_steps": 3, "norm_steps": 10,
                           "attack_subset": 20})
    rounds = run_rounds(cfg, tmp_path / "adv", progress=False)
    assert len(rounds) == 2
    for r in rounds:
        assert r.fooled_classes is None and r.fooling_recall is None
        assert 0 <= r.robust_accuracy <= 1 and r.median_norm > 0
    assert rounds[0].robust_accuracy < 0.5  # an undefended LeNet at eps 0.3
    assert rounds[1].pool_size == 200


def test_cli_table_and_errors(cli, one_line_error, tmp_path):
    one_line_error(cli("retrain", "--model", "lenet-mnist"), "--dataset")
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--rounds", "-1",
                       "--out", tmp_path / "a"), "rounds")
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--kind", "both"), "kind")
    one_line_error(cli("retrain", "--model", "nope", "--dataset", "mnist", "--out", tmp_path / "b"), "unknown model")
    one_line_error(cli("retrain", "--resume", "--out", tmp_path / "c"), "nothing to resume")
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--eps", "-1",
                       "--kind", "adversarial", "--out", tmp_path / "d"), "eps")
    # options of the other kind were accepted and ignored
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--eps", "0.1", "--norm", "l2",
                       "--out", tmp_path / "e"), "--eps, --norm are for --kind adversarial, not --kind fooling")
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--kind", "adversarial",
                       "--generations", "5", "--out", tmp_path / "f"), "--generations is for --kind fooling")
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--kind", "adversarial",
                       "--method", "fgsm", "--attack-steps", "5", "--out", tmp_path / "g"), "fgsm takes one step")
    assert not any((tmp_path / d).exists() for d in "adefg")
    r = cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--rounds", "1", "--generations", "2",
            "--population", "8", "--pool-runs", "0", "--subset", "100", "--test-subset", "50",
            "--finetune-epochs", "1", "--out", tmp_path / "ok", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[:3] == ["round", "clean", "acc"] and len(r.stdout.splitlines()) == 3
    # the same folder again without --resume is refused, and nothing is lost
    before = (tmp_path / "ok" / "rounds.json").read_text()
    one_line_error(cli("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--out", tmp_path / "ok"), "--resume")
    assert (tmp_path / "ok" / "rounds.json").read_text() == before




def test_a_refused_retrain_says_only_its_error_not_the_offline_notice(cli, one_line_error, tmp_path, monkeypatch):
    monkeypatch.setattr("foolkit.data._notified", set())  # as in a fresh process: the notice not yet said
    monkeypatch.setenv("FOOLKIT_OFFLINE", "1")
    one_line_error(cli("retrain", "--model", "lenet-fashion", "--dataset", "mnist", "--out", tmp_path / "x"),
                   "classes are not model lenet-fashion's")
