"""Calibration of tau0 and T_low (FakeEngine), and the params file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resetfp4.eval.calibrate import calibrate, collect_entropies, disjoint_splits, token_stats
from resetfp4.eval.datasets import Problem, Task
from resetfp4.eval.params import load_params, write_params
from resetfp4.eval.runner import EvalConfig
from resetfp4.sampling.config import ReSETParams, SamplerConfig

BASE = SamplerConfig(mode="fixed", temperature=0.6)


def _task(n, prefix):
    return Task(
        prefix,
        [Problem(id=f"{prefix}{i}", question=f"{prefix} question {i}", answer=str(i)) for i in range(n)],
    )


def _acc(s):  # T_low = 0.3 is clearly best for this fake model
    return {0.1: 0.1, 0.2: 0.4, 0.3: 0.95, 0.4: 0.3}.get(s.t_low, 0.5) if s.mode == "reset" else 0.5


def test_calibrate_tau0_is_p80_and_t_low_is_the_best(tmp_path, fake_engine_cls):
    calib, ev = _task(40, "c"), _task(5, "e")
    eng = fake_engine_cls({p.question: p.answer for p in calib.problems + ev.problems}, accuracy=_acc)
    params = calibrate(
        eng,
        calib,
        ev,
        BASE,
        EvalConfig(samples=2, max_new_tokens=32),
        tmp_path,
        t_low_grid=[0.1, 0.2, 0.3, 0.4],
        n_tau0=10,
        n_select=20,
    )
    ent = collect_entropies(tmp_path / "tau0" / "tokens.jsonl")
    assert params["tau0"] == pytest.approx(float(np.percentile(ent, 80)))
    assert params["t_low"] == 0.3 and params["t_high"] == 1.0 and params["window"] == 32
    grid = params["calibration"]["grid"]
    assert params["calibration"]["t_low_from"] == "best of grid"
    assert [g["t_low"] for g in grid] == [0.1, 0.2, 0.3, 0.4]
    assert set(params["calibration"]["tau0_ids"]).isdisjoint(params["calibration"]["select_ids"])
    loaded = load_params(tmp_path / "params.json")
    assert loaded.t_low == 0.3 and loaded.tau0 == pytest.approx(params["tau0"])
    # the select runs really used ReSET with the calibrated tau0
    cfg = json.loads((tmp_path / "t_low_0.3" / "config.json").read_text())
    assert cfg["sampler"]["mode"] == "reset" and cfg["sampler"]["tau0"] == pytest.approx(params["tau0"])


def test_splits_are_disjoint_from_the_eval_set():
    calib = _task(30, "c")
    ev = Task("e", [Problem(id="e0", question="c  question 3", answer="3")])  # same text, other spacing
    tau, sel, dropped = disjoint_splits(calib.problems, ev.problems, 10, 15, seed=1)
    assert dropped == 1 and len(tau) == 10 and len(sel) == 15
    assert "c3" not in {p.id for p in tau + sel}
    assert not {p.id for p in tau} & {p.id for p in sel}
    with pytest.raises(ValueError, match="need 10 \\(tau0\\) \\+ 25"):
        disjoint_splits(calib.problems, ev.problems, 10, 25)


def test_single_value_grid_skips_the_search(tmp_path, fake_engine_cls):
    calib = _task(12, "c")
    eng = fake_engine_cls({p.question: p.answer for p in calib.problems})
    params = calibrate(eng, calib, None, BASE, EvalConfig(samples=1), tmp_path, t_low_grid=[0.2], n_tau0=8)
    assert params["t_low"] == 0.2 and params["calibration"]["grid"] == []
    assert params["calibration"]["t_low_from"] == "first grid value (no search)"
    st = token_stats(tmp_path / "tau0" / "tokens.jsonl")
    assert st["n_samples"] == 8 and st["entropy_p80"] == pytest.approx(params["tau0"])


def test_n_select_zero_skips_the_search_with_a_grid(tmp_path, fake_engine_cls):
    calib = _task(12, "c")
    eng = fake_engine_cls({p.question: p.answer for p in calib.problems}, accuracy=_acc)
    params = calibrate(
        eng, calib, None, BASE, EvalConfig(samples=1), tmp_path, t_low_grid=[0.3, 0.1], n_tau0=8, n_select=0
    )
    cal = params["calibration"]
    assert params["t_low"] == 0.3 and cal["grid"] == [] and cal["select_ids"] == []
    assert cal["t_low_from"] == "first grid value (no search)"
    assert eng.calls == [8]  # only the tau0 run: no ReSET run on an empty select split
    assert not list(tmp_path.glob("t_low_*"))


def test_bad_grid():
    with pytest.raises(ValueError, match="must be > 0"):
        calibrate(None, _task(3, "c"), None, BASE, EvalConfig(), "/nonexistent", t_low_grid=[0.0])


def test_params_file_roundtrip_and_errors(tmp_path):
    write_params(tmp_path / "p.json", ReSETParams(t_low=0.2, tau0=0.61, source="test"), model="m")
    p = load_params(tmp_path / "p.json")
    assert (p.t_low, p.tau0, p.t_high, p.window) == (0.2, 0.61, 1.0, 32)
    (tmp_path / "bad.json").write_text('{"t_low": 0.2}')
    with pytest.raises(ValueError, match="missing tau0"):
        load_params(tmp_path / "bad.json")
    (tmp_path / "neg.json").write_text('{"t_low": -1, "tau0": 0.5}')
    with pytest.raises(ValueError, match="t_low must be a finite number > 0"):
        load_params(tmp_path / "neg.json")
    (tmp_path / "order.json").write_text('{"t_low": 1.5, "tau0": 0.5}')  # t_high defaults to 1
    with pytest.raises(ValueError, match=r"order\.json: t_low must be <= t_high"):
        load_params(tmp_path / "order.json")
    (tmp_path / "negtau.json").write_text('{"t_low": 0.2, "tau0": -0.1}')
    with pytest.raises(ValueError, match=r"negtau\.json: tau0 must be a finite entropy >= 0"):
        load_params(tmp_path / "negtau.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_params(tmp_path / "junk.json")
    with pytest.raises(FileNotFoundError, match="resetfp4 calibrate"):
        load_params(tmp_path / "none.json")
