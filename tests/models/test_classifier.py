"""Classifier owns normalisation; user model files (torch.export, TorchScript, foolkit state dicts)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from foolkit.errors import FoolkitError
from foolkit.models import Classifier, load_model, new_model, save_model


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(self.conv(x)).mean(dim=(2, 3))))


def test_forward_normalises_with_mean_and_std():
    net = _Tiny().eval()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    clf = Classifier(net, mean=mean, std=std, classes=list("abcde"), input_size=(3, 8, 8)).eval()
    x = torch.rand(4, 3, 8, 8)
    manual = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(clf(x), manual, atol=1e-6)
    assert clf.num_classes == 5 and clf.input_size == (3, 8, 8) and clf.bounds == (0.0, 1.0)
    labels, conf = clf.predict(x)
    assert torch.equal(labels, manual.argmax(1)) and torch.allclose(conf, manual.softmax(1).max(1).values)


def test_bad_construction_values():
    with pytest.raises(FoolkitError):
        Classifier(_Tiny(), mean=[0.5, 0.5], std=[1, 1, 1], classes=["a"], input_size=(3, 8, 8))
    with pytest.raises(FoolkitError):
        Classifier(_Tiny(), mean=[0.5], std=[0.0], classes=["a"], input_size=(3, 8, 8))


def test_class_index_by_name_and_number():
    clf = Classifier(_Tiny(), mean=[0], std=[1], classes=["tabby cat", "dog", "koala", "x", "y"], input_size=(3, 8, 8))
    assert clf.class_index("Koala") == 2 and clf.class_index("1") == 1 and clf.class_index(4) == 4
    assert clf.class_index("Tabby-Cat") == clf.class_index("tabby_cat") == clf.class_index(" tabby  cat") == 0
    for bad in ("zebra", "5", "-1", 7):
        with pytest.raises(FoolkitError):
            clf.class_index(bad)
    digits = Classifier(_Tiny(), mean=[0], std=[1], classes=[str(i) for i in range(10)], input_size=(3, 8, 8))
    for bad in ("-1", "-3", "10"):  # a negative number is not the class it names without its sign
        with pytest.raises(FoolkitError, match="out of range"):
            digits.class_index(bad)


def _sidecar(path, **extra):
    meta = {"classes": [f"c{i}" for i in range(5)], "input_size": [3, 8, 8], "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25], **extra}
    path.with_suffix(".json").write_text(json.dumps(meta))


def _export(net: nn.Module, path, *, dynamic: bool = True, batch: int = 2, max_batch: int = 4096) -> None:
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=max_batch)}} if dynamic else None
    torch.export.save(torch.export.export(net, (torch.randn(batch, 3, 8, 8),), dynamic_shapes=shapes), str(path))


def test_torch_export_program_loads_and_survives_eval(tmp_path):
    net = _Tiny().eval()
    program = torch.export.export(net, (torch.randn(2, 3, 8, 8),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    _sidecar(path)
    clf = load_model(path, device="cpu")
    with pytest.raises((NotImplementedError, RuntimeError)):
        clf.net.eval()  # the exported module itself refuses ...
    clf.eval()          # ... but the Classifier does not
    clf.train()
    clf.eval()
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(clf(x), net((x - 0.5) / 0.25), atol=1e-5)
    assert clf.classes[0] == "c0" and clf.input_size == (3, 8, 8)
    assert clf.probabilities(x).shape == (2, 5)


def test_an_export_with_a_capped_batch_is_fed_in_chunks(tmp_path):
    """Exported with at most 4 images a batch, it crashed evolve's batch of 100 with a traceback."""
    net = _Tiny().eval()
    path = tmp_path / "model.pt2"
    _export(net, path, max_batch=4)
    _sidecar(path)
    clf = load_model(path, device="cpu")
    x = torch.rand(10, 3, 8, 8)
    assert clf.max_batch == 4 and torch.allclose(clf(x), net((x - 0.5) / 0.25), atol=1e-5)
    assert load_model(tmp_path / "model", device="cpu").max_batch == 4  # -m NAME finds NAME.pt2 too


@pytest.mark.parametrize("case, fragment", [
    ("fixed-batch", "takes 2 images at a time but not 1: export it with a dynamic batch dimension"),
    ("fixed-batch-1", "takes 1 image at a time but not 2: export it"),  # (it blamed the sidecar's input_size)
    ("too-few-classes", "lists 2 classes"),
    ("weights", "carries its own weights"),
])
def test_an_exported_program_is_checked_against_its_sidecar_in_one_line(tmp_path, case, fragment):
    path = tmp_path / "model.pt2"
    _export(_Tiny().eval(), path, dynamic=not case.startswith("fixed-batch"), batch=1 if case == "fixed-batch-1" else 2)
    _sidecar(path, **({"classes": ["a", "b"]} if case == "too-few-classes" else {}))
    with pytest.raises(FoolkitError) as info:
        load_model(path, device="cpu", weights=path if case == "weights" else None)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_torchscript_model_loads(tmp_path):
    net = _Tiny().eval()
    path = tmp_path / "model.ts"
    torch.jit.script(net).save(str(path))
    _sidecar(path)
    clf = load_model(path, device="cpu")
    x = torch.rand(3, 3, 8, 8)
    assert torch.allclose(clf(x), net((x - 0.5) / 0.25), atol=1e-5)


