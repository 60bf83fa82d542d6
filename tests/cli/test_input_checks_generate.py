"""`resetfp4 generate` bad input: refused before the model load with a message naming the flag,
file or value; non-finite logits give valid JSON and a warning; a model without a chat template
gets a notice. A test-double engine stands in for the model (no weights are loaded here)."""

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
    ]:
        assert main(["generate", *CPU, *argv]) == 2
        err = capsys.readouterr().err
        assert "resetfp4 generate: error:" in err and msg in err, (argv, err)


class _Engine:
    """What `generate`'s run uses of an engine; its one token came from NaN logits."""

    model_name, precision, reset_params, tokenizer = "fake", "fp32", None, None

    def __init__(self, chat_template: bool, entropy: float = math.nan) -> None:
        self.has_chat_template, self.entropy = chat_template, entropy

    def default_sampling(self, **overrides):
        return sampling_glue.reset_config(None, **overrides)

    def generate(self, prompts, cfg, max_new_tokens, **kw):
        self.last_stats = {"tokens_per_s": 1.0, "seconds": 1.0, "setup_s": 0.0}
        return [GenerationResult(prompt=prompts[0], token_ids=[0], text="", finish_reason="eos",
                                 prompt_tokens=1, entropies=[self.entropy], temperatures=[0.0],
                                 step_starts=[False])]


def _run_with(monkeypatch, engine, *argv):
    monkeypatch.setattr(engine_mod, "load_engine", lambda *a, **k: engine)
    return main(["generate", "--prompt", "x", "--sampler", "greedy", *CPU, *argv])


def test_non_finite_logits_give_valid_json_and_a_warning(monkeypatch, capsys):
    assert _run_with(monkeypatch, _Engine(True), "--json") == 0
    out, err = capsys.readouterr()
    d = json.loads(out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert d["entropies"] == [None] and d["token_ids"] == [0]
    assert "warning: the model produced non-finite logits (NaN/inf) for 1 of 1 generated token(s)" in err
    assert _run_with(monkeypatch, _Engine(True)) == 0  # human output warns too
    assert "non-finite logits" in capsys.readouterr().err
    assert _run_with(monkeypatch, _Engine(True, entropy=1.5), "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["entropies"] == [1.5] and "warning" not in err


def test_no_chat_template_notice(monkeypatch, capsys):
    assert _run_with(monkeypatch, _Engine(False, 1.0), "--json") == 0
    assert "note: fake has no chat template; the prompt is used as raw text" in capsys.readouterr().err
    assert _run_with(monkeypatch, _Engine(False, 1.0), "--json", "--raw") == 0
    assert "chat template" not in capsys.readouterr().err
    assert _run_with(monkeypatch, _Engine(True, 1.0), "--json") == 0
    assert "chat template" not in capsys.readouterr().err
