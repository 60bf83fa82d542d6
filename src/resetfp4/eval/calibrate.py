"""Calibrate ReSET's ``tau0`` and ``T_low`` on held-out problems.

1. ``tau0``: run the (NVFP4) model with the baseline sampler (fixed T, traced) on the
   ``tau0`` split and take the 80th percentile of all generated tokens' entropies (nats).
2. ``T_low``: run ReSET with that ``tau0`` and each ``T_low`` of the grid on a second,
   disjoint ``select`` split, and keep the most accurate (ties: the earlier grid entry).

Both splits are drawn (seeded) from a calibration task disjoint from the evaluation set:
problems whose text also occurs in the evaluation task are removed first. Each sub-run is
an ordinary resumable eval run folder under ``out_dir``. The tau0 run's entropy statistics
are kept in ``out_dir/tau0_stats.json``, so a calibration resumed from a packed tau0 run
(``tokens.npz`` holds entropies as float16) keeps the tau0 its T_low runs were started with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resetfp4.eval.datasets import Problem, Task
from resetfp4.eval.params import DEFAULT_T_HIGH, DEFAULT_WINDOW, write_params
from resetfp4.eval.runner import PROBLEMS_FILE, EvalConfig, run_eval
from resetfp4.fileutil import sha256_file
from resetfp4.sampling.config import ReSETParams, SamplerConfig

TAU0_PERCENTILE = 80.0  # the paper's threshold: p80 of NVFP4 token entropy
ENTROPY_PERCENTILES = (50, 70, 80, 90, 95)  # recorded in params.json and compare --analysis
TAU0_STATS_FILE = "tau0_stats.json"
DEFAULT_CALIB_TASK = {"gsm8k": "math500", "math500": "math-heldout"}


def iter_token_dump(path: str | Path) -> Iterator[dict]:
    """Records of a ``tokens.jsonl`` dump (see :mod:`resetfp4.eval.runner`)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}:{lineno}: malformed token-dump line") from None


def entropies_of(records: Iterable[dict], where: str | Path) -> np.ndarray:
    """The ``"entropies"`` of every token-dump record, concatenated, float64 ``[n_tokens]``
    (nats); ``where`` names the source in the error when there are none."""
    chunks = [np.asarray(r["entropies"], dtype=np.float64) for r in records]
    ent = np.concatenate(chunks) if chunks else np.zeros(0)
    if ent.size == 0:
        raise ValueError(f"{where} holds no token entropies; was the run made with tracing on?")
    return ent


def collect_entropies(path: str | Path) -> np.ndarray:
    """All token entropies of a dump, float64 ``[n_tokens]`` (nats)."""
    return entropies_of(iter_token_dump(path), path)


def token_stats(path: str | Path, t_low: float | None = None) -> dict:
    """Entropy percentiles, steps per sample and share of tokens at ``T_low`` in a dump.

    Steps are counted as :mod:`resetfp4.eval.analysis` counts them: token 0 always begins a
    step (the engine never flags it), so a sample with tokens has 1 + its later ``starts``;
    ``steps_per_sample`` is the mean over the samples with at least one token.
    """
    ent, steps, at_low, n_samples, n_nonempty = [], 0, 0, 0, 0
    for r in iter_token_dump(path):
        n_samples += 1
        ent.extend(r["entropies"])
        if len(r["entropies"]):
            n_nonempty += 1
            steps += 1 + sum(bool(s) for s in r.get("starts", [])[1:])
        if t_low is not None:
            at_low += sum(abs(t - t_low) < 1e-6 for t in r.get("temperatures", []))
    e = np.asarray(ent, dtype=np.float64)
    if e.size == 0:
        raise ValueError(f"{path} holds no token entropies")
    out = {
        "n_tokens": int(e.size),
        "n_samples": n_samples,
        "entropy_mean": float(e.mean()),
        "entropy_p50": float(np.percentile(e, 50)),
        "entropy_p80": float(np.percentile(e, 80)),
        "entropy_p95": float(np.percentile(e, 95)),
        "steps_per_sample": steps / max(1, n_nonempty),
    }
    if t_low is not None:
        out["share_tokens_at_t_low"] = at_low / e.size
    return out


def disjoint_splits(
    calib: Sequence[Problem], eval_problems: Sequence[Problem], n_tau0: int, n_select: int, seed: int = 0
) -> tuple[list[Problem], list[Problem], int]:
    """Seeded, disjoint (tau0 split, select split) from ``calib`` minus the eval questions.

    Returns the two splits and how many calibration problems were dropped for overlapping.
    """
    seen = {" ".join(p.question.split()) for p in eval_problems}
    pool = [p for p in calib if " ".join(p.question.split()) not in seen]
    dropped = len(calib) - len(pool)
    if len(pool) < n_tau0 + n_select:
        raise ValueError(
            f"calibration task has {len(pool)} problems disjoint from the eval set, need "
            f"{n_tau0} (tau0) + {n_select} (T_low) = {n_tau0 + n_select}; lower --n-tau0/--n-select"
        )
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    picked = [pool[i] for i in order]
    return picked[:n_tau0], picked[n_tau0 : n_tau0 + n_select], dropped


def _select_t_low(grid_results: list[dict]) -> dict:
    best = grid_results[0]
    for r in grid_results[1:]:
        if r["accuracy"]["mean"] > best["accuracy"]["mean"]:
            best = r
    return best


