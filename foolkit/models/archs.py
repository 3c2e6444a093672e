"""Architectures for the experiments.

* :class:`LeNet` — the Caffe LeNet of Nguyen et al. (conv20-pool-conv50-pool-fc500-fc).
* :class:`MLP` — width/depth with dropout, batch-norm and maxout switches (Zhang et al.'s
  ``mlp1x512`` / ``mlp3x512``; Srivastava et al.'s dropout nets; maxout units).
* :class:`SmallInception`, :class:`SmallAlexNet` — Zhang et al. 2017, appendix A.
* :class:`SmallResNet` — a ResNet-20-style net for CIFAR-10.

All take normalised images ``(B, C, H, W)`` and return logits; wrap them in a
:class:`~foolkit.models.classifier.Classifier` to feed images in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from foolkit.errors import FoolkitError


def _pair(hw: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of an image size given as one side or as two."""
    return (int(hw), int(hw)) if isinstance(hw, int) else (int(hw[0]), int(hw[1]))


def _flat_side(arch: str, hw: int | Sequence[int], shrink: Callable[[int], int], smallest: int) -> tuple[int, int]:
    """What ``arch``'s convolutions leave of an image of size ``hw``: ``(shrink(h), shrink(w))``,
    refusing images too small for them (one line, not a crash later in a matrix product)."""
    h, w = _pair(hw)
    if min(h, w) < smallest:
        raise FoolkitError(f"{arch} takes images of at least {smallest}x{smallest} pixels, got {h}x{w}")
    return shrink(h), shrink(w)


class LeNet(nn.Module):
    """Caffe's MNIST LeNet (as used by Nguyen et al. 2015): conv5×5·20 → max-pool 2 →
    conv5×5·50 → max-pool 2 → fc500 → ReLU → fc. Like Caffe's, no nonlinearity after the
    convolutions; ``dropout`` adds dropout before the last layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_hw: int | Sequence[int] = 28,
                 dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        )
        rows, cols = _flat_side("lenet", input_hw, lambda n: ((n - 4) // 2 - 4) // 2, 16)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * rows * cols, 500), nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Maxout(nn.Module):
    """A maxout layer: ``k`` affine pieces per unit, output their maximum (Goodfellow et al. 2013)."""

    def __init__(self, in_features: int, out_features: int, k: int):
        super().__init__()
        self.k = k
        self.out_features = out_features
        self.linear = nn.Linear(in_features, out_features * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(*x.shape[:-1], self.out_features, self.k).amax(dim=-1)


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units (ReLU, or maxout with ``maxout=k`` pieces),
    optional batch-norm and (inverted) dropout on inputs and hidden units."""

    def __init__(self, in_features: int, num_classes: int = 10, *, width: int = 512, depth: int = 1,
                 dropout: float = 0.0, input_dropout: float = 0.0, batchnorm: bool = False, maxout: int = 0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        prev = in_features
        for _ in range(depth):
            if maxout and maxout > 1:
                layers.append(Maxout(prev, width, maxout))
            else:
                layers.append(nn.Linear(prev, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            if not maxout or maxout <= 1:
                layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _BatchNormShift(nn.Module):
    """Batch-norm with a learned shift but no scale (TensorFlow's default, as in the
    paper's Inception: this is what makes the parameter count 1,649,402)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) + self.bias


def _conv(cin: int, cout: int, k: int, stride: int = 1, batchnorm: bool = True) -> nn.Sequential:
    """Zhang et al.'s conv module: convolution → batch-norm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not batchnorm),
        _BatchNormShift(cout) if batchnorm else nn.Identity(), nn.ReLU(inplace=True),
    )


class _InceptionModule(nn.Module):
    def __init__(self, cin: int, ch1: int, ch3: int, batchnorm: bool):
        super().__init__()
        self.b1 = _conv(cin, ch1, 1, batchnorm=batchnorm)
        self.b3 = _conv(cin, ch3, 3, batchnorm=batchnorm)
        self.out_channels = ch1 + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], dim=1)


