"""``resetfp4 calibrate``: ReSET's tau0 (p80 NVFP4 token entropy) and T_low, on held-out problems.

The calibration problems are disjoint from the evaluation set: by default MATH-500 when
evaluating GSM8K, and the rest of the MATH test set when evaluating MATH-500. Writes
``OUT/params.json`` (pass it to ``resetfp4 eval --params`` / ``generate --params``), plus one
resumable eval run folder per stage (``OUT/tau0``, ``OUT/t_low_<T>``). Rerunning the command
resumes them; after changing settings, pass ``--overwrite`` to redo them.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

from resetfp4.cli.evaluate import (
    DEFAULT_RUN_SEED,
    add_model_args,
    eval_config_from_args,
    load_engine_from_args,
)
from resetfp4.sampling.config import SamplerConfig

_DEFAULTS = SamplerConfig()


def _grid(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--t-low-grid must be comma-separated numbers, got {text!r}"
        ) from None
    if not vals:
        raise argparse.ArgumentTypeError("--t-low-grid is empty")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate ReSET's tau0 and T_low on held-out problems",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--eval-task", default="gsm8k", help="the task you will evaluate (kept disjoint)")
    p.add_argument(
        "--calib-task",
        default=None,
        help="held-out problems: math500 | math-heldout | FILE (default: by --eval-task)",
    )
    p.add_argument(
        "--t-low-grid",
        type=_grid,
        default=[0.1, 0.2, 0.3, 0.4],
        help="T_low candidates, chosen on the select split (default: 0.1,0.2,0.3,0.4)",
    )
    p.add_argument("--n-tau0", type=int, default=64, help="problems for the tau0 entropy run")
    p.add_argument("--n-select", type=int, default=128, help="problems for choosing T_low (disjoint)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the calibration split")
    p.add_argument(
        "--temperature",
        type=float,
        default=_DEFAULTS.temperature,
        help="baseline T of the tau0 run (default: %(default)s)",
    )
    p.add_argument("--top-p", type=float, default=_DEFAULTS.top_p, help="(default: %(default)s)")
    p.add_argument("--out", required=True, help="calibration folder")
    p.add_argument("--params-out", default=None, help="also copy params.json here")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the stage runs of an earlier calibration in --out (OUT/tau0 and OUT/t_low_<T> of "
        "this grid) and redo them, instead of resuming them; needed when settings changed",
    )
    # both stages draw random numbers (tau0: the fixed sampler, T_low: reset), so --seed is always used
    add_model_args(p, default_precision="nvfp4-w4a4",
                   seed_help=f"run seed of the tau0 (fixed sampler) and T_low (reset sampler) runs; each "
                   f"sample's seed derives from it (default {DEFAULT_RUN_SEED})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resetfp4.eval.calibrate import DEFAULT_CALIB_TASK, calibrate
    from resetfp4.eval.datasets import load_task

    if args.n_tau0 < 1 or args.n_select < 1:
        raise ValueError("--n-tau0 and --n-select must be >= 1")
    if any(not 0 < t <= _DEFAULTS.t_high for t in args.t_low_grid):
        raise ValueError(
            f"--t-low-grid values must be in (0, {_DEFAULTS.t_high:g}]: T_low > 0 and at most the paper's "
            f"T_high {_DEFAULTS.t_high:g}, which calibrate keeps; got {args.t_low_grid}"
        )
    if not (args.temperature > 0 and math.isfinite(args.temperature)):
        raise ValueError(
            f"--temperature is the fixed T of the tau0 run and must be a finite T > 0, got "
            f"{args.temperature} (the paper's baseline: {_DEFAULTS.temperature:g})"
        )
    calib_name = args.calib_task or DEFAULT_CALIB_TASK.get(args.eval_task)
    if calib_name is None:
        raise ValueError(f"no default calibration task for --eval-task {args.eval_task}; pass --calib-task")
    if calib_name == args.eval_task:
        raise ValueError("--calib-task must differ from --eval-task (calibration must be held out)")
    baseline = SamplerConfig(mode="fixed", temperature=args.temperature, top_p=args.top_p)
    eval_task = load_task(args.eval_task)
    calib = load_task(calib_name)
    engine = load_engine_from_args(args)
    cfg = eval_config_from_args(args, trace=True)
    params = calibrate(
        engine,
        calib,
        eval_task,
        baseline,
        cfg,
        args.out,
        t_low_grid=args.t_low_grid,
        n_tau0=args.n_tau0,
        n_select=args.n_select,
        split_seed=args.split_seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    if args.params_out:
        Path(args.params_out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(args.out) / "params.json", args.params_out)
    for g in params["calibration"]["grid"]:
        lo, hi = g["accuracy"]["ci95"]
        print(
            f"  T_low {g['t_low']:<5g} accuracy {100 * g['accuracy']['mean']:.1f}% "
            f"[{100 * lo:.1f}, {100 * hi:.1f}]",
            file=sys.stderr,
        )
    print(
        f"tau0 = {params['tau0']:.4f} nats (p80 over {params['calibration']['n_entropy_tokens']} tokens), "
        f"T_low = {params['t_low']:g}; wrote {Path(args.out) / 'params.json'}"
    )
    return 0
