"""Shared fixtures. GPU tests carry ``@pytest.mark.gpu`` and skip with a reason on CPU."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def test_seed() -> int:
    """Every test's seed, drawn from the OS so inputs are new every run; torch's global
    generators (CPU and CUDA) start from it, so tests that draw from them get fresh inputs
    too (unseeded, a new process would replay the same default-seeded draws every run).

    The seed is printed, and pytest shows it with a failure; rerun with
    ``RESETFP4_TEST_SEED=<seed>`` to reproduce that failure exactly.
    """
    fixed = os.environ.get("RESETFP4_TEST_SEED")
    seed = int(fixed) if fixed else int.from_bytes(os.urandom(4), "little") % (2**31)
    print(f"test seed = {seed} (reproduce with RESETFP4_TEST_SEED={seed})")
    torch.manual_seed(seed)
    return seed


@pytest.fixture
def rng(test_seed: int) -> torch.Generator:
    """A CPU generator of its own per test, seeded with the test's printed seed."""
    g = torch.Generator()
    g.manual_seed(test_seed)
    return g


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer, as the engine loads it from its GGUF."""
    from resetfp4.engine.aliases import smollm2_path
    from resetfp4.engine.loader import gguf_tokenizer

    return gguf_tokenizer(smollm2_path())


@pytest.fixture(scope="session")
def smollm2_model():
    """The real SmolLM2-135M-Instruct as an HF transformers model (fp32, CPU, eval mode)."""
    from transformers import AutoModelForCausalLM

    from resetfp4.engine.aliases import smollm2_path

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval()
