"""Accuracy CIs over problems and paired bootstrap comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resetfp4.eval.stats import accuracy_ci, gap_recovered, paired_bootstrap


def test_accuracy_is_mean_of_problem_means_with_normal_ci():
    correct = [[True, True, False, False], [True, True, True, True], [False, False, False, False]]
    r = accuracy_ci(correct)
    scores = np.array([0.5, 1.0, 0.0])
    assert r["mean"] == pytest.approx(0.5)
    half = 1.959964 * scores.std(ddof=1) / math.sqrt(3)
    assert r["ci95"] == pytest.approx([max(0, 0.5 - half), min(1, 0.5 + half)])
    assert r["n_problems"] == 3 and r["n_samples"] == 12


def test_accuracy_ci_rejects_empty():
    with pytest.raises(ValueError, match="no problems"):
        accuracy_ci([])
    with pytest.raises(ValueError, match="at least one graded sample"):
        accuracy_ci([[True], []])


def test_paired_bootstrap_detects_a_real_difference_and_pairs_by_id():
    rng = np.random.default_rng(1)
    a = {f"p{i}": float(rng.random() < 0.4) for i in range(400)}
    b = {k: 1.0 if v == 1.0 else float(rng.random() < 0.5) for k, v in a.items()}  # b >= a per problem
    r = paired_bootstrap(a, b, n_boot=2000)
    assert r["diff"] == pytest.approx(np.mean([b[k] - a[k] for k in a]))
    assert 0 < r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    assert r["p_value"] < 0.01 and r["n_problems"] == 400


def test_paired_bootstrap_no_difference_has_ci_around_zero():
    a = {f"p{i}": float(i % 2) for i in range(200)}
    r = paired_bootstrap(a, dict(a), n_boot=500)
    assert r["diff"] == 0 and r["ci95"] == [0.0, 0.0] and r["p_value"] == 1.0


def test_paired_bootstrap_needs_common_ids():
    with pytest.raises(ValueError, match="share no problem ids"):
        paired_bootstrap({"a": 1.0}, {"b": 1.0})
    r = paired_bootstrap({"a": 1.0, "x": 0.0}, {"a": 0.0, "y": 1.0}, n_boot=100)
    assert r["n_problems"] == 1 and r["n_only_a"] == 1 and r["n_only_b"] == 1


def test_gap_recovered_share():
    ids = [f"p{i}" for i in range(100)]
    low = {k: 0.0 for k in ids}
    high = {k: 1.0 if i < 40 else 0.0 for i, k in enumerate(ids)}
    treated = {k: 1.0 if i < 20 else 0.0 for i, k in enumerate(ids)}
    r = gap_recovered(low, high, treated, n_boot=500)
    assert r["share"] == pytest.approx(0.5) and r["gap"] == pytest.approx(0.4)
    assert r["ci95"][0] < 0.5 < r["ci95"][1]
