"""Review (session 19) of the eval runner, datasets and calibration: each test failed before its fix.

GPQA items without 'question'/'choices'; resuming with another prompt form or tracing toggled;
--overwrite leaving tokens.npz and traces/; calibration reading tau0 entropies from tokens.jsonl
only; token_stats' steps per sample; maj@K splitting equivalent answers; `calibrate --overwrite`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from resetfp4.eval.analysis import Policy, analyze_run, collect_run_entropies, write_tokens_npz
from resetfp4.eval.calibrate import TAU0_PERCENTILE, calibrate, token_stats
from resetfp4.eval.datasets import load_jsonl_task
from resetfp4.eval.runner import CONFIG_FILE, EvalConfig, _majority_correct, run_eval
from resetfp4.sampling.config import SamplerConfig

FIXED = SamplerConfig(mode="fixed", temperature=0.6)


def _golds(*tasks):
    return {p.question: p.answer for t in tasks for p in t.problems}


def _make_task(n: int, prefix: str):
    from resetfp4.eval.datasets import Problem, Task

    probs = [
        Problem(id=f"{prefix}{i}", question=f"Question {prefix}{i}: what is {i} + {i}?", answer=str(2 * i))
        for i in range(n)
    ]
    return Task(name=f"toy-{prefix}", problems=probs)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# 1. GPQA lines without 'question' / 'choices'


@pytest.mark.parametrize(
    "bad",
    [
        {"Question2": "oops", "choices": ["a", "b", "c", "d"], "answer": 1},  # no 'question'
        {"question": "Q2?", "answer": "x"},  # no 'choices'
        {"question": "Q2?", "choices": "abcd", "answer": 0},  # 'choices' not a list
    ],
)
def test_gpqa_item_without_question_or_choices_is_a_value_error_naming_the_line(tmp_path, bad):
    good = {"question": "Q1?", "choices": ["a", "b", "c", "d"], "answer": 0}
    path = _write(tmp_path / "gpqa.jsonl", [good, bad])
    with pytest.raises(ValueError, match=r"gpqa\.jsonl:2: GPQA item needs a 'question' string and a 'choic"):
        load_jsonl_task(path)


# 2. resuming with another prompt form


def _aime_and_generic(tmp_path: Path, n: int = 4):
    rows = [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]
    aime = load_jsonl_task(_write(tmp_path / "aime.jsonl", rows))
    generic = load_jsonl_task(
        _write(tmp_path / "generic.jsonl", [{"id": r["id"], "prompt": r["problem"], "answer": r["answer"]}
                                            for r in rows])
    )
    assert aime.fingerprint() == generic.fingerprint()  # same items: the fingerprint cannot tell
    return aime, generic


def test_resume_with_another_prompt_form_is_refused(tmp_path, fake_engine_cls):
    aime, generic = _aime_and_generic(tmp_path)
    eng = fake_engine_cls(_golds(aime))
    run_eval(eng, aime, FIXED, EvalConfig(samples=1), tmp_path / "run", upto=2)
    with pytest.raises(ValueError, match=r"prompt_templates: \['math-cot'\] -> \['verbatim'\].*verbatim"):
        run_eval(eng, generic, FIXED, EvalConfig(samples=1), tmp_path / "run")
    s = run_eval(eng, aime, FIXED, EvalConfig(samples=1), tmp_path / "run")  # the same form resumes
    assert s["complete"] and s["config"]["prompt_templates"] == ["math-cot"]


def test_resume_of_a_folder_without_prompt_sha256_still_works(tmp_path, fake_engine_cls):
    """Run folders written before prompt_sha256 was recorded resume when nothing changed."""
    aime, generic = _aime_and_generic(tmp_path)
    eng = fake_engine_cls(_golds(aime))
    out = tmp_path / "run"
    run_eval(eng, aime, FIXED, EvalConfig(samples=1), out, upto=2)
    cfg = json.loads((out / CONFIG_FILE).read_text())
    del cfg["prompt_sha256"]
    (out / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="prompt_templates"):
        run_eval(eng, generic, FIXED, EvalConfig(samples=1), out)
    assert run_eval(eng, aime, FIXED, EvalConfig(samples=1), out)["complete"]
    assert "prompt_sha256" in json.loads((out / CONFIG_FILE).read_text())


def test_resume_with_another_prompt_text_is_refused(tmp_path, fake_engine_cls, monkeypatch):
    """Same template names, other prompt text (e.g. a changed template): the prompt hash differs."""
    task = _make_task(4, "q")
    eng = fake_engine_cls(_golds(task))
    run_eval(eng, task, FIXED, EvalConfig(samples=1), tmp_path / "run", upto=2)
    monkeypatch.setattr("resetfp4.eval.prompts.MATH_COT", "{question}\nAnswer in \\boxed{{}}.")
    with pytest.raises(ValueError, match="prompt_sha256: .*prompts sent would differ"):
        run_eval(eng, task, FIXED, EvalConfig(samples=1), tmp_path / "run")


# 3. resuming with tracing toggled


@pytest.mark.parametrize("first, then", [(False, True), (True, False)])
def test_resume_with_tracing_toggled_is_refused(tmp_path, toy_task, fake_engine_cls, first, then):
    eng = fake_engine_cls(_golds(toy_task))
    run_eval(eng, toy_task, FIXED, EvalConfig(samples=2, trace=first), tmp_path, upto=3)
    with pytest.raises(ValueError, match=rf"trace: {first} -> {then}.*resume with tracing as before"):
        run_eval(eng, toy_task, FIXED, EvalConfig(samples=2, trace=then), tmp_path)
    s = run_eval(eng, toy_task, FIXED, EvalConfig(samples=2, trace=first), tmp_path)
    assert s["complete"]
    if first:  # token_stats covers every sample of the run
        assert s["token_stats"]["n_samples"] == 2 * len(toy_task.problems)


# 4. --overwrite and the packed dump / HTML traces


def test_overwrite_removes_packed_tokens_and_html_traces(tmp_path, fake_engine_cls):
    old, new = _make_task(6, "old"), _make_task(2, "new")
    eng = fake_engine_cls(_golds(old, new))
    cfg = EvalConfig(samples=2, trace=True)
    run_eval(eng, old, FIXED, cfg, tmp_path)
    write_tokens_npz(tmp_path)  # what study --pack / analyze_run(write_npz=True) does
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "old0.html").write_text("<html></html>")
    s = run_eval(eng, new, FIXED, cfg, tmp_path, overwrite=True)
    assert not (tmp_path / "tokens.npz").exists() and not (tmp_path / "traces").exists()
    assert s["token_stats"]["n_samples"] == 4  # written: no stale npz makes the run look packed
    assert analyze_run(tmp_path, Policy(tau0=0.5))["n_samples"] == 4


def test_overwrite_keeps_files_in_traces_that_are_not_traces(tmp_path, toy_task, fake_engine_cls):
    eng = fake_engine_cls(_golds(toy_task))
    run_eval(eng, toy_task, FIXED, EvalConfig(samples=1), tmp_path)
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "a.html").write_text("x")
    (tmp_path / "traces" / "notes.txt").write_text("mine")
    run_eval(eng, toy_task, FIXED, EvalConfig(samples=1), tmp_path, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["notes.txt"]


# 5. calibration resumed from a packed tau0 run


def _pack_in_place(run: Path) -> None:
    """What `study --pack` and unpacking on another machine leave: tokens.npz, no tokens.jsonl."""
    write_tokens_npz(run)
    (run / "tokens.jsonl").unlink()


def _calibrate(engine, calib, ev, out, **kw):
    return calibrate(engine, calib, ev, FIXED, EvalConfig(samples=2, batch_size=4), out,
                     t_low_grid=[0.1, 0.2], n_tau0=8, n_select=8, **kw)


@pytest.mark.parametrize("cut_after", [2, 5])  # 2: inside the tau0 run; 5: inside the T_low stage
def test_calibration_resumed_from_a_packed_tau0_run_reads_every_token(tmp_path, fake_engine_cls, cut_after):
    calib, ev = _make_task(30, "c"), _make_task(3, "e")
    ref = _calibrate(fake_engine_cls(_golds(calib, ev)), calib, ev, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _calibrate(fake_engine_cls(_golds(calib, ev), interrupt_after=cut_after), calib, ev, tmp_path / "cal")
    _pack_in_place(tmp_path / "cal" / "tau0")
    res = _calibrate(fake_engine_cls(_golds(calib, ev)), calib, ev, tmp_path / "cal")
    n_ref = ref["calibration"]["n_entropy_tokens"]
    assert res["calibration"]["n_entropy_tokens"] == n_ref  # every sample, not the resumed part only
    if cut_after == 5:  # tau0 was computed (full precision) before the cut: the very same value
        assert res["tau0"] == ref["tau0"]
    else:  # the early samples' entropies come back as float16
        assert res["tau0"] == pytest.approx(ref["tau0"], rel=1e-3)
        ent = collect_run_entropies(tmp_path / "cal" / "tau0")
        assert res["tau0"] == pytest.approx(float(np.percentile(ent, TAU0_PERCENTILE)))
    assert res["t_low"] == ref["t_low"]


def test_calibration_of_a_fully_packed_tau0_run_does_not_need_tokens_jsonl(tmp_path, fake_engine_cls):
    calib, ev = _make_task(30, "c"), _make_task(3, "e")

    def run():  # one T_low: no select runs, whose configs record the tau0 they were run with
        eng = fake_engine_cls(_golds(calib, ev))
        return calibrate(eng, calib, ev, FIXED, EvalConfig(samples=2), tmp_path, t_low_grid=[0.2], n_tau0=8)

    first = run()
    _pack_in_place(tmp_path / "tau0")
    (tmp_path / "tau0_stats.json").unlink()  # as a folder from before the file: recomputed from the npz
    again = run()
    assert again["calibration"]["n_entropy_tokens"] == first["calibration"]["n_entropy_tokens"]
    assert again["tau0"] == pytest.approx(first["tau0"], rel=1e-3)


# 6. token_stats' steps per sample


def test_token_stats_counts_token_zero_as_a_step_like_analysis(tmp_path):
    recs = [  # the engine never flags token 0
        {"id": "p0", "sample": 0, "correct": True, "entropies": [0.1, 0.2, 0.3, 0.4],
         "temperatures": [0.6] * 4, "starts": [False, False, True, False], "token_ids": [1, 2, 3, 4]},
        {"id": "p0", "sample": 1, "correct": False, "entropies": [0.5, 0.6],
         "temperatures": [0.6] * 2, "starts": [False, False], "token_ids": [1, 2]},
    ]
    _write(tmp_path / "tokens.jsonl", recs)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"sampler": {"mode": "fixed"}}))
    stats = token_stats(tmp_path / "tokens.jsonl")
    assert stats["steps_per_sample"] == 1.5  # (2 + 1) / 2
    assert stats["steps_per_sample"] == analyze_run(tmp_path, Policy(tau0=0.5))["steps_per_sample"]["mean"]


# 7. maj@K over equivalence classes of answers


@pytest.mark.parametrize(
    "answers, correct, expected",
    [
        (["7", "\\frac{1}{2}", "0.5"], [False, True, True], True),  # the split vote of the review
        (["0.5", "7", "7", "1/2", "\\frac12"], [True, False, False, True, True], True),
        (["7", "1/2", "7", "0.5"], [False, True, False, True], False),  # tie 2-2: the first class (7)
        (["1/2", "7", "0.5", "7"], [True, False, True, False], True),  # tie 2-2: the first class (1/2)
        ([None, None, "3"], [False, False, True], True),  # no answer votes for nothing
        ([None, ""], [False, False], False),
    ],
)
def test_majority_vote_groups_equivalent_answers(answers, correct, expected):
    assert _majority_correct({"answers": answers, "correct": correct}) is expected


def test_majority_vote_of_multiple_choice_compares_letters():
    rec = {"kind": "mcq", "answers": ["A", "B", "B", "C"], "correct": [True, False, False, False]}
    assert _majority_correct(rec) is False


def test_summary_maj_at_k_counts_equivalent_answers_together(tmp_path, toy_task, fake_engine_cls):
    from resetfp4.eval.runner import summarize

    done = {
        p.id: {"id": p.id, "answers": ["7", "\\frac{1}{2}", "0.5"], "correct": [False, True, True],
               "lengths": [1, 1, 1], "finish_reasons": ["eos"] * 3, "wall_s": 1.0}
        for p in toy_task.problems
    }
    assert summarize(done, toy_task, {})["maj_at_k"] == 1.0


# 11. `resetfp4 calibrate --overwrite`


@pytest.fixture
def patched_loader(monkeypatch, fake_engine_cls):
    def load(args):
        golds = {}
        for spec in (args.eval_task, args.calib_task):
            for line in Path(spec).read_text().splitlines():
                r = json.loads(line)
                golds[r["problem"]] = str(r["answer"])
        return fake_engine_cls(golds, max_seq_len=args.max_seq_len or args.max_new_tokens + 1024)

    monkeypatch.setattr("resetfp4.cli.calibrate.load_engine_from_args", load)


def test_calibrate_cli_overwrite_redoes_the_stage_runs_after_a_settings_change(tmp_path, patched_loader,
                                                                              capsys):
    from resetfp4.cli.main import main

    def rows(prefix: str, n: int) -> list[dict]:
        return [{"id": f"{prefix}{i}", "problem": f"{prefix} problem {i}: add {i} and {i}.", "answer": 2 * i}
                for i in range(n)]

    ev, cal = _write(tmp_path / "ev.jsonl", rows("e", 3)), _write(tmp_path / "cal.jsonl", rows("c", 20))
    out = tmp_path / "cal"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("mine")

    def run(temperature: str, *extra: str) -> int:
        return main(["calibrate", "--eval-task", str(ev), "--calib-task", str(cal), "--n-tau0", "4",
                     "--n-select", "6", "--t-low-grid", "0.1,0.3", "--samples", "1", "--max-new-tokens", "16",
                     "--temperature", temperature, "--out", str(out), "--no-progress", *extra])

    assert run("0.6") == 0
    capsys.readouterr()
    assert run("0.7") == 2  # the settings changed: refused, and the message names a flag that exists
    err = capsys.readouterr().err
    assert "different configuration" in err and "--overwrite" in err
    assert run("0.7", "--overwrite") == 0
    params = json.loads((out / "params.json").read_text())
    assert params["calibration"]["baseline_sampler"]["temperature"] == 0.7
    assert json.loads((out / "tau0" / CONFIG_FILE).read_text())["sampler"]["temperature"] == 0.7
    assert (out / "notes" / "keep.txt").read_text() == "mine"  # only the stage runs are discarded
    assert run("0.7") == 0  # and the redone calibration resumes as usual


def test_one_problem_run_writes_strict_summary_json(tmp_path, fake_engine_cls):
    """summary.json of a one-problem run: its CI is null (was a bare NaN, which strict JSON
    parsers reject), and load_run reads it back as NaN."""
    import math

    from resetfp4.eval.datasets import Problem, Task
    from resetfp4.eval.report import load_run

    task = Task(name="one", problems=[Problem(id="p0", question="Question p0: what is 2 + 2?", answer="4")])
    eng = fake_engine_cls({p.question: p.answer for p in task.problems})
    fixed = SamplerConfig(mode="fixed", temperature=0.6)
    run_eval(eng, task, fixed, EvalConfig(samples=2, max_new_tokens=16), tmp_path / "r")
    text = (tmp_path / "r" / "summary.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["accuracy"]["ci95"] == [None, None]
    assert all(math.isnan(v) for v in load_run(tmp_path / "r").summary["accuracy"]["ci95"])


@pytest.mark.parametrize("item, msg", [
    ({"question": "Q?", "choices": ["B", "A", "C", "D"], "answer": "A"},
     "is both a letter and the text of choice B; give the answer as an index 0-3"),
    ({"question": "Q?", "choices": ["x", "x", "y", "z"], "answer": 2}, "GPQA choices must differ"),
    ({"question": "Q?", "choices": ["w", "x", "y", "z"], "answer": True}, "must be a choice's text"),
])
def test_gpqa_ambiguous_answers_are_refused(tmp_path, item, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_jsonl_task(_write(tmp_path / "gpqa.jsonl", [item]))


def test_gpqa_letter_that_is_also_its_own_choice_text_is_fine(tmp_path):
    """"A" as the first choice's text and as the letter A name the same choice."""
    task = load_jsonl_task(_write(tmp_path / "gpqa.jsonl",
                                  [{"question": "Q?", "choices": ["A", "B", "C", "D"], "answer": "A"}]))
    p = task.problems[0]
    assert p.choices["ABCD".index(p.answer)] == "A"
