"""The compiled decode forward on CPU: freed with its model; only compile errors fall back."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from tiny_models import tiny_args

from resetfp4.engine import decode
from resetfp4.engine.build import random_model
from resetfp4.engine.decode import DecodeRunner

CPU = torch.device("cpu")


def tiny_runner(compile: bool) -> DecodeRunner:
    model = random_model(tiny_args("llama", vocab_size=64), "fp32", CPU)
    model.setup_cache(1, 16)
    return DecodeRunner(model, sampler=None, use_graphs=False, compile=compile)


def test_compiled_model_is_garbage_collected():
    runner = tiny_runner(compile=True)
    assert runner.compiled is not None and runner.compiled is decode._compiled(runner.model)
    ref = weakref.ref(runner.model)
    del runner
    gc.collect()
    assert ref() is None, "the compiled forward keeps its model alive"


class _Boom:
    """Stands in for a CompiledForward whose call raises ``exc``."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __call__(self, *args):
        raise self.exc


def _decode_args() -> tuple[torch.Tensor, torch.Tensor, int]:
    return torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, 1), dtype=torch.long), 16


def test_compile_error_falls_back_to_eager(capsys):
    from torch._dynamo.exc import TorchDynamoException

    runner = tiny_runner(compile=False)
    runner.compiled = _Boom(TorchDynamoException("backend compiler failed: test"))
    want = runner.model(*_decode_args())
    got = runner.forward(*_decode_args())
    assert runner.compiled is None and torch.equal(got, want)
    assert "torch.compile of the decode step failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "exc", [torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("shape mismatch")]
)
def test_runtime_error_is_not_swallowed(exc):
    runner = tiny_runner(compile=False)
    boom = _Boom(exc)
    runner.compiled = boom
    with pytest.raises(type(exc), match=str(exc)):
        runner.forward(*_decode_args())
    assert runner.compiled is boom  # no permanent eager fallback
