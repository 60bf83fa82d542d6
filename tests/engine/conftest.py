"""Shared fixtures for engine tests: the SmolLM2 tokenizer and tiny random HF folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file
from tiny_models import random_state, tiny_args


@pytest.fixture(scope="session")
def smol_tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, smol_tokenizer):
    """``make(arch) -> Path``: a tiny HF folder (config.json, safetensors, tokenizer files)."""
    made: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in made:
            d = tmp_path_factory.mktemp(f"tiny-{arch}")
            args = tiny_args(arch)
            save_file(random_state(args), str(d / "model.safetensors"))
            (d / "config.json").write_text(json.dumps(args.to_hf_config()))
            smol_tokenizer.save_pretrained(str(d))
            made[arch] = d
        return made[arch]

    return make


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
