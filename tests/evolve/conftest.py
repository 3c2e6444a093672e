"""Fixtures for the evolution tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["compiled", "sparse", "dense"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on every way the operators work, all here on the CPU: compiled (the CPU's with
    numba: :mod:`foolkit.evolve.variation_cpu` and :mod:`foolkit.evolve.cppn_cpu`), sparse (the
    CPU's without it: torch passes over only the picked genes) and dense (an accelerator's: every
    gene, no host sync)."""
    from foolkit.evolve import cppn_cpu

    if request.param == "compiled" and not cppn_cpu.available():
        pytest.skip("numba not installed or FOOLKIT_NUMBA=0")
    if request.param != "compiled":
        monkeypatch.setenv("FOOLKIT_NUMBA", "0")
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
