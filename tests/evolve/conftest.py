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
