"""The eval runner with the FakeEngine test double: files, seeding, batching, resume."""

from __future__ import annotations

import json

import pytest

from resetfp4.eval.runner import EvalConfig, run_eval, sample_seed
from resetfp4.sampling.config import SamplerConfig

FIXED = SamplerConfig(mode="fixed", temperature=0.6)


def _golds(task):
    return {p.question: p.answer for p in task.problems}


def _records(out):
    return [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]


def test_run_writes_problems_summary_and_config(tmp_path, toy_task, fake_engine_cls):
    eng = fake_engine_cls(_golds(toy_task))
    s = run_eval(eng, toy_task, FIXED, EvalConfig(samples=3, max_new_tokens=64, batch_size=4), tmp_path)
    recs = _records(tmp_path)
    assert [r["id"] for r in recs] == [p.id for p in toy_task.problems]
    r0 = recs[0]
    assert len(r0["samples"]) == len(r0["answers"]) == len(r0["correct"]) == len(r0["lengths"]) == 3
    assert r0["seeds"] == [sample_seed(0, r0["id"], k) for k in range(3)]
    for r in recs:  # answers really are graded against gold
        assert r["correct"] == [a == r["gold"] for a in r["answers"]]
    assert s["accuracy"]["mean"] == pytest.approx(sum(r["score"] for r in recs) / len(recs))
    assert s["complete"] and s["n_problems"] == 6 and s["samples_per_problem"] == 3
    assert 0 <= s["truncation_rate"] <= 1 and s["tokens_per_s"] > 0
    assert s["config"]["model_sha256"] == "0" * 64 and s["config"]["sampler"]["temperature"] == 0.6
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy"] == s["accuracy"]
    assert eng.calls == [4, 4, 4, 4, 2]  # 18 samples in batches of 4
    assert not (tmp_path / "tokens.jsonl").exists()


def test_results_do_not_depend_on_batch_size(tmp_path, toy_task, fake_engine_cls):
    a = run_eval(
        fake_engine_cls(_golds(toy_task)),
        toy_task,
        FIXED,
        EvalConfig(samples=2, batch_size=1),
        tmp_path / "a",
    )
    b = run_eval(
        fake_engine_cls(_golds(toy_task)),
        toy_task,
        FIXED,
        EvalConfig(samples=2, batch_size=64),
        tmp_path / "b",
    )
    assert a["accuracy"] == b["accuracy"]
    assert [r["answers"] for r in _records(tmp_path / "a")] == [
        r["answers"] for r in _records(tmp_path / "b")
    ]


def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path, toy_task, fake_engine_cls):
    cfg = EvalConfig(samples=2, batch_size=3, trace=True)
    with pytest.raises(KeyboardInterrupt):
        run_eval(fake_engine_cls(_golds(toy_task), interrupt_after=2), toy_task, FIXED, cfg, tmp_path / "r")
    partial = _records(tmp_path / "r")
    assert 0 < len(partial) < 6
    eng = fake_engine_cls(_golds(toy_task))
    run_eval(eng, toy_task, FIXED, cfg, tmp_path / "r")
    assert sum(eng.calls) == 2 * (6 - len(partial))  # finished problems are skipped
    run_eval(fake_engine_cls(_golds(toy_task)), toy_task, FIXED, cfg, tmp_path / "full")
    assert _records(tmp_path / "r") == [
        {**r, "wall_s": x["wall_s"]}
        for r, x in zip(_records(tmp_path / "full"), _records(tmp_path / "r"), strict=True)
    ]
    tok = [json.loads(x) for x in (tmp_path / "r" / "tokens.jsonl").read_text().splitlines()]
    assert sorted((t["id"], t["sample"]) for t in tok) == sorted(
        (p.id, k) for p in toy_task.problems for k in range(2)
    )


