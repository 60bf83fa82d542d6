"""Shared fixtures. GPU tests carry ``@pytest.mark.gpu`` and skip with a reason on CPU."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> torch.Generator:
    """A fresh generator per test, seeded from the OS so inputs are new every run.

    The seed is printed on failure (pytest shows captured stdout) to reproduce it.
    """
    seed = torch.seed() % (2**31)
    print(f"rng seed = {seed}")
    g = torch.Generator()
    g.manual_seed(seed)
    return g
