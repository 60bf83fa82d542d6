"""`resetfp4 generate` bad input: refused before the model load with a message naming the flag,
file or value; non-finite logits still give the output (valid JSON), then an error and exit
status 1; a model without a chat template gets a notice. A test-double engine stands in for the
model (no weights are loaded here)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

import resetfp4.engine.engine as engine_mod
from resetfp4.cli import generate as gen_cli
from resetfp4.cli.main import main
from resetfp4.engine import sampling_glue
from resetfp4.engine.types import GenerationResult
from resetfp4.eval.params import write_params
from resetfp4.sampling.config import ReSETParams

CPU = ["--device", "cpu", "--precision", "fp32"]


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    gen_cli.register(p.add_subparsers())
    return p.parse_args(["generate", *argv])


def _check(*argv: str) -> None:
    gen_cli.check_before_loading(_args(*argv), "fp32")


@pytest.fixture
def params_file(tmp_path) -> Path:
    f = tmp_path / "params.json"
    write_params(f, ReSETParams(t_low=0.3, tau0=0.5))
    return f


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--temperature", "0.3"],
         "--sampler reset (the default) does not use --temperature (--sampler fixed)"),
        (["--sampler", "greedy", "--temperature", "-1"], "--sampler greedy does not use --temperature"),
        (["--sampler", "greedy", "--top-p", "0.5"], "--top-p (--sampler fixed or reset)"),
        (["--sampler", "fixed", "--t-low", "0.3", "--tau0", "1"],
         "does not use --t-low, --tau0 (--sampler reset)"),
        (["--sampler", "fixed", "--params", "bad.json"], "--sampler fixed does not use --params"),
        (["--t-low", "2", "--t-high", "0.5"], "got t_low 2.0 > t_high 0.5"),
        (["--t-low", "2"], "got t_low 2.0 > t_high 1.0"),
        (["--tau0", "-1"], "tau0 must be a finite entropy >= 0"),
        (["--t-high", "inf"], "t_high must be a finite temperature > 0"),
        (["--sampler", "fixed", "--temperature", "inf"], "temperature must be a finite T > 0"),
        (["--seed", "99999999999999999999"], "seed must fit a signed 64-bit integer"),
        (["--sampler", "greedy", "--seed", "5"],
         "--sampler greedy does not use --seed (--sampler fixed or reset): drop it, or switch to the sampler "
         "in brackets"),
        (["--sampler", "greedy", "--seed", "0"], "--sampler greedy does not use --seed"),  # explicit 0 too
        # --seed is in the shared table: every unused flag in one message
        (["--sampler", "greedy", "--temperature", "0.5", "--seed", "3"],
         "--sampler greedy does not use --temperature (--sampler fixed); --seed (--sampler fixed or reset): "
         "drop them, or switch to the sampler in brackets"),
        (["--sampler", "greedy", "--top-p", "0.5", "--seed", "3"],
         "--sampler greedy does not use --top-p, --seed (--sampler fixed or reset): drop them"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        # the model's calibrated T_low (0.3 for Qwen3-14B) is checked with the flags, before the load
        (["--model", "qwen3-14b", "--t-high", "0.2"], "got t_low 0.3 > t_high 0.2"),
    ],
)
def test_checked_before_loading(argv, msg):
    with pytest.raises(ValueError) as e:
        _check("--prompt", "x", *argv)
    assert msg in str(e.value)


def test_params_file_checked_before_loading(tmp_path, params_file):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        _check("--prompt", "x", "--params", str(bad))
    hot = tmp_path / "hot.json"
    write_params(hot, ReSETParams(t_low=2.0, tau0=0.5))
    with pytest.raises(ValueError, match="got t_low 2.0 > t_high 1.0"):
        _check("--prompt", "x", "--params", str(hot))
    with pytest.raises(ValueError, match="got t_low 0.3 > t_high 0.2"):  # file + flag, merged
        _check("--prompt", "x", "--params", str(params_file), "--t-high", "0.2")


def test_flags_of_the_chosen_sampler_pass(params_file):
    _check("--prompt", "x", "--sampler", "greedy")
    _check("--prompt", "x", "--sampler", "fixed", "--temperature", "0.3", "--top-p", "0.9")
    _check("--prompt", "x", "--t-low", "0.5", "--t-high", "0.5", "--tau0", "0", "--window", "4",
           "--top-p", "0.9", "--params", str(params_file), "--seed", str(2**63 - 1))


def test_prompt_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--prompt is empty: give the text"):
        gen_cli._prompt(_args("--prompt", ""))
    with pytest.raises(ValueError, match=r"--prompt is empty \(only whitespace\)"):
        gen_cli._prompt(_args("--prompt", " \n", "--raw"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"--prompt-file {empty} is empty"):
        gen_cli._prompt(_args("--prompt-file", str(empty)))
    with pytest.raises(ValueError, match=f"prompt file {tmp_path} is a directory"):
        gen_cli._read_prompt(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=f"prompt file {latin1} is not UTF-8 text .* at byte 3"):
        gen_cli._read_prompt(latin1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gen_cli._read_prompt(tmp_path / "none.txt")

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)  # tests may run as root, who reads anything
    with pytest.raises(ValueError, match=f"prompt file {latin1} cannot be read \\(permission denied\\)"):
        gen_cli._read_prompt(latin1)


def test_cli_refuses_before_loading(tmp_path, monkeypatch, capsys):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(engine_mod, "load_engine", no_load)
    for argv, msg in [
        (["--prompt", ""], "--prompt is empty"),
        (["--prompt-file", str(tmp_path)], "is a directory"),
        (["--prompt", "x", "--seed", "99999999999999999999"], "seed must fit"),
        (["--prompt", "x", "--sampler", "fixed", "--params", "bad.json"], "does not use --params"),
        (["--prompt", "x", "--sampler", "greedy", "--seed", "3"], "--sampler greedy does not use --seed"),
    ]:
        assert main(["generate", *CPU, *argv]) == 2
        err = capsys.readouterr().err
        assert "resetfp4 generate: error:" in err and msg in err, (argv, err)


def test_unused_temperature_and_seed_are_one_error(monkeypatch, capsys):
    """The shared unused-flag check names --seed with the other flags: one message, one line."""
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(engine_mod, "load_engine", no_load)
    argv = ["generate", *CPU, "--prompt", "x", "--sampler", "greedy", "--temperature", "0.5", "--seed", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == ("resetfp4 generate: error: --sampler greedy does not use --temperature (--sampler fixed); "
                   "--seed (--sampler fixed or reset): drop them, or switch to the sampler in "
                   "brackets\n"), err


class _Engine:
    """What `generate`'s run uses of an engine; its one token came from NaN logits."""

    model_name, precision, reset_params, tokenizer = "fake", "fp32", None, None

    def __init__(self, chat_template: bool, entropy: float = math.nan, entropies: list | None = None) -> None:
        self.has_chat_template, self.entropies = chat_template, entropies or [entropy]

    def default_sampling(self, **overrides):
        return sampling_glue.reset_config(None, **overrides)

    def generate(self, prompts, cfg, max_new_tokens, **kw):
        self.last_stats = {"tokens_per_s": 1.0, "seconds": 1.0, "setup_s": 0.0}
        n = len(self.entropies)
        return [GenerationResult(prompt=prompts[0], token_ids=[0] * n, text="", finish_reason="eos",
                                 prompt_tokens=1, entropies=self.entropies, temperatures=[0.0] * n,
                                 step_starts=[False] * n)]


