"""The registry: names, the offline error, local weights, bundled models and their model cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from foolkit.errors import FoolkitError
from foolkit.models import list_models, load_model
from foolkit.models.registry import WEIGHTS_DIR

REQUIRED = ["resnet18", "resnet50", "vgg16", "alexnet", "mobilenet_v3_small", "squeezenet1_1", "efficientnet_b0",
            "convnext_tiny", "vit_b_16", "lenet-mnist", "lenet-fashion"]


def test_every_required_name_is_listed():
    rows = {m.name: m for m in list_models()}
    for name in REQUIRED:
        assert name in rows
    assert rows["resnet50"].num_classes == 1000 and rows["resnet50"].input_size == (3, 224, 224)
    assert rows["lenet-mnist"].offline and rows["lenet-mnist"].input_size == (1, 28, 28)
    assert not rows["resnet18"].offline  # the test cache is empty


def test_offline_without_cached_weights_says_which_file_and_where(tmp_path):
    with pytest.raises(FoolkitError) as info:
        load_model("resnet18", device="cpu")
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and "checkpoints" in msg
    assert "--weights" in msg and "\n" not in msg


def test_local_weights_file_and_cached_file(tmp_path):
    import torchvision

    net = torchvision.models.squeezenet1_1(weights=None)
    path = tmp_path / "sq.pth"
    torch.save(net.state_dict(), path)
    clf = load_model("squeezenet1_1", device="cpu", weights=path)
    assert clf.num_classes == 1000 and clf.classes[281] == "tabby" and not clf.training
    x = torch.rand(1, 3, 224, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(clf(x), net.eval()((x - mean) / std), atol=1e-5)
    # once the file sits where torchvision caches it, the name alone works offline
    cache = torch.hub.get_dir() + "/checkpoints/squeezenet1_1-b8a52dc0.pth"
    import os
    import shutil

    os.makedirs(os.path.dirname(cache), exist_ok=True)
    shutil.copy(path, cache)
    assert load_model("squeezenet1_1", device="cpu").num_classes == 1000
    assert {m.name: m for m in list_models()}["squeezenet1_1"].offline


def test_unknown_model_name():
    with pytest.raises(FoolkitError, match="unknown model"):
        load_model("resnet9000", device="cpu")


@pytest.mark.parametrize("name,dataset,floor", [
    ("lenet-mnist", "mnist", 0.98),
    pytest.param("lenet-fashion", "fashion-mnist", 0.89, marks=pytest.mark.skipif(
        not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")),
])
def test_bundled_models_reach_their_model_card_accuracy(name, dataset, floor):
    """Accuracy on held-out data matches the model card (and the issue's floor)."""
    from foolkit.data import load_dataset
    from foolkit.models.training import evaluate

    card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert (WEIGHTS_DIR / f"{name}.md").is_file()
    test = load_dataset(dataset, "test", quiet=True)
    model = load_model(name, device="cpu")
    acc, _ = evaluate(model, test.images(), test.y)
    assert acc >= floor
    if card["test_size"] == len(test):
        assert acc == pytest.approx(card["test_accuracy"], abs=1e-4)
    assert (WEIGHTS_DIR / f"{name}.pt").stat().st_size < 4_000_000


def test_weights_of_another_architecture_say_what_does_not_fit_in_one_line(tmp_path):
    from foolkit.models import new_model

    mlp = new_model("mlp1x512", classes=[str(i) for i in range(10)], input_size=(1, 28, 28), mean=[0.0], std=[1.0])
    sd = {k: v for k, v in mlp.net.state_dict().items()}
    torch.save(sd, tmp_path / "mlp.pt")
    with pytest.raises(FoolkitError) as err:
        load_model("lenet-mnist", weights=tmp_path / "mlp.pt", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "unexpected" in msg and "more)" in msg
    assert all(k in msg for k in list(sd)[:1])  # the keys themselves, not torch's "Error(s) in loading" header
