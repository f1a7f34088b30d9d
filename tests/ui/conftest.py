"""Fixtures of the UI's tests: one Chromium for the session (see ``browser.py``)."""

from __future__ import annotations

import pytest
import torch

from .browser import chromium


@pytest.fixture(scope="session")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