def test_saved_state_dict_round_trip(tmp_path):
    clf = new_model("lenet", classes=[str(i) for i in range(10)], input_size=(1, 28, 28), mean=[0.1], std=[0.3])
    path = save_model(clf, tmp_path / "m", arch="lenet", extra={"note": "x"})
    back = load_model(path, device="cpu")
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(back(x), clf.eval()(x)) and back.meta["note"] == "x"
    # the sidecar path works as the model name too
    assert load_model(path.with_suffix(".json"), device="cpu").num_classes == 10


@pytest.mark.parametrize("case", ["no-sidecar", "bad-json", "garbage", "wrong-shape", "directory", "missing"])
def test_bad_model_files_raise_one_clear_error(tmp_path, case):
    path = tmp_path / "m.pt"
    if case == "directory":
        path = tmp_path / "dir.pt"
        path.mkdir()
    elif case != "missing":
        path.write_bytes(b"\x00garbage" * 10)
    if case == "bad-json":
        path.with_suffix(".json").write_text("{not json")
    elif case in ("garbage",):
        _sidecar(path)
    elif case == "wrong-shape":
        clf = new_model("lenet", classes=list("ab"), input_size=(1, 28, 28), mean=[0], std=[1])
        save_model(clf, path, arch="lenet")
        meta = json.loads(path.with_suffix(".json").read_text())
        meta["classes"] = list("abc")  # 3 outputs expected, weights have 2
        path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(FoolkitError) as info:
        load_model(path, device="cpu")
    assert "\n" not in str(info.value)


def test_weights_only_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    clf = new_model("lenet", classes=list("ab"), input_size=(1, 28, 28), mean=[0], std=[1])
    save_model(clf, tmp_path / "ok", arch="lenet")
    with pytest.raises(FoolkitError):
        load_model(tmp_path / "ok.pt", device="cpu", weights=path)


@pytest.mark.parametrize("meta, message", [({"classes": ["a", "b", "c"]}, "outputs \\[1, 5\\] for 1 image, but model.json lists 3"),
                                           ({"input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]},
                                            "does not take the input_size \\[1, 8, 8\\]")])
def test_a_sidecar_that_does_not_fit_its_model_is_one_clear_error(tmp_path, meta, message):
    path = tmp_path / "model.ts"
    torch.jit.script(_Tiny().eval()).save(str(path))
    _sidecar(path, **meta)
    with pytest.raises(FoolkitError, match=message):
        load_model(path, device="cpu")


@pytest.mark.parametrize("meta, message", [
    (5, "expected a JSON object"),
    ({"classes": ["a"]}, "lacks input_size"),
    ({"classes": 3, "input_size": [1, 28, 28]}, "classes must be a non-empty list"),
    ({"classes": [], "input_size": [1, 28, 28]}, "classes must be a non-empty list"),
    ({"classes": ["a", "b"], "input_size": 5}, "input_size must be"),
    ({"classes": ["a", "b"], "input_size": [1, "x", 28]}, "input_size must be"),
    ({"classes": ["a", "b"], "input_size": [1, 0, 28]}, "input_size must be"),
    ({"classes": ["a", "b"], "input_size": [1, 28, 28], "mean": [0.1, 0.2]}, "mean must list one number per channel"),
    ({"classes": ["a", "b"], "input_size": [1, 28, 28], "std": "x"}, "std must list"),
    ({"classes": ["a", "b"], "input_size": [1, 28, 28], "bounds": [1, 0]}, "bounds must be"),
    ({"classes": ["a", "b"], "input_size": [1, 28, 28], "arch": "lenet", "arch_kwargs": [1]}, "arch_kwargs must be"),
])
def test_a_malformed_sidecar_is_one_clear_error(tmp_path, meta, message):
    """A hand-written sidecar with the wrong types fails in one line naming the field, not with a
    TypeError from deep inside loading."""
    path = tmp_path / "m.pt"
    save_model(new_model("lenet", classes=list("ab"), input_size=(1, 28, 28), mean=[0], std=[1]), path, arch="lenet")
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(FoolkitError, match=message) as info:
        load_model(path, device="cpu")
    assert "\n" not in str(info.value) and "m.json" in str(info.value)


def test_the_fingerprint_tells_weights_apart_and_only_them():
    a = new_model("lenet", classes=list("ab"), input_size=(1, 28, 28), mean=[0.1], std=[0.3])
    b = new_model("lenet", classes=list("ab"), input_size=(1, 28, 28), mean=[0.1], std=[0.3])
    b.load_state_dict(a.state_dict())
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    with torch.no_grad():
        next(b.net.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp or so
    assert a.fingerprint() != b.fingerprint()
    c = new_model("lenet", classes=list("ab"), input_size=(1, 28, 28), mean=[0.2], std=[0.3])
    c.net.load_state_dict(a.net.state_dict())
    assert c.fingerprint() != a.fingerprint()  # the normalisation is part of the model
