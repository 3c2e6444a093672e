"""Named models and model files → :class:`Classifier`.

* torchvision ImageNet classifiers by name, with their official weights (downloaded and
  cached the torchvision way; offline without the cached file: one clear error);
* small models foolkit trained itself, shipped in ``foolkit/models/weights/`` with a model
  card each;
* a user's own files: ``foolkit train`` output (``NAME.pt`` state dict + ``NAME.json``), a
  ``torch.export`` program (``.pt2``) or TorchScript (``.ts`` / ``.pt``) with a sidecar
  ``NAME.json``: ``{"classes": [...], "input_size": [C, H, W], "mean": [...], "std": [...]}``.

Weights load with ``torch.load(..., weights_only=True)``: no pickle.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foolkit.errors import FoolkitError
from foolkit.models.archs import build_arch
from foolkit.models.classifier import Classifier
from foolkit.runs import atomic_path, atomic_write_json
from foolkit.utils import resolve_device

WEIGHTS_DIR = Path(__file__).parent / "weights"

#: registry name → torchvision weights enum name
TORCHVISION: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "vgg16": "VGG16_Weights",
    "alexnet": "AlexNet_Weights",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights",
    "squeezenet1_1": "SqueezeNet1_1_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
    "convnext_tiny": "ConvNeXt_Tiny_Weights",
    "vit_b_16": "ViT_B_16_Weights",
}


@dataclass
class ModelInfo:
    name: str
    kind: str               #: "torchvision", "bundled"
    input_size: tuple[int, int, int]
    num_classes: int
    offline: bool           #: weights available without a download right now
    weights: str            #: where the weights are (or would be cached)


def bundled_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def _tv_weights(name: str) -> Any:
    import torchvision.models as tvm

    return getattr(tvm, TORCHVISION[name]).IMAGENET1K_V1


def _tv_cache_file(weights: Any) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _tv_spec(name: str) -> tuple[tuple[int, int, int], list[float], list[float]]:
    w = _tv_weights(name)
    t = w.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else int(t.crop_size)
    return (3, crop, crop), list(t.mean), list(t.std)


def list_models() -> list[ModelInfo]:
    """Every registered name, with input size, number of classes and offline availability."""
    rows = []
    for name in TORCHVISION:
        w = _tv_weights(name)
        size, _, _ = _tv_spec(name)
        cache = _tv_cache_file(w)
        rows.append(ModelInfo(name, "torchvision", size, len(w.meta["categories"]), cache.is_file(), str(cache)))
    for name in bundled_models():
        meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        pt = WEIGHTS_DIR / f"{name}.pt"
        rows.append(ModelInfo(name, "bundled", tuple(meta["input_size"]), len(meta["classes"]), pt.is_file(), str(pt)))
    return rows


def _load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FoolkitError(f"no such weights file: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FoolkitError(f"{path} is not a readable weights file ({type(exc).__name__}); "
                           f"expected a state dict saved with torch.save") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FoolkitError(f"{path} does not hold a state dict of tensors")
    return sd


def _apply_state_dict(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        raise FoolkitError(f"weights in {source} do not fit this architecture: {_misfit(net.state_dict(), sd)}") from exc


def _misfit(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor], shown: int = 3) -> str:
    """One line on how state dict ``given`` differs from a network's ``own``: missing and
    unexpected keys and shape mismatches, the first ``shown`` of each (torch's own message
    spreads them over many lines)."""
    def some(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (f" (+{len(items) - shown} more)" if len(items) > shown else "")

    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k} is {list(given[k].shape)} in the file, {list(own[k].shape)} here"
              for k in own if k in given and given[k].shape != own[k].shape]
    parts = [f"{what} {some(items)}" for what, items in (("missing", missing), ("unexpected", unexpected),
                                                          ("shape:", shapes)) if items]
    return "; ".join(parts) or "torch refused the state dict"


def _load_torchvision(name: str, weights: str | None) -> Classifier:
    import torchvision.models as tvm

    w = _tv_weights(name)
    size, mean, std = _tv_spec(name)
    net = tvm.get_model(name, weights=None)
    if weights is not None:
        sd = _load_state_dict(weights)
        source = str(weights)
    else:
        cache = _tv_cache_file(w)
        if cache.is_file():
            sd = _load_state_dict(cache)
        else:
            from foolkit.data import offline

            if offline():
                raise _missing_weights(name, w, cache)
            try:
                sd = w.get_state_dict(progress=True, check_hash=True)
            except Exception as exc:
                raise _missing_weights(name, w, cache) from exc
        source = str(cache)
    _apply_state_dict(net, sd, source)
    return Classifier(net, mean=mean, std=std, classes=list(w.meta["categories"]), input_size=size, name=name,
                      meta={"kind": "torchvision", "weights": source})


def _missing_weights(name: str, w: Any, cache: Path) -> FoolkitError:
    return FoolkitError(f"weights for {name} are not cached and cannot be downloaded (offline?): missing {cache}; "
                        f"download {w.url} to that path, or pass --weights FILE with a local copy")


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise FoolkitError(f"{path} needs a sidecar {side.name} with classes, input_size, mean and std")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FoolkitError(f"{side} is not valid JSON: {exc}") from exc
    problem = _sidecar_problem(meta)
    if problem:
        raise FoolkitError(f"{side}: {problem}")
    return meta


def _numbers(value: Any, n: int) -> bool:
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _sidecar_problem(meta: Any) -> str | None:
    """What is wrong with a sidecar's contents (None if nothing), so a hand-written one fails in
    one line rather than deep inside a command."""
    if not isinstance(meta, dict):
        return "expected a JSON object with classes and input_size"
    missing = [k for k in ("classes", "input_size") if k not in meta]
    if missing:
        return f"lacks {' and '.join(missing)}: it needs classes and input_size"
    classes, size = meta["classes"], meta["input_size"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "classes must be a non-empty list of class names"
    if not (_numbers(size, 3) and all(isinstance(v, int) and v > 0 for v in size)):
        return "input_size must be [C, H, W], three positive integers"
    for key in ("mean", "std"):
        if key in meta and not _numbers(meta[key], size[0]):
            return f"{key} must list one number per channel ({size[0]})"
    if "bounds" in meta and not (_numbers(meta["bounds"], 2) and meta["bounds"][0] < meta["bounds"][1]):
        return "bounds must be [low, high] with low < high"
    if "arch_kwargs" in meta and not isinstance(meta["arch_kwargs"], dict):
        return "arch_kwargs must be an object"
    return None


def _probe(net: Any, meta: dict[str, Any], path: Path) -> None:
    """Check a compiled model against its sidecar with forward passes of one black image and of
    two: logits ``(B, len(classes))``, or one clear error instead of a shape error deep in a
    command (an exported program traced at a fixed batch size takes no other)."""
    side = path.with_suffix(".json").name
    k = len(meta["classes"])
    failed: dict[int, Exception] = {}
    for b in (1, 2):
        try:
            with torch.no_grad():
                out = net(torch.zeros(b, *(int(v) for v in meta["input_size"])))
        except Exception as exc:
            failed[b] = exc
            continue
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (b, k):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FoolkitError(f"{path} outputs {shape} for {b} image{'s' if b > 1 else ''}, but {side} lists {k} "
                               f"classes (expected [{b}, {k}])")
    if failed:
        b, exc = next(iter(failed.items()))
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        if len(failed) == 1:  # one batch size works, the other not: exported at a fixed batch size
            raise FoolkitError(f"{path} takes {3 - b} image{'s' if b == 1 else ''} at a time but not {b}: export it "
                               f"with a dynamic batch dimension (torch.export.Dim) ({type(exc).__name__}: {first})") from exc
        raise FoolkitError(f"{path} does not take the input_size {list(meta['input_size'])} of {side} "
                           f"({type(exc).__name__}: {first})") from exc


def _max_batch(program: Any) -> int | None:
    """The largest batch an exported program takes (its batch dimension's range), or None."""
    try:
        names = {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in names)
        size = node.meta["val"].shape[0]
        if not isinstance(size, torch.SymInt):
            return int(size)
        upper = program.range_constraints[size.node.expr].upper
        return int(upper) if upper < 2**31 else None
    except Exception:  # an unusual program: no cap known, the probe still guards the common cases
        return None


def _load_file(path: Path, weights: str | None) -> Classifier:
    meta = _read_sidecar(path)
    max_batch: int | None = None
    c = int(meta["input_size"][0])
    mean, std = meta.get("mean", [0.0] * c), meta.get("std", [1.0] * c)
    if "arch" in meta:  # a foolkit-trained state dict
        net = build_arch(meta["arch"], in_channels=c, num_classes=len(meta["classes"]),
                         input_hw=(int(meta["input_size"][1]), int(meta["input_size"][2])),
                         **meta.get("arch_kwargs", {}))
        _apply_state_dict(net, _load_state_dict(weights or path), str(weights or path))
    elif weights is not None:
        raise FoolkitError(f"--weights is for foolkit-trained and torchvision models; {path.name} is compiled "
                           "(TorchScript or torch.export) and carries its own weights")
    elif path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
            net = program.module()
        except Exception as exc:
            raise FoolkitError(f"{path} is not a loadable torch.export program ({type(exc).__name__})") from exc
        _probe(net, meta, path)
        max_batch = _max_batch(program)
    else:
        try:
            # TorchScript archives hold TorchScript code and tensors, not pickled Python objects.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise FoolkitError(f"{path} is not a TorchScript model or a foolkit state dict "
                               f"({type(exc).__name__}); sidecar {path.with_suffix('.json').name} has no 'arch'") from exc
        _probe(net, meta, path)
    clf = Classifier(net, mean=mean, std=std, classes=meta["classes"], input_size=meta["input_size"],
                     bounds=tuple(meta.get("bounds", (0.0, 1.0))), name=meta.get("name", path.stem),
                     meta={k: v for k, v in meta.items() if k not in ("classes",)})
    clf.max_batch = max_batch
    return clf


