"""Small shared helpers: devices, seeding, RNG state capture."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch

from foolkit.errors import FoolkitError


def median(values: torch.Tensor) -> float:
    """The median of a tensor's values: the mean of the two middle ones for an even count (as
    numpy's, and every paper's; ``torch.median`` takes the lower one); ``nan`` when empty."""
    v = values.detach().reshape(-1).double()
    return float(v.quantile(0.5)) if v.numel() else math.nan


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given."""
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise FoolkitError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FoolkitError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FoolkitError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise FoolkitError(f"device {device!r} requested but this torch has no MPS (Apple GPU) here; use --device cpu")
    elif dev.type != "cpu":
        raise FoolkitError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (for library code that uses global RNGs, e.g. DEAP).

    foolkit's own code draws from explicit generators; this returns a CPU
    ``torch.Generator`` seeded with ``seed`` for it.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The python / numpy / torch (CPU and CUDA) global RNG states as JSON-able data + tensors."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):  # saved with more GPUs: the ones here
            torch.cuda.set_rng_state(s.cpu(), i)


def format_confidence(c: float) -> str:
    """A caption's percentage, rounded down: 0.999858 reads 99.98%, never a 99.99% it missed."""
    if c >= 0.99999:
        return ">99.999%"
    if 0 < c < 0.0001:  # not a 0.00% it is not
        return "<0.01%"
    digits = 3 if c >= 0.9999 else 2
    return f"{math.floor(c * 100 * 10**digits) / 10**digits:.{digits}f}%"
