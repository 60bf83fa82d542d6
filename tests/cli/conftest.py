"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture
def fake_engine_cls():
    """The evaluation tests' FakeEngine (tests/eval/fake_engine.py), loaded as tests/eval does."""
    path = Path(__file__).parents[1] / "eval" / "conftest.py"
    spec = importlib.util.spec_from_file_location("resetfp4_tests_eval_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_fake_engine_module().FakeEngine