def load_model(name_or_path: str | os.PathLike[str], *, device: str | torch.device = "auto",
               weights: str | os.PathLike[str] | None = None) -> Classifier:
    """A :class:`Classifier` in eval mode on ``device``, by registry name or file path."""
    dev = resolve_device(device)
    name = str(name_or_path)
    weights = str(weights) if weights is not None else None
    if name in TORCHVISION:
        clf = _load_torchvision(name, weights)
    elif name in bundled_models():
        clf = _load_file(WEIGHTS_DIR / f"{name}.pt", weights)
        clf.name = name
    else:
        path = Path(name)
        if path.suffix == ".json":
            path = next((p for p in (path.with_suffix(s) for s in (".pt", ".pt2", ".ts", ".pth")) if p.is_file()), path)
        elif not path.is_file():  # NAME for NAME.pt (what `train --out NAME` wrote), NAME.pt2, ...
            path = next((p for p in (path.with_name(path.name + s) for s in (".pt", ".pt2", ".ts", ".pth"))
                         if p.is_file()), path)
        if not path.exists():
            known = ", ".join(list(TORCHVISION) + bundled_models())
            raise FoolkitError(f"unknown model {name!r}: not a registry name ({known}) nor a file")
        if path.is_dir():
            raise FoolkitError(f"{path} is a directory, not a model file")
        clf = _load_file(path, weights)
    return clf.to(dev).eval()


