"""Fixtures shared by unit tests."""

import pytest
import torch


@pytest.fixture
def one_thread(monkeypatch):
    """Small tensor work runs faster on one thread (and much faster when the 2 cores are busy);
    the thread count is restored afterwards (runs' threads=auto follows OMP_NUM_THREADS). Use
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)
