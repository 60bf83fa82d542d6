"""`resetfp4 eval` / `calibrate`: sampler flags the chosen sampler does not use are refused,
and calibrate's own flags get messages about calibrate (no model is loaded)."""

from __future__ import annotations

import argparse

import pytest

from resetfp4.cli import evaluate as eval_cli
from resetfp4.cli.main import main


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    eval_cli.add_sampler_args(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--sampler", "greedy", "--temperature", "-5", "--top-p", "0.5"],
         "--sampler greedy does not use --temperature (--sampler fixed); --top-p (--sampler fixed or reset)"),
        (["--sampler", "reset", "--temperature", "0.7", "--t-low", "0.1", "--tau0", "0.5"],
         "--sampler reset does not use --temperature (--sampler fixed): drop it"),
        (["--t-low", "0.3", "--tau0", "1"], "--sampler fixed (the default) does not use --t-low, --tau0"),
        (["--params", "bad.json"], "does not use --params (--sampler reset)"),
    ],
)
def test_unused_sampler_flags_are_refused(argv, msg):
    with pytest.raises(ValueError, match="switch to the sampler in brackets") as e:
        eval_cli.sampler_from_args(_args(*argv))
    assert msg in str(e.value)


def test_flags_of_the_chosen_sampler_are_used():
    cfg = eval_cli.sampler_from_args(_args())
    assert (cfg.mode, cfg.temperature, cfg.top_p) == ("fixed", 0.6, 0.95)
    cfg = eval_cli.sampler_from_args(_args("--temperature", "0.8", "--top-p", "0.9"))
    assert (cfg.temperature, cfg.top_p) == (0.8, 0.9)
    cfg = eval_cli.sampler_from_args(_args("--sampler", "reset", "--t-low", "0.2", "--tau0", "0.4",
                                           "--t-high", "0.9", "--window", "8", "--top-p", "0.8"))
    assert (cfg.t_low, cfg.tau0, cfg.t_high, cfg.window, cfg.top_p) == (0.2, 0.4, 0.9, 8, 0.8)
    assert eval_cli.sampler_from_args(_args("--sampler", "greedy")).mode == "greedy"


def test_eval_refuses_them_before_reading_the_task(capsys):
    argv = ["eval", "--task", "/no/such/task.jsonl", "--out", "x", "--sampler", "greedy"]
    assert main([*argv, "--temperature", "-5"]) == 2
    assert "resetfp4 eval: error: --sampler greedy does not use --temperature" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--temperature", "0"], "--temperature is the fixed T of the tau0 run and must be a finite T > 0"),
        (["--temperature", "inf"], "must be a finite T > 0, got inf"),
        (["--t-low-grid", "0.2,1.5"], "--t-low-grid values must be in (0, 1]"),
    ],
)
def test_calibrate_flag_errors(capsys, argv, msg):
    assert main(["calibrate", "--eval-task", "/no/such/task.jsonl", "--calib-task", "/no/such/c.jsonl",
                 "--out", "x", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "--sampler" not in err, err


def test_eval_records_raw_prompts_for_a_model_without_chat_template(capsys):
    """A model with no chat template gets raw prompts; the run's config must say so."""
    from types import SimpleNamespace

    from resetfp4.cli.evaluate import chat_as_run
    from resetfp4.eval.runner import EvalConfig

    cfg = EvalConfig()
    assert chat_as_run(cfg, SimpleNamespace(has_chat_template=True), "m").chat is True
    assert "no chat template" not in capsys.readouterr().err
    got = chat_as_run(cfg, SimpleNamespace(has_chat_template=False), "m")
    assert got.chat is False and got.samples == cfg.samples
    assert "m has no chat template" in capsys.readouterr().err
    no_chat = EvalConfig(chat=False)  # --no-chat: nothing to note
    assert chat_as_run(no_chat, SimpleNamespace(has_chat_template=False), "m") is no_chat
    assert capsys.readouterr().err == ""
