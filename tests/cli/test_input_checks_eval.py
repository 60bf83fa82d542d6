"""`resetfp4 eval` / `calibrate`: sampler flags the chosen sampler does not use are refused
(`--seed` with greedy too), and calibrate's own flags get messages about calibrate (no model is
loaded). Without `--seed` the run seed is 0, and run folders record the seed used."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from resetfp4.cli import evaluate as eval_cli
from resetfp4.cli.main import build_parser, main
from resetfp4.eval.runner import EvalConfig, sample_seed


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


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser(list(argv)).parse_args(list(argv))


def _no_load(*a, **k):
    raise AssertionError("the model was loaded before the input was checked")


GREEDY_SEED = ("--sampler greedy does not use --seed (--sampler fixed or reset): drop it, or switch to the "
               "sampler in brackets")


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--seed", "3"], GREEDY_SEED),
        (["--seed", "0"], GREEDY_SEED),  # an explicit 0 too: the flag was given
        (["--temperature", "0.5", "--seed", "3"],
         "--sampler greedy does not use --temperature (--sampler fixed); --seed (--sampler fixed or reset): "
         "drop them, or switch to the sampler in brackets"),
    ],
)
def test_eval_refuses_seed_with_greedy_before_reading_the_task(monkeypatch, capsys, argv, msg):
    monkeypatch.setattr(eval_cli, "load_engine_from_args", _no_load)
    assert main(["eval", "--task", "/no/such/task.jsonl", "--out", "x", "--sampler", "greedy", *argv]) == 2
    assert capsys.readouterr().err == f"resetfp4 eval: error: {msg}\n"


def test_eval_and_calibrate_seed_defaults_to_none_meaning_seed_0():
    assert eval_cli.DEFAULT_RUN_SEED == EvalConfig().seed == 0
    ev = _parse("eval", "--task", "t.jsonl", "--out", "o")
    cal = _parse("calibrate", "--out", "o")
    assert ev.seed is None and cal.seed is None
    assert eval_cli.eval_config_from_args(ev, trace=False).seed == 0
    assert eval_cli.eval_config_from_args(cal, trace=False).seed == 0
    assert eval_cli.eval_config_from_args(_parse("eval", "--task", "t", "--out", "o", "--seed", "7"),
                                          trace=False).seed == 7
    cal4 = _parse("calibrate", "--out", "o", "--seed", "4")
    assert eval_cli.eval_config_from_args(cal4, trace=False).seed == 4
    eval_cli.check_sampler_flags(_parse("eval", "--task", "t", "--out", "o", "--seed", "3"), "fixed")
    eval_cli.check_sampler_flags(
        _parse("eval", "--task", "t", "--out", "o", "--sampler", "reset", "--seed", "3"), "fixed")


@pytest.fixture
def fake_engines(monkeypatch, fake_engine_cls):
    """The CLI's engine loader, patched: a FakeEngine that answers each problem of the task files."""
    made = []
    cls = fake_engine_cls

    def load(args):
        golds = {}
        for spec in (getattr(args, "task", None), getattr(args, "eval_task", None),
                     getattr(args, "calib_task", None)):
            if spec and Path(spec).is_file():
                for line in Path(spec).read_text().splitlines():
                    golds[json.loads(line)["problem"]] = str(json.loads(line)["answer"])
        made.append(cls(golds, precision=args.precision,
                        max_seq_len=args.max_seq_len or args.max_new_tokens + 1024))
        return made[-1]

    monkeypatch.setattr(eval_cli, "load_engine_from_args", load)
    monkeypatch.setattr("resetfp4.cli.calibrate.load_engine_from_args", load)
    return made


def _task(path: Path, n: int, prefix: str = "p") -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "problem": f"{prefix} {i} + {i}?",
                                        "answer": 2 * i}) + "\n" for i in range(n)))
    return path


def _eval(task: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--task", str(task), "--out", str(out), "--samples", "2", "--max-new-tokens", "16",
                 "--no-progress", *extra])


