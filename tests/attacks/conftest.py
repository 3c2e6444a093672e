"""Attack tests run single-threaded: the tiny LeNet batches gain nothing from a second thread, and
on a shared CPU two threads spinning on each other make them many times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")  # not "package": without an __init__.py it lasts to the session's end
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