def test_torn_last_line_is_redone(tmp_path, toy_task, fake_engine_cls):
    cfg = EvalConfig(samples=1, batch_size=8)
    run_eval(fake_engine_cls(_golds(toy_task)), toy_task, FIXED, cfg, tmp_path)
    lines = (tmp_path / "problems.jsonl").read_text().splitlines()
    (tmp_path / "problems.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    eng = fake_engine_cls(_golds(toy_task))
    run_eval(eng, toy_task, FIXED, cfg, tmp_path)
    assert eng.calls == [1] and len(_records(tmp_path)) == 6


def test_resume_with_other_config_is_refused(tmp_path, toy_task, fake_engine_cls):
    run_eval(fake_engine_cls(_golds(toy_task)), toy_task, FIXED, EvalConfig(samples=1), tmp_path)
    other = SamplerConfig(mode="fixed", temperature=0.7)
    with pytest.raises(ValueError, match="different configuration.*temperature"):
        run_eval(fake_engine_cls(_golds(toy_task)), toy_task, other, EvalConfig(samples=1), tmp_path)
    s = run_eval(
        fake_engine_cls(_golds(toy_task)), toy_task, other, EvalConfig(samples=1), tmp_path, overwrite=True
    )
    assert s["config"]["sampler"]["temperature"] == 0.7


def test_max_seq_len_is_recorded_and_must_match_to_resume(tmp_path, toy_task, fake_engine_cls):
    cfg = EvalConfig(samples=2, max_new_tokens=64)
    with pytest.raises(ValueError, match="max_seq_len 20"):  # 12 + 64 tokens do not fit
        run_eval(fake_engine_cls(_golds(toy_task), max_seq_len=20), toy_task, FIXED, cfg, tmp_path / "x")
    run_eval(fake_engine_cls(_golds(toy_task), max_seq_len=80), toy_task, FIXED, cfg, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["max_seq_len"] == 80
    longer = fake_engine_cls(_golds(toy_task), max_seq_len=4096)
    with pytest.raises(ValueError, match="different configuration.*max_seq_len: 80 -> 4096"):
        run_eval(longer, toy_task, FIXED, cfg, tmp_path)
    assert longer.calls == []  # refused before generating anything
    s = run_eval(fake_engine_cls(_golds(toy_task), max_seq_len=80), toy_task, FIXED, cfg, tmp_path)
    assert s["config"]["max_seq_len"] == 80 and s["n_problems"] == len(toy_task.problems)


def test_trace_dump_and_reset_sampler(tmp_path, toy_task, fake_engine_cls):
    reset = SamplerConfig(mode="reset", t_low=0.2, tau0=1.0)
    run_eval(fake_engine_cls(_golds(toy_task)), toy_task, reset, EvalConfig(samples=1, trace=True), tmp_path)
    tok = [json.loads(x) for x in (tmp_path / "tokens.jsonl").read_text().splitlines()]
    assert len(tok) == 6
    for t in tok:
        assert len(t["entropies"]) == len(t["temperatures"]) == len(t["starts"]) == len(t["token_ids"]) > 0
        assert set(t["temperatures"]) <= {0.2, 1.0}


def test_mcq_problems_are_graded_by_letter(tmp_path, fake_engine_cls):
    from resetfp4.eval.datasets import Problem, Task

    task = Task(
        "mcq", [Problem(id="m", question="Pick", answer="B", kind="mcq", choices=("1", "2", "3", "4"))]
    )

    class Letters(fake_engine_cls):
        def _one(self, prompt, s, n, trace):
            r = super()._one(prompt, s, n, trace)
            r.text = "Reasoning.\n\nThe answer is (B)."
            return r

    s = run_eval(Letters({"Pick": "0"}), task, FIXED, EvalConfig(samples=2), tmp_path)
    assert s["accuracy"]["mean"] == 1.0
    assert _records(tmp_path)[0]["answers"] == ["B", "B"]


def test_bad_config_values():
    with pytest.raises(ValueError, match="samples must be >= 1"):
        EvalConfig(samples=0)


def test_upto_runs_a_prefix_of_the_task_and_resumes_to_the_rest(tmp_path, toy_task, fake_engine_cls):
    from resetfp4.eval.runner import write_summary

    eng = fake_engine_cls(_golds(toy_task))
    cfg = EvalConfig(samples=2, max_new_tokens=16, batch_size=4, trace=True)
    s = run_eval(eng, toy_task, FIXED, cfg, tmp_path, upto=2)
    assert [r["id"] for r in _records(tmp_path)] == ["q0", "q1"]
    assert not s["complete"] and s["n_problems"] == 2 and "token_stats" not in s
    assert s["config"]["n_problems"] == 6  # still the run of the whole task
    s = run_eval(eng, toy_task, FIXED, cfg, tmp_path)
    assert [r["id"] for r in _records(tmp_path)] == [p.id for p in toy_task.problems]
    assert s["complete"] and s["token_stats"]["n_samples"] == 12
    assert write_summary(tmp_path, toy_task)["accuracy"] == s["accuracy"]  # from config.json
    with pytest.raises(ValueError, match="upto"):
        run_eval(eng, toy_task, FIXED, cfg, tmp_path, upto=-1)