def save_model(model: Classifier, path: str | os.PathLike[str], *, arch: str, arch_kwargs: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None, name: str | None = None) -> Path:
    """Write ``PATH.pt`` (state dict) and ``PATH.json`` (sidecar) that :func:`load_model` reads back,
    the model named ``name`` (default: the file's stem)."""
    path = Path(path)
    if path.suffix != ".pt":  # appended, not replaced: "mlp-lr0.05" → "mlp-lr0.05.pt"
        path = path.with_name(path.name + ".pt")
    sidecar = {"name": name or path.stem, "arch": arch, "arch_kwargs": arch_kwargs or {}, "classes": model.classes,
               "input_size": list(model.input_size), "mean": model.mean.flatten().tolist(),
               "std": model.std.flatten().tolist(), "bounds": list(model.bounds), **(extra or {})}
    sd = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
    atomic_write_json(path.with_suffix(".json"), sidecar)
    return path


def new_model(arch: str, *, classes: list[str], input_size: tuple[int, int, int], mean: list[float], std: list[float],
              device: str | torch.device = "cpu", name: str | None = None, **arch_kwargs: Any) -> Classifier:
    """A freshly initialised :class:`Classifier` of a named architecture."""
    net = build_arch(arch, in_channels=input_size[0], num_classes=len(classes),
                     input_hw=(input_size[1], input_size[2]), **arch_kwargs)
    clf = Classifier(net, mean=mean, std=std, classes=classes, input_size=input_size, name=name or arch,
                     meta={"arch": arch, "arch_kwargs": arch_kwargs})
    return clf.to(resolve_device(device))