def calibrate(
    engine: Any,
    calib: Task,
    eval_task: Task | None,
    baseline: SamplerConfig,
    cfg: EvalConfig,
    out_dir: str | Path,
    *,
    t_low_grid: Sequence[float] = (0.1, 0.2, 0.3, 0.4),
    n_tau0: int = 64,
    n_select: int = 128,
    split_seed: int = 0,
    progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Run both calibration stages; writes ``out_dir/params.json`` and returns its dict.

    ``baseline``: the fixed-temperature sampler used for the tau0 run (paper: T = 0.6,
    top-p 0.95); its ``top_p`` is kept for the ReSET runs. ``cfg.trace`` is forced on for
    the tau0 run. With ``n_select = 0`` or a one-value grid no T_low search is run and
    T_low is the first grid value (``calibration.t_low_from`` says which happened).
    ``overwrite``: discard and redo the stage runs (``out_dir/tau0``, ``out_dir/t_low_<T>`` of
    this grid) instead of resuming them; nothing else in ``out_dir`` is removed.
    """
    if not t_low_grid:
        raise ValueError("--t-low-grid needs at least one temperature")
    if any(not t > 0 for t in t_low_grid):
        raise ValueError(f"--t-low-grid values must be > 0, got {list(t_low_grid)}")
    names = [f"{t:g}" for t in t_low_grid]  # each grid value runs in OUT/t_low_<t:g>
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"--t-low-grid {list(t_low_grid)} names T_low {dup} twice (to 6 significant "
                         "digits, as its run folder t_low_" + dup + " does); give distinct values")
    out = Path(out_dir)
    need_select = len(t_low_grid) > 1 and n_select > 0
    tau_set, sel_set, dropped = disjoint_splits(
        calib.problems,
        eval_task.problems if eval_task else [],
        n_tau0,
        n_select if need_select else 0,
        split_seed,
    )
    tau_run = out / "tau0"
    run_eval(
        engine,
        Task(f"{calib.name}-tau0", tau_set),
        baseline,
        dataclasses.replace(cfg, trace=True),
        tau_run,
        progress=progress,
        overwrite=overwrite,
    )
    stats = _tau0_stats(tau_run, out / TAU0_STATS_FILE)
    tau0 = stats["tau0"]
    grid_results = []
    if need_select:
        for t_low in t_low_grid:
            # t_high and window: the ReSETParams defaults (the paper's), as in params.json below
            sampler = SamplerConfig(
                mode="reset",
                t_low=float(t_low),
                tau0=tau0,
                t_high=DEFAULT_T_HIGH,
                window=DEFAULT_WINDOW,
                top_p=baseline.top_p,
            )
            summary = run_eval(
                engine,
                Task(f"{calib.name}-select", sel_set),
                sampler,
                dataclasses.replace(cfg, trace=False),
                out / f"t_low_{t_low:g}",
                progress=progress,
                overwrite=overwrite,
            )
            grid_results.append(
                {
                    "t_low": float(t_low),
                    "accuracy": summary["accuracy"],
                    "truncation_rate": summary["truncation_rate"],
                }
            )
        t_low = _select_t_low(grid_results)["t_low"]
    else:
        t_low = float(t_low_grid[0])
    params = ReSETParams(t_low=t_low, tau0=tau0, source="resetfp4 calibrate")
    calibration = {
        "calib_task": calib.name,
        "eval_task": eval_task.name if eval_task else None,
        "n_overlap_dropped": dropped,
        "tau0_ids": [p.id for p in tau_set],
        "select_ids": [p.id for p in sel_set],
        "split_seed": split_seed,
        "tau0_percentile": TAU0_PERCENTILE,
        "n_entropy_tokens": stats["n_entropy_tokens"],
        "entropy_percentiles": stats["entropy_percentiles"],
        "baseline_sampler": dataclasses.asdict(baseline),
        "samples": cfg.samples,
        "max_new_tokens": cfg.max_new_tokens,
        "t_low_grid": [float(t) for t in t_low_grid],
        "grid": grid_results,
        "t_low_from": "best of grid" if need_select else "first grid value (no search)",
    }
    extra = {
        "model": getattr(engine, "model_name", None),
        "precision": getattr(engine, "precision", None),
        "calibration": calibration,
    }
    write_params(out / "params.json", params, **extra)
    return json.loads((out / "params.json").read_text())


def _tau0_stats(tau_run: Path, path: Path) -> dict:
    """tau0 and the entropy percentiles of the finished tau0 run, cached in ``path``.

    The entropies are read from ``tokens.jsonl`` and ``tokens.npz`` together
    (:func:`resetfp4.eval.analysis.collect_run_entropies`): a run packed by ``study --pack``
    and resumed elsewhere keeps its earlier samples only in the npz. The npz stores them as
    float16, so once computed the figures are kept in ``path`` (keyed by the sha256 of the run's
    ``problems.jsonl``, which changes whenever the run gains or redoes problems) and reused: a
    calibration resumed after packing keeps the tau0 its T_low runs were started with.
    """
    from resetfp4.eval.analysis import collect_run_entropies  # local: analysis imports this module

    key = sha256_file(tau_run / PROBLEMS_FILE)
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = None  # none yet, or damaged: recomputed below
    if (
        isinstance(kept, dict)
        and kept.get("problems_sha256") == key
        and kept.get("tau0_percentile") == TAU0_PERCENTILE
        and isinstance(kept.get("tau0"), float)
    ):
        return kept
    ent = collect_run_entropies(tau_run)
    stats = {
        "problems_sha256": key,
        "tau0_percentile": TAU0_PERCENTILE,
        "tau0": float(np.percentile(ent, TAU0_PERCENTILE)),
        "n_entropy_tokens": int(ent.size),
        "entropy_percentiles": {str(q): float(np.percentile(ent, q)) for q in ENTROPY_PERCENTILES},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return stats
