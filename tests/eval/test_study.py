"""scripts/study.py with the FakeEngine: stage plan, pairing of stage b with stage a,
interleaved blocks, deadline cut and resume, the log, and the packed output."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from resetfp4.cli.main import main as cli_main
from resetfp4.eval.datasets import Problem, Task

STUDY = Path(__file__).parents[2] / "scripts" / "study.py"
N_GSM, N_EASY = 20, 6


def _study_module():
    name = "resetfp4_study_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, STUDY)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _task(name: str, n: int, prefix: str) -> Task:
    probs = [
        Problem(id=f"{prefix}-{i}", question=f"{prefix} q{i}: {i}+{i}?", answer=str(2 * i)) for i in range(n)
    ]
    return Task(name=name, problems=probs)


@pytest.fixture
def study(monkeypatch, fake_engine_cls):
    """The study module with a fake engine (accuracy by sampler) and toy tasks."""
    mod = _study_module()
    full = {"gsm8k": _task("gsm8k", N_GSM, "gsm8k"), "math-easy": _task("math-easy", N_EASY, "easy")}
    golds = {p.question: p.answer for t in full.values() for p in t.problems}
    loads = []

    def load_task(name, limit=None):
        t = full[name]
        return Task(name=t.name, problems=t.problems[: limit or len(t.problems)])

    def load_engine(model, precision, **kw):
        loads.append(precision)
        acc = {"fixed": 0.4, "reset": 0.3, "greedy": 0.5}
        eng = fake_engine_cls(
            golds, accuracy=lambda s: acc[s.mode], precision=precision, max_seq_len=kw["max_seq_len"]
        )
        gen = eng.generate

        def generate(prompts, *a, **k):  # like the continuous-batching engine's last_stats
            out = gen(prompts, *a, **k)
            eng.last_stats = {"seconds": 0.5, "tokens": 40, "decode_steps": 10, "slots": 8}
            return out

        eng.generate = generate
        return eng

    monkeypatch.setattr(mod, "load_task", load_task)
    monkeypatch.setattr(mod, "load_engine", load_engine)
    mod.loads = loads
    return mod


def _params(tmp_path) -> Path:
    p = tmp_path / "params.json"
    d = {
        "t_low": 0.3,
        "tau0": 0.5,
        "t_high": 1.0,
        "window": 32,
        "calibration": {"entropy_percentiles": {"90": 0.98}},
    }
    p.write_text(json.dumps(d))
    return p


def _args(tmp_path, *extra):
    return [
        "--model", "fake.gguf", "--out", str(tmp_path / "runs"), "--params", str(_params(tmp_path)),
        "--samples", "2", "--max-new-tokens", "16", "--batch-size", "8", "--call-size", "8",
        "--block", "8", "--b-limit", "10", "--c-grid", "0.1,0.3", "--device", "cpu", *extra,
    ]  # fmt: skip


def _log(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "runs" / "study_log.jsonl").read_text().splitlines()]


def _ids(run: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (run / "problems.jsonl").read_text().splitlines()]


def test_full_plan_runs_pairs_logs_and_packs(tmp_path, study, capsys):
    assert study.main(_args(tmp_path, "--pack", str(tmp_path / "out"))) == 0
    runs = tmp_path / "runs"
    for name in study.A_CONFIGS:
        s = json.loads((runs / name / "summary.json").read_text())
        assert s["complete"] and s["n_problems"] == N_GSM
    for name in study.B_CONFIGS:
        assert _ids(runs / name) == [f"gsm8k-{i}" for i in range(10)]  # the first 10 ids of stage a
    cfg = {n: json.loads((runs / n / "config.json").read_text()) for n in study.B_CONFIGS}
    assert cfg["w4a4-reset-th06"]["sampler"]["t_high"] == 0.6 and cfg["ref-reset-th06"]["precision"] == "bf16"
    assert cfg["w4a4-reset-p90"]["sampler"]["tau0"] == 0.98 and cfg["w4a4-greedy"]["samples"] == 1
    assert cfg["ref-greedy"]["sampler"]["mode"] == "greedy"
    for name in ("c-w4a4-reset-tlow0.1", "c-w4a4-reset-tlow0.3", "c-w4a4-t06"):
        assert _ids(runs / name) == [f"easy-{i}" for i in range(N_EASY)]
    assert sorted(set(study.loads)) == ["bf16", "nvfp4-w4a16", "nvfp4-w4a4"] and len(study.loads) == 3
    log = _log(tmp_path)
    totals = [r for r in log if "stage_total" in r]
    assert [r["stage_total"] for r in totals] == ["a", "b", "c"]
    assert totals[0]["units"] == 15 and totals[0]["new_tokens"] > 0 and not totals[0]["interrupted"]
    log = [r for r in log if "stage_total" not in r]
    # stage a interleaves: all five configurations on the first block before the second block
    assert [(r["run"], r["upto"]) for r in log[:6]] == [(n, 8) for n in study.A_CONFIGS] + [("w4a4-t06", 16)]
    assert all(r["new_tokens"] > 0 and r["tokens_per_s"] > 0 and "wall_s" in r for r in log)
    assert log[0]["engine"] == {"calls": 2, "seconds": 1.0, "decode_steps": 20, "occupancy": 0.5}
    assert sum(r["new_problems"] for r in log if r["run"] == "w4a4-reset") == N_GSM
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {
        "analysis.md",
        "accuracy.md",
        "study_log.jsonl",
        "study.tgz.000",
    }
    data = b"".join(p.read_bytes() for p in sorted(out.glob("study.tgz.*")))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"w4a4-reset/tokens.npz", "w4a4-reset/problems.jsonl", "analysis.json"} <= names
    assert "w4a16-t06/tokens.npz" not in names  # not traced
    analysis = json.loads((runs / "analysis.json").read_text())
    by = {Path(a["run"]).name: a for a in analysis}
    assert by["w4a4-reset"]["hot_source"] == "sampled" and by["w4a4-t06"]["hot_source"] == "replayed"
    # stage b pairs with stage a's baseline on the 10 shared ids (compare uses common ids)
    capsys.readouterr()
    rc = cli_main(["compare", str(runs / "w4a4-t06"), str(runs / "w4a4-reset-th06"), "--n-boot", "100"])
    assert rc == 0 and "n = 10 paired problems" in capsys.readouterr().out


def test_deadline_cuts_between_calls_keeps_runs_paired_and_resumes(tmp_path, study, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(study.time, "time", lambda: clock[0])
    real = study.load_engine

    def slow_engine(model, precision, **kw):
        eng = real(model, precision, **kw)
        gen = eng.generate

        def generate(*a, **k):
            clock[0] += 10.0  # each call "takes" 10 s
            return gen(*a, **k)

        eng.generate = generate
        return eng

    monkeypatch.setattr(study, "load_engine", slow_engine)
    # first guess of a call is 30 s: calls start while now + 30 <= 1000 + 100
    assert study.main(_args(tmp_path, "--stages", "a,b", "--deadline-s", "100")) == 3
    log = _log(tmp_path)
    assert log[-1]["stage_total"] == "a" and log[-1]["interrupted"]
    log = log[:-1]
    assert log[-1]["interrupted"] and not any(r["interrupted"] for r in log[:-1])
    runs = tmp_path / "runs"
    done = {n: len(_ids(runs / n)) for n in study.A_CONFIGS if (runs / n / "problems.jsonl").exists()}
    assert max(done.values()) - min(done.values()) <= 8  # at most one block apart
    for n, k in done.items():  # every summary matches its problems, even the cut one
        assert json.loads((runs / n / "summary.json").read_text())["n_problems"] == k
    monkeypatch.setattr(study.time, "time", __import__("time").time)
    assert study.main(_args(tmp_path, "--stages", "a,b", "--deadline-s", "600")) == 0
    for n in study.A_CONFIGS:
        assert _ids(runs / n) == [f"gsm8k-{i}" for i in range(N_GSM)]
    assert _ids(runs / "ref-greedy") == [f"gsm8k-{i}" for i in range(10)]


def test_stage_cap_and_errors(tmp_path, study):
    assert study.parse_stages("a:300,b,a,c") == [("a", 300), ("b", None), ("a", None), ("c", None)]
    assert study.block_ends(1319, 300, None) == [300, 600, 900, 1200, 1319]
    assert study.block_ends(1319, 300, 450) == [300, 450]
    for bad in ("x", "b:3", "a:0", ""):
        with pytest.raises(ValueError):
            study.parse_stages(bad)
    assert study.main(_args(tmp_path, "--stages", "a:8", "--a-configs", "w4a4-t06,w4a4-reset")) == 0
    assert [r.get("run", r.get("stage_total")) for r in _log(tmp_path)] == ["w4a4-t06", "w4a4-reset", "a:8"]
    assert len(_ids(tmp_path / "runs" / "w4a4-reset")) == 8
    assert study.main(_args(tmp_path, "--stages", "a", "--a-configs", "nope")) == 1  # reported, not raised
    args = _args(tmp_path, "--stages", "b")
    (tmp_path / "params.json").write_text(json.dumps({"t_low": 0.3, "tau0": 0.5}))
    assert study.main(args) == 1  # no p90 in the params file and no --tau0-p90
    assert not (tmp_path / "runs" / "w4a4-reset-th06").exists()  # refused before any run
    assert study.main([*args, "--tau0-p90", "0.9"]) == 0
    assert (
        json.loads((tmp_path / "runs" / "w4a4-reset-p90" / "config.json").read_text())["sampler"]["tau0"]
        == 0.9
    )


def test_one_engine_reloads_on_each_switch(tmp_path, study):
    args = _args(tmp_path, "--stages", "a:16", "--a-configs", "w4a4-t06,ref-t06", "--one-engine")
    assert study.main(args) == 0
    assert study.loads == ["nvfp4-w4a4", "bf16", "nvfp4-w4a4", "bf16"]  # 2 blocks x 2 precisions
