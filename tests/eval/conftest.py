"""Fixtures for the evaluation-harness tests: a small task and the FakeEngine test double."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from resetfp4.eval.datasets import Problem, Task


def load_fake_engine_module():
    """tests/eval/fake_engine.py, imported by path (works whatever the pytest import mode)."""
    name = "resetfp4_tests_fake_engine"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_engine.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture
def fake_engine_cls():
    return load_fake_engine_module().FakeEngine


def make_task(n: int = 6, prefix: str = "q") -> Task:
    probs = [
        Problem(id=f"{prefix}{i}", question=f"Question {prefix}{i}: what is {i} + {i}?", answer=str(2 * i))
        for i in range(n)
    ]
    return Task(name=f"toy-{prefix}", problems=probs)


@pytest.fixture
def toy_task() -> Task:
    return make_task()


def golds_of(*tasks: Task) -> dict[str, str]:
    return {p.question: p.answer for t in tasks for p in t.problems}
