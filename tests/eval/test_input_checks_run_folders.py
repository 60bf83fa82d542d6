"""Damaged or unusable run folders: errors name the file (and line) and say what to do."""

from __future__ import annotations

import json

import pytest

from resetfp4.eval.report import load_run
from resetfp4.eval.runner import EvalConfig, _read_done, check_run_dir, run_eval, write_summary
from resetfp4.sampling.config import SamplerConfig

FIXED = SamplerConfig(mode="fixed", temperature=0.6, top_p=0.95)


@pytest.fixture
def run_dir(tmp_path, toy_task, fake_engine_cls):
    golds = {p.question: p.answer for p in toy_task.problems}
    run_eval(fake_engine_cls(golds), toy_task, FIXED, EvalConfig(samples=1), tmp_path / "run")
    return tmp_path / "run"


def test_run_dir_checks(tmp_path, run_dir):
    check_run_dir(tmp_path / "new")
    check_run_dir(run_dir)  # an existing run is resumed
    with pytest.raises(ValueError, match="--out is empty"):
        check_run_dir("")
    f = tmp_path / "empty.txt"
    f.write_text("")
    with pytest.raises(ValueError, match="empty.txt is an existing file, not a folder"):
        check_run_dir(f)
    with pytest.raises(ValueError, match="cannot be created: .*empty.txt is a file"):
        check_run_dir(f / "sub")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match=r"holds a config\.json that is not an eval run's"):
        check_run_dir(model)
    (tmp_path / "other").mkdir()
    check_run_dir(tmp_path)  # other files and folders are left alone by a run


def test_run_eval_refuses_a_file_or_foreign_folder(tmp_path, toy_task, fake_engine_cls):
    f = tmp_path / "empty.txt"
    f.write_text("")
    eng = fake_engine_cls({})
    with pytest.raises(ValueError, match="existing file, not a folder"):
        run_eval(eng, toy_task, FIXED, EvalConfig(samples=1), f)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not an eval run folder"):
            run_eval(eng, toy_task, FIXED, EvalConfig(samples=1), model, overwrite=overwrite)
    assert (model / "config.json").read_text() == '{"model_type": "llama"}'


def test_problem_record_without_keys_names_file_and_line(run_dir, toy_task):
    probs = run_dir / "problems.jsonl"
    lines = probs.read_text().splitlines()
    rec = json.loads(lines[1])
    del rec["id"]
    probs.write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"problems\.jsonl:2: not a finished-problem record .*\['id'\]"):
        _read_done(probs)
    probs.write_text("\n".join([lines[0], "[1, 2]", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"problems\.jsonl:2: not a finished-problem record"):
        write_summary(run_dir, toy_task)


def test_damaged_config_json_names_the_file(run_dir, toy_task, fake_engine_cls):
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run/config\.json is not valid JSON .*configuration is damaged"):
        write_summary(run_dir, toy_task)
    with pytest.raises(ValueError, match=r"run/config\.json is not valid JSON"):
        run_eval(fake_engine_cls({}), toy_task, FIXED, EvalConfig(samples=1), run_dir)


def test_load_run_damaged_records(run_dir):
    probs = run_dir / "problems.jsonl"
    lines = probs.read_text().splitlines()
    for bad in ('{"id": "q0"}', '{"score": 1.0}', '{"id": "q0", "score": "high"}', "7"):
        probs.write_text("\n".join([lines[0], bad]) + "\n")
        with pytest.raises(ValueError, match=r"problems\.jsonl:2: a record needs an 'id' and a numeric"):
            load_run(run_dir)


def test_load_run_damaged_summary(run_dir, tmp_path):
    summ = run_dir / "summary.json"
    s = json.loads(summ.read_text())
    assert load_run(run_dir).summary == s
    summ.write_text(json.dumps({k: v for k, v in s.items() if k != "config"}))
    with pytest.raises(ValueError, match=r"summary\.json lacks \['config'\].*rerun the same `resetfp4 eval`"):
        load_run(run_dir)
    summ.write_text("{trunc")
    with pytest.raises(ValueError, match=r"summary\.json is not valid JSON"):
        load_run(run_dir)
    summ.write_text("[]")
    with pytest.raises(ValueError, match=r"summary\.json is not a JSON object"):
        load_run(run_dir)
    with pytest.raises(FileNotFoundError, match="nope does not exist; is .* an eval run folder"):
        load_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="is a file"):
        load_run(summ)
