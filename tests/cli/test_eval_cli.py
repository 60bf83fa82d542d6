"""`resetfp4 eval`, `calibrate` and `compare` through the CLI entry point.

Most tests swap the engine for the FakeEngine test double (tests/eval/fake_engine.py); the
last one runs the real SmolLM2-135M engine on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resetfp4.cli import evaluate as eval_cli
from resetfp4.cli.main import main


def _write_task(path: Path, n: int = 5, prefix: str = "p") -> Path:
    rows = [
        {"id": f"{prefix}{i}", "problem": f"{prefix} problem {i}: add {i} and {i}.", "answer": 2 * i}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fake_engine(monkeypatch, fake_engine_cls):
    """Patch the CLI's engine loader: every task file's questions answer with their gold."""
    made = []

    def load(args):
        golds = {}
        for spec in {
            getattr(args, "task", None),
            getattr(args, "eval_task", None),
            getattr(args, "calib_task", None),
        }:
            if spec and Path(spec).is_file():
                for line in Path(spec).read_text().splitlines():
                    r = json.loads(line)
                    golds[r["problem"]] = str(r["answer"])
        eng = fake_engine_cls(
            golds,
            accuracy=lambda s: 0.3 if s.mode == "fixed" else 0.6,
            precision=args.precision,
            max_seq_len=args.max_seq_len or args.max_new_tokens + 1024,  # as load_engine_from_args
        )
        made.append(eng)
        return eng

    monkeypatch.setattr(eval_cli, "load_engine_from_args", load)
    monkeypatch.setattr("resetfp4.cli.calibrate.load_engine_from_args", load)
    return made


def _eval(task, out, *extra):
    return main(
        [
            "eval",
            "--task",
            str(task),
            "--out",
            str(out),
            "--samples",
            "2",
            "--max-new-tokens",
            "16",
            "--no-progress",
            *extra,
        ]
    )


def test_eval_compare_and_plots(tmp_path, fake_engine, capsys):
    task = _write_task(tmp_path / "t.jsonl", n=30)
    assert _eval(task, tmp_path / "base", "--precision", "nvfp4-w4a4", "--dump-tokens") == 0
    assert (
        _eval(
            task,
            tmp_path / "reset",
            "--precision",
            "nvfp4-w4a4",
            "--sampler",
            "reset",
            "--t-low",
            "0.2",
            "--tau0",
            "0.6",
            "--html-traces",
            "2",
        )
        == 0
    )
    summary = json.loads((tmp_path / "reset" / "summary.json").read_text())
    assert summary["config"]["sampler"]["mode"] == "reset" and summary["config"]["sampler"]["t_low"] == 0.2
    assert len(list((tmp_path / "reset" / "traces").glob("*.html"))) == 2
    capsys.readouterr()
    rc = main(
        [
            "compare",
            str(tmp_path / "base"),
            str(tmp_path / "reset"),
            "--n-boot",
            "500",
            "--markdown",
            str(tmp_path / "t.md"),
            "--json",
            str(tmp_path / "c.json"),
            "--bars",
            str(tmp_path / "bars.png"),
            "--entropy-hist",
            str(tmp_path / "ent.png"),
            "--recovery",
            str(tmp_path / "base"),
            str(tmp_path / "reset"),
            str(tmp_path / "reset"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "paired problems" in out and "gap recovered: 100.0%" in out
    comp = json.loads((tmp_path / "c.json").read_text())
    assert comp["paired_vs_first"][0]["n_problems"] == 30
    assert (tmp_path / "t.md").read_text().startswith("| run |")
    assert (tmp_path / "bars.png").stat().st_size > 0 and (tmp_path / "ent.png").stat().st_size > 0
    # a 0-point gap (low and high the same run): recovery is undefined, said in words
    capsys.readouterr()
    base, reset = str(tmp_path / "base"), str(tmp_path / "reset")
    assert main(["compare", base, reset, "--n-boot", "200", "--recovery", base, base, reset]) == 0
    out = capsys.readouterr().out
    assert "gap recovered: undefined" in out and "0-point gap" in out and "nan" not in out


def test_eval_resumes_and_params_file(tmp_path, fake_engine):
    task = _write_task(tmp_path / "t.jsonl")
    (tmp_path / "p.json").write_text(json.dumps({"t_low": 0.3, "tau0": 0.7}))
    args = ["--sampler", "reset", "--params", str(tmp_path / "p.json")]
    assert _eval(task, tmp_path / "r", *args) == 0
    assert _eval(task, tmp_path / "r", *args) == 0
    assert fake_engine[1].calls == []  # second run: everything already done
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["sampler"]["t_low"] == 0.3 and cfg["sampler"]["tau0"] == 0.7 and cfg["sampler"]["window"] == 32


def test_eval_refuses_to_resume_with_another_max_seq_len(tmp_path, fake_engine, capsys):
    task = _write_task(tmp_path / "t.jsonl")
    assert _eval(task, tmp_path / "r", "--max-seq-len", "64") == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["max_seq_len"] == 64
    capsys.readouterr()
    assert _eval(task, tmp_path / "r", "--max-seq-len", "128") == 2
    assert "max_seq_len: 64 -> 128" in capsys.readouterr().err
    assert fake_engine[1].calls == []


def test_cli_defaults_come_from_the_engine():
    from resetfp4.engine.aliases import DEFAULT_MODEL
    from resetfp4.engine.build import PRECISIONS

    assert eval_cli.PRECISIONS is PRECISIONS and eval_cli.DEFAULT_MODEL is DEFAULT_MODEL


def test_calibrate_cli_writes_params_that_eval_accepts(tmp_path, fake_engine):
    ev = _write_task(tmp_path / "ev.jsonl", n=3, prefix="e")
    cal = _write_task(tmp_path / "cal.jsonl", n=20, prefix="c")
    rc = main(
        [
            "calibrate",
            "--eval-task",
            str(ev),
            "--calib-task",
            str(cal),
            "--n-tau0",
            "5",
            "--n-select",
            "10",
            "--t-low-grid",
            "0.1,0.3",
            "--samples",
            "1",
            "--max-new-tokens",
            "16",
            "--out",
            str(tmp_path / "cal"),
            "--params-out",
            str(tmp_path / "params.json"),
            "--no-progress",
        ]
    )
    assert rc == 0
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["precision"] == "nvfp4-w4a4" and params["t_low"] in (0.1, 0.3) and params["tau0"] > 0
    assert _eval(ev, tmp_path / "ev", "--sampler", "reset", "--params", str(tmp_path / "params.json")) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--task", "gsm9k", "--out", "x"], "unknown task 'gsm9k'"),
        (["eval", "--task", "{task}", "--out", "x", "--sampler", "reset"], "pass --params FILE"),
        (["eval", "--task", "{task}", "--out", "x", "--samples", "0"], "--samples must be >= 1"),
        (
            ["eval", "--task", "{task}", "--out", "x", "--sampler", "reset", "--params", "nope.json"],
            "does not exist",
        ),
        (["compare", "{tmp}/a", "{tmp}/b"], "is {tmp}/a an eval run folder"),
        (["compare", "{tmp}/a"], "at least two run folders"),
        (["calibrate", "--eval-task", "{task}", "--out", "x"], "pass --calib-task"),
    ],
)
def test_cli_errors_are_clear(tmp_path, fake_engine, capsys, argv, message):
    task = _write_task(tmp_path / "t.jsonl")
    subst = lambda s: s.replace("{task}", str(task)).replace("{tmp}", str(tmp_path))
    assert main([subst(a) for a in argv]) == 2
    assert subst(message) in capsys.readouterr().err


def test_malformed_task_line_is_reported(tmp_path, fake_engine, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": 1}\n{"problem": \n')
    assert main(["eval", "--task", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2: malformed JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_end_to_end_on_real_smollm2_cpu(tmp_path):
    task = tmp_path / "two.jsonl"
    task.write_text(
        '{"id": "a", "prompt": "What is 2 + 3? Answer with a number.", "answer": "5"}\n'
        '{"id": "b", "prompt": "What is 10 - 4? Answer with a number.", "answer": "6"}\n'
    )
    rc = main(
        [
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "--task",
            str(task),
            "--samples",
            "1",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--dump-tokens",
            "--html-traces",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    recs = [json.loads(x) for x in (tmp_path / "run" / "problems.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a", "b"]
    assert all(1 <= r["lengths"][0] <= 8 and isinstance(r["samples"][0], str) for r in recs)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["complete"] and s["config"]["precision"] == "fp32" and s["tokens_per_s"] > 0
    tok = [json.loads(x) for x in (tmp_path / "run" / "tokens.jsonl").read_text().splitlines()]
    assert all(len(t["entropies"]) == len(t["token_ids"]) for t in tok)
    assert len(list((tmp_path / "run" / "traces").glob("*.html"))) == 1


def test_html_trace_names_do_not_collide(tmp_path, fake_engine):
    """Ids that sanitise to one file name ("a/1" and "a_1") get distinct trace files."""
    task = tmp_path / "t.jsonl"
    task.write_text("".join(json.dumps({"id": i, "problem": f"q {i}: add 1 and 1.", "answer": 2}) + "\n"
                            for i in ("a/1", "a_1", "b 2")))
    assert _eval(task, tmp_path / "r", "--html-traces", "3") == 0
    names = sorted(p.name for p in (tmp_path / "r" / "traces").glob("*.html"))
    assert len(names) == 3 and "a_1.html" in names
    assert sum(n.startswith("a_1-") for n in names) == 1 and sum(n.startswith("b_2-") for n in names) == 1
