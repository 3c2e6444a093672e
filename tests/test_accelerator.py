"""The library on an accelerator: what the CPU-only tests cannot show.

These run on the device named by ``$FOOLKIT_TEST_DEVICE`` (default: ``cuda`` where there is
one) and are skipped where there is none, so CI (no GPU) skips them. On a GPU machine::

    pytest tests/test_accelerator.py            # on cuda
    FOOLKIT_TEST_DEVICE=cpu pytest tests/test_accelerator.py   # the same checks on CPU (they pass there)

Each check runs the same work on CPU and on the device where it can, and compares: CPPN
rendering (sparse and dense products), variation, scoring with ten crops, attacks and whole
runs of every command with ``--device``. Tensors must stay on the device; results must agree
with the CPU to float32 tolerance; runs must fool, and their saved files must fool from disk.

They run in full float32: torch lets cuDNN convolutions use TF32 by default on Ampere and later
GPUs, about 1e-3 relative error, and a claim made at one batch size (≥ 99.99%, "just past the
boundary") may not survive re-measuring at another. ``FOOLKIT_TEST_TF32=1`` runs them with
torch's defaults instead, to see whether it does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from foolkit.evolve import EvolveConfig, run_evolution
from foolkit.evolve import cppn
from foolkit.evolve.encodings import CPPNEncoding, DirectEncoding
from foolkit.evolve.scoring import Scorer
from foolkit.images import load_image, save_image
from foolkit.models import load_model
from foolkit.runs import RunDir


def _device() -> torch.device | None:
    name = os.environ.get("FOOLKIT_TEST_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        return None
    if name == "mps" and not torch.backends.mps.is_available():
        return None
    return torch.device(name)


DEVICE = _device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no accelerator (set FOOLKIT_TEST_DEVICE, or run on a GPU)")


TF32 = os.environ.get("FOOLKIT_TEST_TF32") == "1"
#: how far device logits may be from the CPU's: float32 round-off, or TF32's 10-bit mantissa products
LOGIT_ATOL = 2e-2 if TF32 else 1e-4


@pytest.fixture(autouse=True)
def _float32(monkeypatch: pytest.MonkeyPatch) -> None:
    if not TF32:
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(scope="module")
def model():
    """The bundled LeNet on the device under test."""
    return load_model("lenet-mnist", device=DEVICE)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def _grown_cppns(spec: cppn.CPPNSpec, n: int = 24) -> dict[str, torch.Tensor]:
    """CPU genomes of mixed sizes, grown by mutation."""
    g = cppn.sample(spec, n, torch.Generator().manual_seed(0), "cpu")
    for i in range(25):
        g = cppn.mutate(g, spec, torch.Generator().manual_seed(100 + i))
    return g


@pytest.mark.parametrize("outputs", [1, 3])
def test_cppn_render_on_the_device_equals_the_cpu_render(outputs: int) -> None:
    spec = cppn.CPPNSpec(outputs=outputs, hidden=8, activations=tuple(cppn.ACTIVATIONS))
    g = _grown_cppns(spec)
    expect = cppn.render(g, spec, 17, 23)
    on_dev = {k: v.to(DEVICE) for k, v in g.items()}
    # the device's default (CUDA: the fused kernel), then the step-by-step render with sparse and dense
    # products (MPS's); colour is looser: float32 error through chains of weights, times the hue's 6
    for kw in ({}, {"fused": False}, {"fused": False, "sparse": False}):
        img = cppn.render(on_dev, spec, 17, 23, workspace=cppn.Workspace(min_bytes=0), **kw)
        assert img.device.type == DEVICE.type and img.shape == expect.shape
        assert torch.allclose(img.cpu(), expect, atol=1e-4 if outputs == 1 else 5e-4), (kw, (img.cpu() - expect).abs().max())
    assert torch.equal(cppn.render(on_dev, spec, 17, 23), cppn.render(on_dev, spec, 17, 23))  # deterministic


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_variation_stays_on_the_device_in_range_and_deterministic_by_seed(encoding: str) -> None:
    enc = (DirectEncoding(channels=3, size=(16, 16), device=DEVICE) if encoding == "direct"
           else CPPNEncoding(channels=3, size=(16, 16), device=DEVICE))

    def varied(seed: int) -> dict[str, torch.Tensor]:
        g = enc.sample(12, _gen(seed))
        for generation in range(1, 6):
            a, b = enc.mate({k: v[:6].clone() for k, v in g.items()}, {k: v[6:].clone() for k, v in g.items()},
                            _gen(seed + generation))
            g = enc.mutate({k: torch.cat([a[k], b[k]]) for k in g}, _gen(seed + 10 * generation), generation)
        return g

    first, again, other = varied(1), varied(1), varied(2)
    for k, v in first.items():
        assert v.device.type == DEVICE.type, k
        assert torch.equal(v, again[k]), k
    assert any(not torch.equal(v, other[k]) for k, v in first.items())
    assert not torch.equal(first[next(iter(first))], enc.sample(12, _gen(1))[next(iter(first))])  # variation changed them
    images = enc.decode(first)
    assert images.shape == (12, 3, 16, 16) and images.device.type == DEVICE.type
    assert images.min() >= 0 and images.max() <= 1
    if encoding == "cppn":
        spec = enc.spec
        assert first["w"].abs().max() <= spec.weight_range
        allowed = spec.allowed(DEVICE) & first["alive"][:, :, None] & first["alive"][:, None, :]
        assert not (first["on"] & ~allowed).any()  # no edge out of order, from or to a dead node
        assert torch.equal(first["w"] != 0, first["on"] & (first["w"] != 0))  # weights only on enabled edges


def test_ten_crop_scores_on_the_device_equal_the_cpu_scores(model, lenet) -> None:
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    expect = Scorer(lenet, list(range(10)), crops=10)(x)
    got = Scorer(model, list(range(10)), crops=10)(x.to(DEVICE))
    assert got.device.type == DEVICE.type
    assert torch.allclose(got.cpu(), expect, atol=LOGIT_ATOL)


def test_the_8_bit_grid_on_the_device_is_bit_equal_to_the_cpu_grid() -> None:
    """CUDA divides by a Python number through its reciprocal, one bit off for 126 of the 256
    levels: images quantised on the device must still equal the PNG read back on the CPU."""
    from foolkit.attacks.base import to_grid
    from foolkit.images import quantize

    levels = torch.arange(256.0) / 255  # the CPU's (numpy's, PIL's) k / 255
    x = (levels + torch.rand(256, generator=torch.Generator().manual_seed(0)) * 0.003 - 0.0015).clamp(0, 1)
    assert torch.equal(quantize(x.to(DEVICE)).cpu(), quantize(x.clone()))
    assert torch.equal(quantize(levels.to(DEVICE)).cpu(), levels)
    for bounds in ((0.0, 1.0), (-1.0, 1.0)):
        v = x * (bounds[1] - bounds[0]) + bounds[0]
        assert torch.equal(to_grid(v.to(DEVICE), v.to(DEVICE), bounds).cpu(), to_grid(v, v, bounds))


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_a_short_mnist_run_fools_every_class_and_its_elites_fool_from_disk(model, encoding: str, tmp_path: Path) -> None:
    cfg = EvolveConfig(encoding=encoding, generations=100, population=200, seed=0, until=0.9999)
    res = run_evolution(model, cfg, out=tmp_path / "run", progress=False)
    assert res.stopped == "until" and (res.confidences >= 0.9999).all(), res.confidences
    archive = json.loads((tmp_path / "run" / "archive.json").read_text())
    images = torch.stack([load_image(tmp_path / "run" / c["image"], 1) for c in archive["classes"]]).to(DEVICE)
    labels, conf = model.predict(images)
    assert labels.tolist() == list(range(10)) and (conf >= 0.9999).all(), conf


def test_the_log_read_back_late_on_the_device_is_whole_and_true(model, tmp_path: Path) -> None:
    """On a GPU each generation's figures are read back a generation late (runner.readback_lag):
    every generation is logged once, in order, checkpoints hold the lines up to their generation,
    and the last line is the archive's final state."""
    from foolkit.runs import load_checkpoint

    cfg = EvolveConfig(generations=12, population=64, seed=0, checkpoint_every=5)
    seen: list[int] = []
    res = run_evolution(model, cfg, out=tmp_path / "run", progress=False,
                        on_generation=lambda rec: seen.append(rec["generation"]))
    log = RunDir(tmp_path / "run").read_log()
    assert seen == [r["generation"] for r in log] == list(range(1, 13))
    meta, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert [r["generation"] for r in meta["logbook"]] == list(range(1, 13))
    assert abs(log[-1]["min"] - float(res.confidences.min())) < 1e-4  # (re-measured from the PNGs: 8-bit, as scored)