def _run_with(monkeypatch, engine, *argv):
    monkeypatch.setattr(engine_mod, "load_engine", lambda *a, **k: engine)
    return main(["generate", "--prompt", "x", "--sampler", "greedy", *CPU, *argv])


NON_FINITE = (
    "resetfp4 generate: error: the model produced non-finite logits (NaN/inf) for 1 of 1 generated "
    "token(s), first at generated token 1 (already reading the prompt); the text from that token on "
    "is garbage (those tokens are id 0). Likely causes: a broken checkpoint (NaN/inf weights, or an "
    "fp16 export whose values overflowed: use the bf16 original) or activations overflowing at "
    "--precision fp32: as this is fp32 already, the checkpoint is the likely cause\n")


def test_non_finite_logits_print_the_output_then_fail(monkeypatch, capsys):
    assert _run_with(monkeypatch, _Engine(True), "--json") == 1
    out, err = capsys.readouterr()
    d = json.loads(out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert d["entropies"] == [None] and d["token_ids"] == [0]
    assert err.endswith(NON_FINITE), err  # the error comes last, after the output
    assert _run_with(monkeypatch, _Engine(True)) == 1  # human output: the summary, then the error
    err = capsys.readouterr().err
    assert "[fake fp32] 1 tokens (eos)" in err and err.endswith(NON_FINITE), err
    assert _run_with(monkeypatch, _Engine(True, entropy=1.5), "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["entropies"] == [1.5] and "error" not in err


@pytest.mark.parametrize(
    ("precision", "hint"),
    [("bf16", "--precision bf16: retry with --precision fp32 to rule out a bf16 overflow"),
     ("nvfp4-w4a4", "--precision nvfp4-w4a4: retry with --precision bf16 to tell an NVFP4 quantization "
                    "problem from a broken checkpoint")],
)
def test_non_finite_error_names_the_first_bad_token_and_a_retry(precision, hint):
    msg = gen_cli._non_finite_error([0.5, 1.0, math.nan, math.inf, 0.2], precision)
    assert msg.startswith("the model produced non-finite logits (NaN/inf) for 2 of 5 generated token(s), "
                          "first at generated token 3; the text from that token on is garbage")
    assert msg.endswith(hint)
    assert gen_cli._non_finite_error([0.5, 0.0], precision) is None


def test_seed_default_is_none_and_the_seed_used_is_recorded(monkeypatch, capsys):
    assert _args("--prompt", "x").seed is None
    for argv, seed in ((), 0), (("--seed", "7"), 7):
        assert _run_with(monkeypatch, _Engine(True, 1.0), "--json", "--sampler", "fixed", *argv) == 0
        params = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sampler_params"]
        assert params == {"mode": "fixed", "top_p": 0.95, "seed": seed, "temperature": 0.6}
        assert _run_with(monkeypatch, _Engine(True, 1.0), "--json", "--sampler", "reset", *argv) == 0
        params = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sampler_params"]
        assert params["mode"] == "reset" and params["seed"] == seed
    assert _run_with(monkeypatch, _Engine(True, 1.0), "--json") == 0  # greedy, no --seed
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["sampler_params"] == {"mode": "greedy"}


def test_no_chat_template_notice(monkeypatch, capsys):
    assert _run_with(monkeypatch, _Engine(False, 1.0), "--json") == 0
    assert "note: fake has no chat template; the prompt is used as raw text" in capsys.readouterr().err
    assert _run_with(monkeypatch, _Engine(False, 1.0), "--json", "--raw") == 0
    assert "chat template" not in capsys.readouterr().err
    assert _run_with(monkeypatch, _Engine(True, 1.0), "--json") == 0
    assert "chat template" not in capsys.readouterr().err
