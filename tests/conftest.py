"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny networks on one torch thread (restored afterwards). Tiny tensors gain little from
    a second thread, and on a busy machine OpenMP's spin-waiting threads slow them several- to ten-fold.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
