"""Confident mistakes: ``attack(..., confidence=c)`` makes the wrong class reach probability ≥ c."""

from __future__ import annotations

import json
import math

import pytest
import torch

from foolkit.attacks import make_attack
from foolkit.attacks.base import CountingModel, Problem, confidence_to_kappa
from foolkit.errors import FoolkitError
from foolkit.images import load_image, quantize, save_image


def test_margin_is_negative_exactly_when_the_adversarial_class_is_confident():
    """Oracle: brute-force softmax on random logits, untargeted and targeted."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 10, generator=g) * 4
    labels = torch.randint(10, (4000,), generator=g)
    for c in (0.5, 0.9, 0.999):
        for targeted in (False, True):
            p = Problem(CountingModel(torch.nn.Identity()), torch.zeros(4000, 1, 1, 1), labels, targeted, (0.0, 1.0),
                        g, confidence_to_kappa(c))
            probs = logits.softmax(1)
            if targeted:
                expected = probs.gather(1, labels[:, None]).squeeze(1) >= c
            else:
                others = probs.scatter(1, labels[:, None], 0.0)
                expected = others.amax(1) >= c
            got = p.margin(logits) <= 0
            close = (probs.amax(1) - c).abs() < 1e-5  # ties at the threshold may go either way
            assert torch.equal(got[~close], expected[~close])
            assert torch.equal(p.is_adversarial(logits)[~close], expected[~close])


@pytest.mark.parametrize("name,kw", [("auto", {"norm": "l2"}), ("fmn", {"norm": "linf"}), ("ddn", {}), ("cw", {}),
                                     ("lbfgs", {"steps": 30}), ("pgd", {"eps": 0.3}), ("deepfool", {}),
                                     ("deepfool", {"norm": "linf"})])
def test_attacks_reach_the_required_confidence_on_the_png_grid(lenet, mnist_batch, name, kw):
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    attack = make_attack(name, **{"steps": 50, **kw})
    plain = attack(lenet, x, y)
    sure = attack(lenet, x, y, confidence=0.95)
    assert sure.success.all()
    assert (sure.confidences_after >= 0.95).all() and (sure.labels_after != y).all()
    assert torch.equal(sure.adv, quantize(sure.adv))  # still confident after 8-bit rounding
    if name != "pgd":  # minimum-norm: a confident mistake needs more noise than a boundary one
        assert sure.median("l2" if kw.get("norm", "l2") == "l2" else "linf") > plain.median(kw.get("norm", "l2"))
        assert plain.confidences_after.median() < 0.8
    assert sure.params["confidence_required"] == 0.95


def test_targeted_confident_mistake(lenet, mnist_batch):
    x, y = mnist_batch[0][:6], mnist_batch[1][:6]
    target = (y + 1) % 10
    for attack in (make_attack("auto", norm="l2", steps=60), make_attack("deepfool")):
        res = attack(lenet, x, y, target=target, confidence=0.99)
        assert res.success.all() and torch.equal(res.labels_after, target) and (res.confidences_after >= 0.99).all()


@pytest.mark.parametrize("bad", [1.0, -0.1, math.nan, 2])
def test_bad_confidence_values(lenet, mnist_batch, bad):
    with pytest.raises(FoolkitError, match="confidence"):
        make_attack("fmn")(lenet, mnist_batch[0][:2], mnist_batch[1][:2], confidence=bad)
    assert confidence_to_kappa(None) == -math.inf and confidence_to_kappa(0) == -math.inf


def test_cli_default_is_a_confident_mistake_and_option_errors(cli, one_line_error, tmp_path, mnist_batch, lenet):
    path = save_image(mnist_batch[0][0], tmp_path / "digit.png")
    r = cli("attack", path, "--model", "lenet-mnist", "--out", tmp_path / "out", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert rec["confidence_required"] == 0.9 and rec["success"] and rec["adversarial"]["confidence"] >= 0.9
    # the saved PNG, read back, is the confident mistake
    back = load_image(tmp_path / "out" / "digit.adv.png").unsqueeze(0)
    probs = lenet.probabilities(back)[0]
    assert int(probs.argmax()) == rec["adversarial"]["label"] and float(probs.max()) >= 0.9
    r = cli("attack", path, "--model", "lenet-mnist", "--out", tmp_path / "b", "--json", "--confidence", "0")
    assert json.loads(r.stdout.splitlines()[0])["adversarial"]["confidence"] < 0.9
    one_line_error(cli("attack", path, "--model", "lenet-mnist", "--confidence", "1", "--out", tmp_path / "c"),
                   "confidence")
    assert not (tmp_path / "c").exists()


def test_an_attacks_own_confidence_parameter_is_kept_apart(lenet, mnist_batch):
    x, y = mnist_batch[0][:2], mnist_batch[1][:2]
    res = make_attack("cw", confidence=5.0, steps=5, binary_search_steps=1)(lenet, x, y, confidence=0.9)
    assert res.params["confidence"] == 5.0 and res.params["confidence_required"] == 0.9