def test_a_killed_run_resumes_on_the_device_without_repeating_a_generation(model, tmp_path: Path) -> None:
    cfg = EvolveConfig(encoding="cppn", generations=12, population=40, seed=1, checkpoint_every=4)
    whole = run_evolution(model, cfg, out=tmp_path / "whole", progress=False)
    run_evolution(model, EvolveConfig(**{**cfg.to_dict(), "generations": 8}), out=tmp_path / "cut", progress=False)
    resumed = run_evolution(model, cfg, out=tmp_path / "cut", resume=True, progress=False)
    log = RunDir(tmp_path / "cut").read_log()
    assert [r["generation"] for r in log] == list(range(1, 13))
    assert resumed.generations_done == 12 and resumed.evaluations == whole.evaluations
    if not torch.equal(resumed.images, whole.images):  # the README promises this on CPU only
        assert DEVICE.type != "cpu", "on CPU a resumed run must end exactly where an uninterrupted one does"
        pytest.xfail(f"a resumed run on {DEVICE.type} is not bit-identical to an uninterrupted one")


def test_gradient_ascent_on_the_device_reaches_high_confidence(model) -> None:
    res = run_evolution(model, EvolveConfig(method="gradient", generations=60, seed=0, classes=[3, 5]), progress=False)
    assert res.images.device.type in ("cpu", DEVICE.type) and (res.confidences > 0.99).all(), res.confidences


