"""``resetfp4 generate`` on CPU with the embedded SmolLM2 (loaded once, reused by the CLI)."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest
import torch

import resetfp4.engine.engine as engine_mod
from resetfp4.cli import generate as gen_cli
from resetfp4.cli.main import main
from resetfp4.engine.types import GenerationResult
from resetfp4.format.checkpoint import CheckpointError
from resetfp4.sampling.config import SamplerConfig

REAL_LOAD_ENGINE = engine_mod.load_engine  # before the fixture below replaces it

PROMPT = "The capital of France is"


def greedy_fp32_argv(max_new_tokens: int, *extra: str) -> list[str]:
    """``resetfp4 generate`` of PROMPT, raw, greedy, fp32 on CPU, plus ``extra`` flags."""
    return ["generate", "--prompt", PROMPT, "--raw", "--sampler", "greedy", "--precision", "fp32",
            "--device", "cpu", "--max-new-tokens", str(max_new_tokens), *extra]


@pytest.fixture(scope="module", autouse=True)
def cached_engines():
    """Reuse engines between CLI calls (each real load takes seconds on CPU)."""
    real, cache = engine_mod.load_engine, {"calls": []}

    def load(model, precision, device=None, max_batch=1, max_seq_len=None, lm_head="bf16", compile="unset"):
        cache["calls"].append({"max_seq_len": max_seq_len, "compile": compile})
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
    sp = d["sampler_params"]  # SmolLM2 has no calibration: the paper's values, said so
    assert sp["mode"] == "reset" and sp["t_low"] == 0.1 and sp["tau0"] == 0.5505 and sp["window"] == 32
    assert "no calibration is known" in sp["source"]


def test_reset_params_and_their_source_are_shown(capsys):
    argv = ["generate", "--prompt", PROMPT, "--max-new-tokens", "2", "--precision", "fp32", "--device", "cpu",
            "--t-low", "0.3", "--window", "16"]
    assert main(argv + ["--json"]) == 0
    sp = last_json(capsys.readouterr().out)["sampler_params"]
    assert (sp["t_low"], sp["window"], sp["t_high"]) == (0.3, 16, 1.0)
    assert sp["source"].endswith("overridden by --t-low, --window")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "ReSET: T_low 0.3, tau0 0.5505 nats, T_high 1, window 16, top-p 0.95, seed 0" in err


def test_fp32_greedy_raw_json_ids(capsys):
    assert main(greedy_fp32_argv(4, "--json")) == 0
    d = last_json(capsys.readouterr().out)
    # HF transformers' greedy continuation (tests/engine/test_engine.py checks it live).
    assert d["token_ids"] == [7042, 30, 198, 198] and d["text"] == " Paris.\n\n"
    assert d["temperatures"] == [0.0] * 4


def test_human_output_streams_and_summarises(capsys):
    assert main(greedy_fp32_argv(2, "--color")) == 0
    out, err = capsys.readouterr()
    assert out.startswith(" Paris.") and "legend: grey = greedy" in out
    assert "tokens/s" in err and "reasoning step" in err and "greedy (temperature 0)" in err
    assert "T_high" not in err and "ReSET:" not in err


@pytest.mark.parametrize(
    ("flags", "compile"), [(["--compile"], True), (["--no-compile"], False), ([], None)]
)
def test_compile_and_max_seq_len_reach_load_engine(cached_engines, capsys, flags, compile):
    assert main(greedy_fp32_argv(1, "--json", "--max-seq-len", "96", *flags)) == 0
    assert cached_engines["calls"][-1] == {"max_seq_len": 96, "compile": compile}
    capsys.readouterr()


def test_max_seq_len_default_is_load_engines():
    p = argparse.ArgumentParser()
    gen_cli.register(p.add_subparsers())
    args = p.parse_args(["generate", "--prompt", "x"])
    default = inspect.signature(REAL_LOAD_ENGINE).parameters["max_seq_len"].default
    assert args.max_seq_len == default == engine_mod.DEFAULT_MAX_SEQ_LEN


def _result(temps):
    n = len(temps)
    return GenerationResult(
        prompt="p", token_ids=[7042] * n, text="", finish_reason="length", prompt_tokens=1,
        entropies=[1.0] * n, temperatures=temps, step_starts=[False] * n,
    )


STATS = {"seconds": 1.0, "tokens_per_s": 4.0}


class _Tok:
    def decode(self, ids):
        return "t" * len(ids)


def test_summary_uses_the_requests_temperatures():
    cfg = SamplerConfig(mode="reset", t_low=0.3, t_high=0.7)
    res = _result([0.3, 0.7, 0.7, 0.3000001])  # fp32-recorded values
    s = gen_cli._summary(res, STATS, "fp32", "m", cfg)
    assert "50% of tokens at T_low 0.3, 50% at T_high 0.7" in s
    cfg = SamplerConfig(mode="reset", t_low=0.6, t_high=1.5)
    s = gen_cli._summary(_result([1.5, 1.5, 1.5, 0.6]), STATS, "fp32", "m", cfg)
    assert "25% of tokens at T_low 0.6, 75% at T_high 1.5" in s
    view = gen_cli._color_view(_result([1.5, 0.6]), _Tok(), cfg)
    assert "\x1b[48;5;88m" in view and "\x1b[48;5;18m" in view  # red (T_high), blue (T_low)


def test_summary_of_fixed_and_greedy_has_no_shares():
    fixed = SamplerConfig(mode="fixed", temperature=1.2)
    s = gen_cli._summary(_result([1.2, 1.2]), STATS, "fp32", "m", fixed)
    assert "fixed temperature 1.2" in s and "T_low" not in s and "T_high" not in s
    view = gen_cli._color_view(_result([1.2]), _Tok(), fixed)
    assert "green = fixed T 1.2" in view and "T_high" not in view
    s = gen_cli._summary(_result([0.0]), STATS, "fp32", "m", SamplerConfig(mode="greedy"))
    assert "greedy (temperature 0)" in s and "T_low" not in s


def test_malformed_quant_config_is_a_checkpoint_error(tmp_path, capsys):
    (tmp_path / "hf_quant_config.json").write_text("{not json")
    args = argparse.Namespace(precision=None, model=str(tmp_path), device="cpu")
    with pytest.raises(CheckpointError, match="hf_quant_config.json is malformed"):
        gen_cli._default_precision(args)
    (tmp_path / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "NVFP4"}}))
    assert gen_cli._default_precision(args) == "nvfp4-w4a4"


def test_flag_errors_come_before_the_model_load(capsys, monkeypatch):
    from resetfp4.engine import engine as engine_mod

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(engine_mod, "load_engine", no_load)
    for argv, msg in [
        (["--device", "mps", "--precision", "fp32"], "device type 'mps' is not supported"),
        (["--device", "cpu", "--precision", "fp32", "--window", "0"], "window must be >= 1"),
        (["--device", "cpu", "--precision", "bf16", "--lm-head", "nvfp4"], "needs an NVFP4 precision"),
        (["--device", "cpu", "--precision", "fp32", "--sampler", "fixed", "--temperature", "-1"],
         "temperature"),
    ]:
        assert main(["generate", "--prompt", PROMPT, "--max-new-tokens", "2"] + argv) == 2
        err = capsys.readouterr().err
        assert "resetfp4 generate: error:" in err and msg in err, (argv, err)


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


def test_color_view_keeps_multibyte_characters_whole():
    class Bytes:  # byte-level decoding, as a byte-level BPE tokenizer does
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    ids = list("aé€b".encode())  # 1 + 2 + 3 + 1 bytes
    pieces = gen_cli.token_pieces(Bytes(), ids)
    assert pieces == ["a", "", "é", "", "", "€", "b"] and "".join(pieces) == "aé€b"

    class SentencePiece:  # drops the leading space of the first piece, as SentencePiece decode does
        words = ["▁The", "▁cat", "▁sat"]

        def decode(self, ids):
            return "".join(self.words[i] for i in ids).replace("▁", " ").lstrip(" ")

    # each token decoded alone (the old per-run decode) lost every space: "Thecatsat"
    assert gen_cli.token_pieces(SentencePiece(), [0, 1, 2]) == ["The", " cat", " sat"]
    # A sequence cut inside a character still shows what it has (the replacement mark).
    assert gen_cli.token_pieces(Bytes(), ids[:2]) == ["a", "\ufffd"]
