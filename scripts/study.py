"""The accuracy study of issue 5, resumable and deadline-aware, for one GPU machine.

Runs, in order of importance, on the first ``--limit`` GSM8K problems:
  1. calibrate ReSET on MATH-500 (disjoint from GSM8K) with NVFP4 W4A4: tau0 = p80
     entropy of a T=0.6 run, T_low picked from ``--t-low-grid`` on a held-out split;
  2. W4A4 T=0.6;  3. reference (bf16) T=0.6;  4. W4A4 ReSET;  5. W4A16 T=0.6;
  6. reference ReSET.
Every stage writes a run folder (resumable: finished problems are skipped), so the
study can span several device calls. The process stops cleanly before ``--deadline-s``.

    python scripts/study.py --model /root/keep/qwen05.gguf --out /root/keep/runs \
        --limit 256 --samples 4 --max-new-tokens 1024 --batch-size 256 --deadline-s 540
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from resetfp4.engine.engine import load_engine
from resetfp4.eval.calibrate import calibrate
from resetfp4.eval.datasets import load_task
from resetfp4.eval.params import load_params
from resetfp4.eval.runner import EvalConfig, run_eval
from resetfp4.sampling.config import SamplerConfig


class DeadlineReached(RuntimeError):
    pass


class DeadlineEngine:
    """Wraps an engine: refuses a new batch once the deadline is near (the runner has
    already written every finished problem, so the next call resumes there)."""

    def __init__(self, engine, deadline: float, batch_estimate_s: float) -> None:
        self._engine, self._deadline, self._est = engine, deadline, batch_estimate_s

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, *args, **kwargs):
        if time.time() + self._est > self._deadline:
            raise DeadlineReached("deadline")
        t0 = time.time()
        out = self._engine.generate(*args, **kwargs)
        self._est = max(self._est, time.time() - t0)
        return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--deadline-s", type=float, default=540)
    ap.add_argument("--n-tau0", type=int, default=32)
    ap.add_argument("--n-select", type=int, default=64)
    ap.add_argument("--t-low-grid", default="0.1,0.3")
    ap.add_argument("--stages", default="calib,w4a4-t06,ref-t06,w4a4-reset,w4a16-t06,ref-reset")
    args = ap.parse_args()
    deadline = time.time() + args.deadline_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gsm = load_task("gsm8k", limit=args.limit)
    cfg = EvalConfig(samples=args.samples, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size)
    t06 = SamplerConfig(mode="fixed", temperature=0.6, top_p=0.95)
    engines: dict[str, object] = {}
    log = out / "study_log.jsonl"

    def engine(precision: str):
        if precision not in engines:
            engines.clear()
            t0 = time.time()
            e = load_engine(args.model, precision, device="cuda", max_batch=args.batch_size,
                            max_seq_len=args.max_new_tokens + 512)
            engines[precision] = DeadlineEngine(e, deadline, 60.0)
            print(f"loaded {precision} in {time.time() - t0:.1f}s", flush=True)
        return engines[precision]

    def reset_sampler() -> SamplerConfig:
        p = load_params(out / "calib" / "params.json")
        return SamplerConfig(mode="reset", t_low=p.t_low, tau0=p.tau0, t_high=p.t_high,
                             window=p.window, top_p=0.95)

    stages = {
        "w4a4-t06": ("nvfp4-w4a4", lambda: t06, True),
        "ref-t06": ("bf16", lambda: t06, True),
        "w4a4-reset": ("nvfp4-w4a4", reset_sampler, True),
        "w4a16-t06": ("nvfp4-w4a16", lambda: t06, False),
        "ref-reset": ("bf16", reset_sampler, False),
    }
    try:
        for name in args.stages.split(","):
            t0 = time.time()
            if name == "calib":
                if (out / "calib" / "params.json").exists():
                    continue
                math = load_task("math500")
                calibrate(engine("nvfp4-w4a4"), math, gsm, t06, cfg, out / "calib",
                          t_low_grid=[float(t) for t in args.t_low_grid.split(",")],
                          n_tau0=args.n_tau0, n_select=args.n_select)
                summary = json.loads((out / "calib" / "params.json").read_text())
            else:
                precision, sampler, trace = stages[name]
                summary = run_eval(engine(precision), gsm, sampler(),
                                   EvalConfig(**{**cfg.__dict__, "trace": trace}), out / name)
                summary = {k: summary.get(k) for k in ("accuracy", "n_problems", "truncation_rate",
                                                       "avg_length", "tokens_per_s")}
            rec = {"stage": name, "wall_s": round(time.time() - t0, 1), "result": summary}
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    except DeadlineReached:
        print("deadline reached: rerun the same command to resume", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
