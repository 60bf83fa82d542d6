"""Accuracy with confidence intervals over problems, and paired bootstrap comparisons.

Samples of one problem are correlated, so every interval treats the *problem* as the unit:
a problem's score is the mean correctness of its K samples, and the accuracy is the mean of
those scores over problems.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Z95 = 1.959964  # two-sided 95% normal quantile
N_BOOT = 10_000  # bootstrap resamples: Monte-Carlo error of a 95% bound ~0.2 percentile points


def problem_scores(correct: Sequence[Sequence[bool]]) -> np.ndarray:
    """Per-problem mean correctness, float64 ``[n_problems]``."""
    if not correct:
        raise ValueError("no problems to score")
    if any(len(c) == 0 for c in correct):
        raise ValueError("every problem needs at least one graded sample")
    return np.array([float(np.mean(c)) for c in correct], dtype=np.float64)


def accuracy_ci(correct: Sequence[Sequence[bool]]) -> dict:
    """Mean accuracy over samples with a 95% CI over problems.

    ``correct[i][k]``: whether sample ``k`` of problem ``i`` was right. The CI is the
    normal interval ``mean +- 1.96 * sd(problem scores) / sqrt(n)``, clipped to [0, 1].
    When every problem scores the same (all right or all wrong, say) that interval has no
    width, which 50 of 50 right does not justify: the CI is then the Wilson score interval
    of ``mean`` over ``n`` problems (50 of 50: [0.929, 1]). One problem: no CI (NaN).
    Returns ``{"mean", "ci95": [lo, hi], "stderr", "n_problems", "n_samples"}``.
    """
    scores = problem_scores(correct)
    n = len(scores)
    mean = float(scores.mean())
    se = float(scores.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    half = Z95 * se if n > 1 else float("nan")
    lo, hi = (max(0.0, mean - half), min(1.0, mean + half)) if n > 1 else (float("nan"),) * 2
    if n > 1 and se == 0.0:
        lo, hi = wilson_interval(mean, n)
    return {
        "mean": mean,
        "ci95": [lo, hi],
        "stderr": se,
        "n_problems": n,
        "n_samples": int(sum(len(c) for c in correct)),
    }


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed over ``n`` trials."""
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    # the bound at an end is the end itself (c - h / c + h round to within 1 ulp of it)
    return (0.0 if p <= 0 else max(0.0, c - h)), (1.0 if p >= 1 else min(1.0, c + h))


def _paired_arrays(
    a: Mapping[str, float], b: Mapping[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError("the two runs share no problem ids; compare runs on the same task")
    return ids, np.array([a[i] for i in ids]), np.array([b[i] for i in ids])


def paired_bootstrap(
    a: Mapping[str, float], b: Mapping[str, float], *, n_boot: int = N_BOOT, seed: int = 0
) -> dict:
    """Paired bootstrap over problems of ``acc(b) - acc(a)``.

    ``a``/``b``: problem id -> per-problem score (mean correctness over samples). Only ids in
    both are used (``n_only_a``/``n_only_b`` report the rest). Returns the observed
    difference, its 95% percentile CI, and a two-sided bootstrap p-value for "no difference"
    (``2 (m + 1) / (n_boot + 1)`` for the ``m`` resamples on the far side of 0, so never 0:
    10,000 resamples cannot show p below ~2e-4). One common problem: no CI and no p (NaN),
    a resample of one difference says nothing about its spread.
    """
    ids, xa, xb = _paired_arrays(a, b)
    d = xb - xa
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    m = min(int((boots <= 0).sum()), int((boots >= 0).sum()))
    p = min(1.0, 2 * (m + 1) / (n_boot + 1))
    if len(d) < 2:
        lo = hi = p = float("nan")
    return {
        "diff": float(d.mean()),
        "ci95": [float(lo), float(hi)],
        "p_value": p,
        "n_problems": len(ids),
        "n_only_a": len(set(a) - set(b)),
        "n_only_b": len(set(b) - set(a)),
        "n_boot": n_boot,
        "acc_a": float(xa.mean()),
        "acc_b": float(xb.mean()),
    }


def gap_recovered(
    low: Mapping[str, float],
    high: Mapping[str, float],
    treated: Mapping[str, float],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict:
    """Share of the ``high - low`` accuracy gap that ``treated`` recovers, with a bootstrap CI.

    E.g. low = NVFP4 W4A4 at T=0.6, high = reference at T=0.6, treated = W4A4 + ReSET:
    ``(acc(treated) - acc(low)) / (acc(high) - acc(low))``. The three runs are paired on
    their common problems; resamples whose gap is ~0 are dropped (reported as ``n_dropped``).
    """
    ids = sorted(set(low) & set(high) & set(treated))
    if not ids:
        raise ValueError("the three runs share no problem ids")
    xl, xh, xt = (np.array([m[i] for i in ids]) for m in (low, high, treated))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    gap = xh[idx].mean(1) - xl[idx].mean(1)
    gain = xt[idx].mean(1) - xl[idx].mean(1)
    ok = np.abs(gap) > 1e-12
    share = gain[ok] / gap[ok]
    obs_gap = float(xh.mean() - xl.mean())
    obs = float((xt.mean() - xl.mean()) / obs_gap) if abs(obs_gap) > 1e-12 else float("nan")
    lo, hi = np.percentile(share, [2.5, 97.5]) if ok.any() else (float("nan"), float("nan"))
    return {
        "share": obs,
        "ci95": [float(lo), float(hi)],
        "gap": obs_gap,
        "gain": float(xt.mean() - xl.mean()),
        "n_problems": len(ids),
        "n_dropped": int((~ok).sum()),
    }
