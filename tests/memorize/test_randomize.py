"""The data variants follow the paper's definitions (Zhang et al. 2017, section 2)."""

from __future__ import annotations

import pytest
import torch

from foolkit.errors import FoolkitError
from foolkit.memorize.randomize import corrupt_labels, make_variant, parse_variant, permute_pixels, random_permutations


@pytest.fixture(scope="module")
def data(mnist_test):
    x, y = mnist_test.images(), mnist_test.y
    return x[:600], y[:600], x[600:], y[600:]


def test_corruption_rate_is_about_point_nine_p():
    y = torch.randint(10, (20000,), generator=torch.Generator().manual_seed(1))
    for p in (0.2, 0.5, 1.0):
        new, replaced = corrupt_labels(y, p, 10, torch.Generator().manual_seed(2))
        assert abs(float(replaced.float().mean()) - p) < 0.015
        changed = float((new != y).float().mean())
        assert abs(changed - 0.9 * p) < 0.015, (p, changed)
        assert (new[~replaced] == y[~replaced]).all()            # untouched where not replaced
        # replaced labels are uniform over all classes (including the old one)
        counts = torch.bincount(new[replaced], minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02


def test_corrupt_variant_keeps_mask_and_never_touches_test(data):
    x, y, xt, yt = data
    v = make_variant("corrupt:0.5", x, y, xt, yt, num_classes=10, seed=3)
    assert v.corruption == 0.5 and v.name == "corrupt:0.5"
    assert torch.equal(v.y_original, y) and torch.equal(v.y_test, yt) and torch.equal(v.x_test, xt)
    assert torch.equal(v.x_train, x)
    assert (v.y_train[~v.replaced] == y[~v.replaced]).all()
    assert 0.3 < float(v.replaced.float().mean()) < 0.7
    # fixed labels: the same seed gives the same labels, another seed different ones
    again = make_variant("corrupt:0.5", x, y, xt, yt, num_classes=10, seed=3)
    other = make_variant("corrupt:0.5", x, y, xt, yt, num_classes=10, seed=4)
    assert torch.equal(again.y_train, v.y_train) and not torch.equal(other.y_train, v.y_train)


def test_random_labels_are_uniform_and_independent_of_images(data):
    x, y, xt, yt = data
    v = make_variant("random-labels", x, y, xt, yt, num_classes=10, seed=0)
    assert v.corruption == 1.0 and v.replaced.all()
    assert 0.8 < v.changed_fraction < 0.97
    assert torch.equal(v.y_test, yt)


def test_shuffled_pixels_one_permutation_for_train_and_test(data):
    x, y, xt, yt = data
    v = make_variant("shuffled-pixels", x, y, xt, yt, num_classes=10, seed=0)
    flat, vflat = x.flatten(1), v.x_train.flatten(1)
    # recover the permutation from one image with distinct pixel values: use a probe image
    probe = torch.arange(784, dtype=torch.float32).view(1, 1, 28, 28)
    vp = make_variant("shuffled-pixels", torch.cat([probe, x]), torch.cat([y[:1], y]), probe, y[:1], num_classes=10, seed=0)
    perm = vp.x_train[0].flatten().long()
    assert torch.equal(perm.sort().values, torch.arange(784))        # a permutation
    assert not torch.equal(perm, torch.arange(784))
    assert torch.equal(vflat, flat[:, perm])                          # every train image, same permutation
    assert torch.equal(vp.x_test[0].flatten().long(), perm)           # and the test images too
    assert torch.equal(v.x_test.flatten(1), xt.flatten(1)[:, perm])
    assert torch.equal(v.y_train, y) and torch.equal(v.y_test, yt)


def test_random_pixels_a_different_permutation_per_image():
    perms = random_permutations(50, 784, torch.Generator().manual_seed(0))
    assert torch.equal(perms.sort(dim=1).values, torch.arange(784).expand(50, 784))
    assert len({tuple(p.tolist()) for p in perms}) == 50
    probe = torch.arange(784, dtype=torch.float32).view(1, 1, 28, 28).expand(40, 1, 28, 28).clone()
    v = make_variant("random-pixels", probe, torch.zeros(40, dtype=torch.long), probe[:5], torch.zeros(5, dtype=torch.long),
                     num_classes=10, seed=0)
    got = v.x_train.flatten(1).long()
    assert torch.equal(got.sort(dim=1).values, torch.arange(784).expand(40, 784))   # each image a permutation of itself
    assert len({tuple(r.tolist()) for r in got}) == 40                              # all different
    assert not torch.equal(v.x_test.flatten(1).long(), torch.arange(784).expand(5, 784))


def test_permute_pixels_moves_all_channels_alike():
    x = torch.rand(3, 3, 4, 4)
    perm = random_permutations(3, 16, torch.Generator().manual_seed(1))
    out = permute_pixels(x, perm)
    for i in range(3):
        for c in range(3):
            assert torch.equal(out[i, c].flatten(), x[i, c].flatten()[perm[i]])


def test_gaussian_matches_mean_and_variance_and_own_normalisation(data):
    x, y, xt, yt = data
    v = make_variant("gaussian", x, y, xt, yt, num_classes=10, seed=0)
    assert abs(float(v.x_train.mean()) - float(x.mean())) < 2e-3
    assert abs(float(v.x_train.var()) - float(x.var())) < 2e-3
    assert abs(float(v.x_test.mean()) - float(x.mean())) < 5e-3
    assert v.x_train.shape == x.shape and v.x_test.shape == xt.shape
    # normalised with its own statistics (which equal the data's up to sampling noise)
    assert v.mean == pytest.approx(v.x_train.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert v.std[0] == pytest.approx(float(v.x_train.std()), rel=1e-4)
    assert torch.equal(v.y_train, y)
    # each variant has its own statistics: random pixels keep the pixel histogram, so the same mean
    rp = make_variant("random-pixels", x, y, xt, yt, num_classes=10, seed=0)
    assert rp.mean == pytest.approx(v.mean, abs=5e-3)


def test_parse_variant_rejects_bad_specs():
    assert parse_variant("true") == ("true", 0.0)
    assert parse_variant("corrupt:0.40") == ("corrupt:0.4", 0.4)
    for bad in ("corrupt:1.5", "corrupt:x", "noise"):
        with pytest.raises(FoolkitError):
            parse_variant(bad)