@pytest.mark.parametrize("method", ["auto", "pgd", "cw", "deepfool", "ddn", "fmn", "lbfgs", "fgsm"])
def test_attacks_on_the_device_fool_on_the_8_bit_grid(model, mnist_batch, method: str) -> None:
    from foolkit.attacks import make_attack

    x, y = (t[:8].to(DEVICE) for t in mnist_batch)
    budget = {"eps": 0.3} if method in ("pgd", "fgsm") else {}
    res = make_attack(method, **budget)(model, x, y)
    assert res.adv.device.type == DEVICE.type and res.success.device.type == DEVICE.type
    assert res.success.float().mean() >= (0.5 if method == "fgsm" else 0.99), res.success
    adv = res.adv.cpu()  # on the grid the CPU reads a PNG into, bit for bit
    assert adv.min() >= 0 and adv.max() <= 1 and torch.equal(adv, torch.round(adv * 255) / 255)
    pred, _ = model.predict(res.adv)
    assert torch.equal(pred != y, res.success)


def test_every_command_runs_with_the_device(cli, mnist_batch, tmp_path: Path) -> None:
    dev = str(DEVICE)
    digit = save_image(mnist_batch[0][0], tmp_path / "digit.png")
    for args in (
        ("classify", digit, "--model", "lenet-mnist"),
        ("attack", digit, "--model", "lenet-mnist", "--out", tmp_path / "attack", "--steps", "40"),
        ("evolve", "--model", "lenet-mnist", "-g", "3", "-p", "20", "--encoding", "cppn", "--out", tmp_path / "evolve"),
        ("train", "--model", "lenet", "--dataset", "mnist", "--subset", "100", "--batch-size", "50", "--epochs", "1",
         "--out", tmp_path / "model.pt"),
        ("retrain", "--model", "lenet-mnist", "--dataset", "mnist", "--rounds", "1", "--generations", "2",
         "--population", "8", "--pool-runs", "0", "--subset", "100", "--test-subset", "50", "--finetune-epochs", "1",
         "--out", tmp_path / "retrain"),
        ("memorize", "randomize", "--subset", "100", "--test-subset", "100", "--variants", "true,random-labels",
         "--epochs", "2", "--batch-size", "50", "--out", tmp_path / "memorize"),
    ):
        r = cli(*args, "--device", dev)
        assert r.exit_code == 0, (args[0], r.stderr)
    assert (tmp_path / "attack" / "digit.adv.png").is_file() and (tmp_path / "evolve" / "archive.json").is_file()
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "retrain" / "rounds.json").is_file()
