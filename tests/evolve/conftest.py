"""Fixtures for the evolution tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sparse", "dense"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both ways the operators work: sparse (the CPU's: only the picked genes are
    drawn) and dense (an accelerator's: every gene, no host sync), here both on the CPU."""
    if request.param == "dense":
        monkeypatch.setattr("foolkit.evolve.operators.sparse_on", lambda device: False)
    return request.param


@pytest.fixture
def triton_interpreter(tmp_path):
    """:func:`run_in_triton_interpreter` in the test's own ``tmp_path``."""
    return lambda code, inputs: run_in_triton_interpreter(code, tmp_path, inputs)


def run_in_triton_interpreter(code: str, tmp_path, inputs: object) -> object:
    """Run ``code`` in a fresh Python with ``TRITON_INTERPRET=1`` (Triton reads it as it is
    imported), so foolkit's GPU kernels run on CPU tensors in Triton's interpreter. ``code`` sees
    ``inputs`` (anything ``torch.save`` keeps) and sets ``outputs``; returns it. Skips without triton."""
    import os
    import subprocess
    import sys

    import torch

    pytest.importorskip("triton")
    script = ("import sys, torch\ninputs = torch.load(sys.argv[1], weights_only=True)\n" + code
              + "\ntorch.save(outputs, sys.argv[2])\n")
    torch.save(inputs, tmp_path / "inputs.pt")
    subprocess.run([sys.executable, "-c", script, tmp_path / "inputs.pt", tmp_path / "outputs.pt"], check=True,
                   env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    return torch.load(tmp_path / "outputs.pt", weights_only=True)
