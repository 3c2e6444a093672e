"""Theorem 1's construction: exact fits in float64, checked against a dense triangular solve."""

from __future__ import annotations

import pytest
import torch
from scipy.linalg import solve_triangular

from foolkit.errors import FoolkitError
from foolkit.memorize.expressivity import construct, dedupe, fit_expressivity, random_problem


@pytest.mark.parametrize("targets", ["random", "gaussian", "labels"])
def test_exact_fit_on_random_data(targets):
    z, y = random_problem(1500, 50, targets=targets, seed=1)
    net, rep = fit_expressivity(z, y)
    assert rep.parameters == 2 * 1500 + 50
    assert sum(p.numel() for p in net.parameters()) == rep.parameters
    assert rep.max_abs_error < 1e-6
    assert float((net(z) - y).abs().max()) == pytest.approx(rep.max_abs_error)
    if targets == "labels":
        assert torch.equal(net(z).round(), y)
    assert rep.smallest_eigenvalue > 0


def test_matches_dense_lower_triangular_solve():
    z, y = random_problem(300, 20, seed=2)
    net = construct(z, y, theta=0.5)
    x = z @ net.a
    order = torch.argsort(x)
    xs = x[order].numpy()
    b = net.b.numpy()
    a_mat = (xs[:, None] - b[None, :]).clip(min=0)
    assert (a_mat[~(torch.tril(torch.ones(300, 300)).bool().numpy())] == 0).all()   # lower triangular
    assert (a_mat.diagonal() > 0).all()                                              # positive diagonal
    assert (b[:-1] < xs[:-1]).all() and (xs[:-1] < b[1:]).all()                       # interleaved thresholds
    w_dense = solve_triangular(a_mat, y[order].numpy(), lower=True)
    assert torch.allclose(net.w, torch.from_numpy(w_dense), rtol=1e-6, atol=1e-6 * float(net.w.abs().max()))


def test_midpoint_thresholds_give_larger_weights_than_near_left():
    z, y = random_problem(3000, 30, seed=3)
    _, mid = fit_expressivity(z, y, theta=0.5)
    _, left = fit_expressivity(z, y, theta=1e-3)
    assert left.max_abs_weight < mid.max_abs_weight
    assert left.max_abs_error <= mid.max_abs_error * 1.5


def test_duplicates_are_dropped_and_reported():
    z, y = random_problem(50, 5, seed=4)
    z2 = torch.cat([z, z[:3]])
    y2 = torch.cat([y, y[:3] + 1.0])
    zz, yy, dropped = dedupe(z2, y2)
    assert dropped == 3 and len(zz) == 50
    net, rep = fit_expressivity(z2, y2)
    assert rep.duplicates_dropped == 3 and rep.n == 50 and rep.max_abs_error < 1e-8
    with pytest.raises(FoolkitError):
        construct(z2, y2)


def test_bad_arguments():
    with pytest.raises(FoolkitError):
        random_problem(0, 3)
    with pytest.raises(FoolkitError):
        random_problem(3, 3, targets="nope")
    z, y = random_problem(10, 3)
    with pytest.raises(FoolkitError):
        construct(z, y, theta=1.0)


def test_train_accuracy_counts_every_image_copies_with_other_labels_too(tmp_path):
    """Eight copies of one image labelled a and eight labelled b: the construction fits the one
    distinct point, and train accuracy is the share of the copies with its label, not 100%."""
    from foolkit.images import save_image
    from foolkit.memorize.expressivity import memorize_dataset

    img = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            save_image(img, tmp_path / cls / f"{i}.png")
    res = memorize_dataset(f"folder:{tmp_path}", n=100, random_labels=False)
    assert res["n"] == 1 and res["n_images"] >= 10  # (a few held out for the test split)
    assert 0 < res["train_accuracy"] < 1


@pytest.mark.parametrize("chunk", [1, 7, 64, 512])
def test_the_chunked_forward_pass_is_the_dense_network(chunk):
    """Chunks of any size (a remainder included) give the dense c(z) = relu(<a, z> - b) @ w."""
    from foolkit.memorize.expressivity import TwoLayerReLU

    z, y = random_problem(50, 6, seed=3)
    net = construct(z, y)
    net.chunk = chunk
    dense = ((z @ net.a)[:, None] - net.b[None, :]).clamp(min=0) @ net.w
    assert torch.allclose(net(z), dense, rtol=0, atol=1e-9 * float(dense.abs().max()))
    assert net(z[:0]).shape == (0,)
    assert isinstance(net, TwoLayerReLU)