class _Downsample(nn.Module):
    def __init__(self, cin: int, ch3: int, batchnorm: bool):
        super().__init__()
        self.conv = _conv(cin, ch3, 3, stride=2, batchnorm=batchnorm)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = ch3 + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class SmallInception(nn.Module):
    """The small Inception of Zhang et al. 2017 (appendix A, fig. 3) for 28–32 px inputs."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, *, batchnorm: bool = True, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, 96, 3, batchnorm=batchnorm)]
        c = 96
        plan: list[tuple[str, tuple[int, ...]]] = [
            ("i", (32, 32)), ("i", (32, 48)), ("d", (80,)),
            ("i", (112, 48)), ("i", (96, 64)), ("i", (80, 80)), ("i", (48, 96)), ("d", (96,)),
            ("i", (176, 160)), ("i", (176, 160)),
        ]
        for kind, args in plan:
            m = _InceptionModule(c, *args, batchnorm) if kind == "i" else _Downsample(c, *args, batchnorm)
            layers.append(m)
            c = m.out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallAlexNet(nn.Module):
    """Zhang et al.'s small AlexNet: two (conv5×5·64 → max-pool 3×3/2 → LRN) modules, then
    fc384 → fc192 → fc. 1,387,786 parameters on 28×28×3 inputs, as in the paper."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_hw: int | Sequence[int] = 28, *,
                 dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()

        def block(cin: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, 64, 5, padding=2), nn.BatchNorm2d(64) if batchnorm else nn.Identity(),
                    nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
                    nn.LocalResponseNorm(4, alpha=0.001 / 9.0, beta=0.75, k=1.0)]

        self.features = nn.Sequential(*block(in_channels), *block(64))
        rows, cols = _flat_side("small-alexnet", input_hw, lambda n: ((n + 1) // 2 + 1) // 2, 1)
        drop: Callable[[], nn.Module] = (lambda: nn.Dropout(dropout)) if dropout > 0 else nn.Identity
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * rows * cols, 384), nn.ReLU(inplace=True), drop(),
            nn.Linear(384, 192), nn.ReLU(inplace=True), drop(), nn.Linear(192, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs (He et al. 2016, CIFAR-10 variant); ``n=3`` is ResNet-20."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, *, n: int = 3, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        c = width
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(_BasicBlock(c, w, 2 if (stage > 0 and i == 0) else 1))
                c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _mlp(depth: int) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, input_hw: int | Sequence[int], **kw: Any) -> nn.Module:
        kw.setdefault("depth", depth)
        h, w = _pair(input_hw)
        return MLP(in_channels * h * w, num_classes, **kw)
    return build


#: name → builder(in_channels, num_classes, input_hw, **kwargs); ``input_hw``: ``(height, width)`` or one side
ARCHS: dict[str, Callable[..., nn.Module]] = {
    "lenet": lambda in_channels, num_classes, input_hw, **kw: LeNet(in_channels, num_classes, input_hw, **kw),
    "mlp": _mlp(1),
    "mlp1x512": _mlp(1),
    "mlp3x512": _mlp(3),
    "small-inception": lambda in_channels, num_classes, input_hw, **kw: SmallInception(in_channels, num_classes, **kw),
    "small-alexnet": lambda in_channels, num_classes, input_hw, **kw: SmallAlexNet(in_channels, num_classes, input_hw, **kw),
    "small-resnet": lambda in_channels, num_classes, input_hw, **kw: SmallResNet(in_channels, num_classes, **kw),
}


_PROB = "probability"   # a real number in [0, 1)
_COUNT = "count"        # an integer >= 1
_PIECES = "pieces"      # an integer >= 0 (maxout: 0 or 1 is off)
_SWITCH = "switch"      # true or false

_MLP_OPTIONS = {"width": _COUNT, "depth": _PIECES, "dropout": _PROB, "input_dropout": _PROB, "batchnorm": _SWITCH,
                "maxout": _PIECES}

#: name → the options (``--arch-opt KEY=VALUE``) its builder takes, and what kind of value each is
ARCH_OPTIONS: dict[str, dict[str, str]] = {
    "lenet": {"dropout": _PROB},
    "mlp": _MLP_OPTIONS,
    "mlp1x512": _MLP_OPTIONS,
    "mlp3x512": _MLP_OPTIONS,
    "small-inception": {"batchnorm": _SWITCH, "dropout": _PROB},
    "small-alexnet": {"dropout": _PROB, "batchnorm": _SWITCH},
    "small-resnet": {"n": _COUNT, "width": _COUNT},
}


def check_arch_options(name: str, options: dict[str, Any]) -> None:
    """Check ``options`` for architecture ``name`` before anything is built or loaded: known
    names only, and values of the right kind and range. Raises :class:`FoolkitError` (one line)."""
    if name not in ARCHS:
        raise FoolkitError(f"unknown architecture {name!r}; choose from {', '.join(sorted(ARCHS))}")
    allowed = ARCH_OPTIONS.get(name, {})
    for key, value in options.items():
        kind = allowed.get(key)
        if kind is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise FoolkitError(f"architecture {name!r} has no option {key!r} (its options: {known})")
        if kind == _SWITCH:
            if not isinstance(value, bool):
                raise FoolkitError(f"{name} option {key} must be true or false, got {value!r}")
        elif kind == _PROB:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise FoolkitError(f"{name} option {key} must be a probability in [0, 1), got {value!r}")
        else:
            low = 1 if kind == _COUNT else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise FoolkitError(f"{name} option {key} must be a whole number >= {low}, got {value!r}")


def build_arch(name: str, *, in_channels: int, num_classes: int, input_hw: int | Sequence[int],
               **kwargs: Any) -> nn.Module:
    """Instantiate a named architecture; unknown names and bad options raise :class:`FoolkitError`."""
    if name not in ARCHS:
        raise FoolkitError(f"unknown architecture {name!r}; choose from {', '.join(sorted(ARCHS))}")
    try:
        return ARCHS[name](in_channels, num_classes, input_hw, **kwargs)
    except (TypeError, ValueError) as exc:
        raise FoolkitError(f"bad options for architecture {name!r}: {exc}") from exc


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def architectures() -> Sequence[str]:
    return sorted(ARCHS)
