"""``resetfp4 generate`` on CPU with the embedded SmolLM2 (loaded once, reused by the CLI)."""

from __future__ import annotations

import json

import pytest
import torch

import resetfp4.engine.engine as engine_mod
from resetfp4.cli.main import main

PROMPT = "The capital of France is"


@pytest.fixture(scope="module", autouse=True)
def cached_engines():
    """Reuse engines between CLI calls (each real load takes seconds on CPU)."""
    real, cache = engine_mod.load_engine, {}

    def load(model, precision, device=None, max_batch=1, max_seq_len=2048, lm_head="bf16", compile=False):
        key = (model, precision, device or ("cuda" if torch.cuda.is_available() else "cpu"), lm_head)
        if key not in cache:
            cache[key] = real(model, precision, device, max_batch, 64, lm_head)
        e = cache[key]
        # A fresh Engine around the loaded model: only the cache size may differ.
        return engine_mod.Engine(
            e.model,
            e.tokenizer,
            model_name=e.model_name,
            precision=precision,
            max_batch=max_batch,
            max_seq_len=max_seq_len,
            reset_params=e.reset_params,
        )

    engine_mod.load_engine = load
    yield cache
    engine_mod.load_engine = real


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_default_is_smollm2_with_reset(capsys):
    assert main(["generate", "--prompt", PROMPT, "--max-new-tokens", "3", "--json"]) == 0
    d = last_json(capsys.readouterr().out)
    assert d["model"] == "smollm2-135m-instruct" and d["sampler"] == "reset"
    assert d["precision"] == ("bf16" if torch.cuda.is_available() else "fp32")
    for key in ("token_ids", "text", "entropies", "temperatures", "step_starts", "tokens_per_s"):
        assert key in d
    assert len(d["token_ids"]) == len(d["entropies"]) == len(d["temperatures"]) == len(d["step_starts"]) == 3
    assert d["tokens_per_s"] > 0


def test_fp32_greedy_raw_json_ids(capsys):
    argv = [
        "generate",
        "--prompt",
        PROMPT,
        "--raw",
        "--sampler",
        "greedy",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--json",
    ]
    assert main(argv) == 0
    d = last_json(capsys.readouterr().out)
    # HF transformers' greedy continuation (tests/engine/test_engine.py checks it live).
    assert d["token_ids"] == [7042, 30, 198, 198] and d["text"] == " Paris.\n\n"
    assert d["temperatures"] == [0.0] * 4


def test_human_output_streams_and_summarises(capsys):
    argv = [
        "generate",
        "--prompt",
        PROMPT,
        "--raw",
        "--sampler",
        "greedy",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--max-new-tokens",
        "2",
        "--color",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(" Paris.") and "legend: blue = T_low" in out
    assert "tokens/s" in err and "reasoning step" in err and "at T_high" in err


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--model", "/no/such/model"], "neither a known alias"),
        (["--prompt-file", "/no/such/prompt.txt"], "prompt file"),
        (["--max-seq-len", "4", "--device", "cpu", "--precision", "fp32"], "KV cache holds 4 positions"),
        (
            ["--sampler", "fixed", "--temperature", "0", "--device", "cpu", "--precision", "fp32"],
            "temperature",
        ),
    ],
)
def test_bad_input_is_a_clear_error(capsys, argv, msg):
    base = ["generate", "--max-new-tokens", "2"] + (
        ["--prompt", PROMPT] if "--prompt-file" not in argv else []
    )
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert "resetfp4 generate: error:" in err and msg in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown on CPU-only machines")
def test_cuda_on_cpu_machine(capsys):
    assert main(["generate", "--prompt", "x", "--device", "cuda", "--precision", "bf16"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