def _records_seed(out: Path, seed: int) -> None:
    """config.json, summary.json, problems.jsonl (and tokens.jsonl if written) show run seed ``seed``."""
    assert json.loads((out / "config.json").read_text())["seed"] == seed
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == seed
    for line in (out / "problems.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["seeds"] == [sample_seed(seed, rec["id"], k) for k in range(2)], rec["id"]
    if (out / "tokens.jsonl").exists():
        for line in (out / "tokens.jsonl").read_text().splitlines():
            rec = json.loads(line)
            assert rec["seed"] == sample_seed(seed, rec["id"], rec["sample"])


def test_eval_run_folders_record_the_seed_used(tmp_path, fake_engines, capsys):
    task = _task(tmp_path / "t.jsonl", 3)
    # a run folder as the old default (--seed 0) wrote it is resumed without --seed: the same run
    assert _eval(task, tmp_path / "old", "--seed", "0", "--dump-tokens") == 0
    _records_seed(tmp_path / "old", 0)
    assert _eval(task, tmp_path / "old", "--dump-tokens") == 0 and fake_engines[-1].calls == []
    # and the other way round; another seed is another run, refused
    assert _eval(task, tmp_path / "new") == 0
    _records_seed(tmp_path / "new", 0)
    assert _eval(task, tmp_path / "new", "--seed", "0") == 0 and fake_engines[-1].calls == []
    capsys.readouterr()
    assert _eval(task, tmp_path / "new", "--seed", "5") == 2
    assert "different configuration (seed: 0 -> 5)" in capsys.readouterr().err
    assert fake_engines[-1].calls == []
    # an explicit seed is recorded as given; greedy without --seed runs and records seed 0
    assert _eval(task, tmp_path / "s5", "--sampler", "reset", "--t-low", "0.2", "--tau0", "0.5",
                 "--seed", "5") == 0
    _records_seed(tmp_path / "s5", 5)
    assert _eval(task, tmp_path / "greedy", "--sampler", "greedy") == 0
    _records_seed(tmp_path / "greedy", 0)
    assert json.loads((tmp_path / "greedy" / "config.json").read_text())["sampler"]["mode"] == "greedy"


def test_old_greedy_folder_with_another_seed_resumes(tmp_path, fake_engines, capsys):
    """Before greedy refused --seed, a greedy run could record any seed; it cannot be given again,
    and greedy draws no random numbers, so such a folder resumes (the seed is not compared)."""
    task = _task(tmp_path / "t.jsonl", 3)
    out = tmp_path / "g"
    assert _eval(task, out, "--sampler", "greedy") == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg["seed"] = 5  # as `eval --sampler greedy --seed 5` wrote it
    (out / "config.json").write_text(json.dumps(cfg))
    assert _eval(task, out, "--sampler", "greedy") == 0 and fake_engines[-1].calls == []
    # a sampled run still compares its seed
    sampled = tmp_path / "f"
    assert _eval(task, sampled, "--sampler", "fixed") == 0
    cfg = json.loads((sampled / "config.json").read_text())
    cfg["seed"] = 5
    (sampled / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert _eval(task, sampled, "--sampler", "fixed") == 2
    assert "different configuration (seed: 5 -> 0)" in capsys.readouterr().err


def test_calibrate_runs_record_the_seed_used(tmp_path, fake_engines):
    ev = _task(tmp_path / "ev.jsonl", 2, prefix="e")
    cal = _task(tmp_path / "cal.jsonl", 8, prefix="c")
    base = ["calibrate", "--eval-task", str(ev), "--calib-task", str(cal), "--n-tau0", "3", "--n-select", "4",
            "--t-low-grid", "0.1,0.3", "--samples", "2", "--max-new-tokens", "16", "--no-progress"]
    for extra, seed in ([], 0), (["--seed", "4"], 4):
        out = tmp_path / f"cal{seed}"
        assert main([*base, "--out", str(out), *extra]) == 0
        for run in ("tau0", "t_low_0.1", "t_low_0.3"):
            _records_seed(out / run, seed)
