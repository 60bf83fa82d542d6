"""The accuracy study of issue 5, resumable and deadline-aware, for one GPU machine.

Stages, most important first (``--stages``, comma-separated, run in the order given):

  a  the five configurations of the issue on GSM8K (all 1,319 problems unless ``--limit``),
     4 samples: w4a4-t06, ref-t06, w4a4-reset, ref-reset, w4a16-t06 (``--a-configs``).
     Interleaved in blocks of ``--block`` problems, so that wherever the deadline cuts,
     every configuration covers (almost) the same problems and the runs stay paired.
     ``a:N`` stops stage a after the first N problems (``a:300,b,a`` = a on the first 300,
     then b, then the rest of a).
  b  sensitivity on the FIRST ``--b-limit`` (300) GSM8K problems, same ids as stage a's
     first problems (``resetfp4 compare`` pairs them): w4a4-reset-th06 (T_high = 0.6),
     ref-reset-th06, w4a4-reset-p90 (tau0 = p90 of the calibration entropies),
     w4a4-greedy and ref-greedy (1 sample each).
  c  T_low grid on ``math-easy`` (MATH prealgebra levels 1-2, held out from MATH-500 and
     GSM8K; the wheel ships no GSM8K train split): W4A4 ReSET for each ``--c-grid`` T_low,
     then W4A4 T=0.6 on the same problems.
  calib  (only without ``--params``) calibrate tau0/T_low on MATH-500 as in session 1.

ReSET parameters come from ``--params FILE`` (``resetfp4 calibrate`` format; session 1's
is docs/results/gsm8k300/calib/params.json), so no GPU time goes to calibration.
Every run is a resumable run folder under ``--out``; ``study_log.jsonl`` records each unit
(stage, run, problems done, wall time, generated tokens, tokens/s). The process stops
before ``--deadline-s`` (exit code 3; rerun to resume) and, with ``--pack DIR``, first
writes the analysis and packs everything into a few files of DIR (``resetfp4.eval.pack``).

    python scripts/study.py --model /root/keep/qwen05.gguf --out /root/runs \\
        --params docs/results/gsm8k300/calib/params.json --stages a,b,c \\
        --batch-size 256 --deadline-s 500 --pack $OUT

Exit codes: 0 all stages done, 3 stopped at the deadline, 1 an error (the traceback is
printed; what finished is still packed). To go on in a later device call, bring the parts
back and unpack them before the same command: ``cat study.tgz.* | tar xz -C /root/runs``
(runs resume from problems.jsonl; token dumps continue in tokens.jsonl beside the earlier
tokens.npz, and the analysis merges the two).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from resetfp4.engine.engine import load_engine
from resetfp4.eval.datasets import load_task
from resetfp4.eval.params import load_params
from resetfp4.eval.runner import PROBLEMS_FILE, EvalConfig, run_eval, write_summary
from resetfp4.sampling.config import ReSETParams, SamplerConfig

A_CONFIGS = ("w4a4-t06", "ref-t06", "w4a4-reset", "ref-reset", "w4a16-t06")
B_CONFIGS = ("w4a4-reset-th06", "ref-reset-th06", "w4a4-reset-p90", "w4a4-greedy", "ref-greedy")
PRECISION = {"w4a4": "nvfp4-w4a4", "w4a16": "nvfp4-w4a16", "ref": "bf16"}
PROMPT_BUDGET = 1024  # prompt tokens the KV cache leaves room for (math-easy prompts reach ~830)


class DeadlineReached(RuntimeError):
    pass


class DeadlineEngine:
    """Wraps an engine: refuses a new generate call once the deadline is near. The runner
    has already written every finished problem, so the next invocation resumes there.
    ``timing``: shared across engines, the longest call seen so far (seconds)."""

    def __init__(self, engine, deadline: float, timing: dict) -> None:
        self._engine, self._deadline, self._timing = engine, deadline, timing

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, *args, **kwargs):
        if time.time() + self._timing["est_s"] > self._deadline:
            raise DeadlineReached("deadline")
        t0 = time.time()
        out = self._engine.generate(*args, **kwargs)
        self._timing["est_s"] = max(self._timing["est_s"], time.time() - t0)
        stats = getattr(self._engine, "last_stats", None)  # continuous-batching engine: occupancy
        if isinstance(stats, dict):
            self._timing.setdefault("calls", []).append(stats)
        return out


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run folder: its precision, sampler and samples per problem."""

    name: str
    precision: str
    sampler: SamplerConfig
    samples: int
    trace: bool = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, help="folder of run folders (resumed if it exists)")
    ap.add_argument("--params", default=None, help="ReSET params JSON; without it the calib stage runs")
    ap.add_argument("--stages", default="a,b,c", help="e.g. a,b,c or a:300,b,a,c (default: %(default)s)")
    ap.add_argument("--a-configs", default=",".join(A_CONFIGS), help="stage a runs, in priority order")
    ap.add_argument("--b-configs", default=",".join(B_CONFIGS), help="stage b runs, in priority order")
    ap.add_argument("--limit", type=int, default=None, help="stage a: first N GSM8K problems (all)")
    ap.add_argument("--block", type=int, default=300, help="stage a: problems per interleaved block")
    ap.add_argument("--b-limit", type=int, default=300, help="stage b: first N GSM8K problems")
    ap.add_argument("--c-limit", type=int, default=None, help="stage c: first N math-easy problems (all)")
    ap.add_argument("--c-grid", default="0.1,0.3,0.6", help="stage c: T_low values")
    ap.add_argument("--tau0-p90", type=float, default=None, help="tau0 of w4a4-reset-p90 (default: params)")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256, help="engine slots (max_batch)")
    ap.add_argument(
        "--call-size",
        type=int,
        default=1200,
        help="prompts per generate call: with continuous batching, more keep the slots full; the "
        "deadline is checked between calls (default: %(default)s = 300 problems x 4)",
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline-s", type=float, default=540, help="stop (and pack) within this many seconds")
    ap.add_argument("--pack", default=None, metavar="DIR", help="write analysis + packed runs to DIR")
    ap.add_argument("--pack-reserve-s", type=float, default=60, help="seconds kept for --pack")
    ap.add_argument("--one-engine", action="store_true", help="keep one engine on the GPU, not one each")
    ap.add_argument("--n-tau0", type=int, default=32)
    ap.add_argument("--n-select", type=int, default=64)
    ap.add_argument("--t-low-grid", default="0.1,0.3", help="calib stage only")
    return ap.parse_args(argv)


def parse_stages(spec: str) -> list[tuple[str, int | None]]:
    """``"a:300,b,a,c"`` -> ``[("a", 300), ("b", None), ("a", None), ("c", None)]``."""
    out: list[tuple[str, int | None]] = []
    for tok in (t.strip() for t in spec.split(",") if t.strip()):
        name, _, cap = tok.partition(":")
        if name not in ("a", "b", "c", "calib") or (cap and name != "a"):
            raise ValueError(f"unknown stage {tok!r}: use a, a:N, b, c or calib")
        if cap and (not cap.isdigit() or int(cap) < 1):
            raise ValueError(f"stage {tok!r}: N in a:N must be a positive integer")
        out.append((name, int(cap) if cap else None))
    if not out:
        raise ValueError("--stages is empty")
    return out


def block_ends(n: int, block: int, cap: int | None) -> list[int]:
    """Problem counts after each stage-a block: ``[block, 2 block, ..., min(n, cap)]``."""
    if block < 1:
        raise ValueError(f"--block must be >= 1, got {block}")
    stop = n if cap is None else min(n, cap)
    ends = list(range(block, stop, block))
    return ends + [stop]


def reset(p: ReSETParams, **over) -> SamplerConfig:
    vals = {"t_low": p.t_low, "tau0": p.tau0, "t_high": p.t_high, "window": p.window, **over}
    return SamplerConfig(mode="reset", top_p=0.95, **vals)


def tau0_p90(params_file: Path, override: float | None) -> float:
    if override is not None:
        return override
    d = json.loads(params_file.read_text())
    pct = d.get("calibration", {}).get("entropy_percentiles", {})
    if "90" not in pct:
        raise ValueError(f"{params_file} has no calibration.entropy_percentiles['90']; pass --tau0-p90")
    return float(pct["90"])


def run_specs(args: argparse.Namespace, params: ReSETParams, params_file: Path) -> dict[str, RunSpec]:
    """Every run the study knows, by name."""
    t06 = SamplerConfig(mode="fixed", temperature=0.6, top_p=0.95)
    greedy = SamplerConfig(mode="greedy", top_p=0.95)
    k = args.samples
    specs = [
        RunSpec("w4a4-t06", PRECISION["w4a4"], t06, k),
        RunSpec("ref-t06", PRECISION["ref"], t06, k),
        RunSpec("w4a4-reset", PRECISION["w4a4"], reset(params), k),
        RunSpec("ref-reset", PRECISION["ref"], reset(params), k),
        RunSpec("w4a16-t06", PRECISION["w4a16"], t06, k, trace=False),
        RunSpec("w4a4-reset-th06", PRECISION["w4a4"], reset(params, t_high=0.6), k),
        RunSpec("ref-reset-th06", PRECISION["ref"], reset(params, t_high=0.6), k),
        RunSpec("w4a4-greedy", PRECISION["w4a4"], greedy, 1),
        RunSpec("ref-greedy", PRECISION["ref"], greedy, 1),
        RunSpec("c-w4a4-t06", PRECISION["w4a4"], t06, k),
    ]
    if "w4a4-reset-p90" in args.b_configs.split(","):
        tau = tau0_p90(params_file, args.tau0_p90)
        specs.append(RunSpec("w4a4-reset-p90", PRECISION["w4a4"], reset(params, tau0=tau), k))
    for t in _grid(args.c_grid):
        specs.append(RunSpec(f"c-w4a4-reset-tlow{t:g}", PRECISION["w4a4"], reset(params, t_low=t), k))
    return {s.name: s for s in specs}


def _grid(text: str) -> list[float]:
    vals = [float(t) for t in text.split(",") if t.strip()]
    if not vals or any(not v > 0 for v in vals):
        raise ValueError(f"--c-grid needs temperatures > 0, got {text!r}")
    return vals


def _names(text: str, known: tuple[str, ...], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"{flag}: unknown run(s) {bad}; choose from {', '.join(known)}")
    return names


def _done_tokens(run_dir: Path) -> tuple[int, int]:
    """(finished problems, generated tokens) of a run folder so far."""
    path = run_dir / PROBLEMS_FILE
    if not path.exists():
        return 0, 0
    n = toks = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line: the runner drops it on resume
        n, toks = n + 1, toks + sum(rec["lengths"])
    return n, toks


class Study:
    """Runs units (one run folder up to N problems) against a deadline and logs each one."""

    def __init__(self, args: argparse.Namespace, deadline: float) -> None:
        self.args, self.deadline = args, deadline
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.engines: dict[str, DeadlineEngine] = {}
        self.timing = {"est_s": 30.0}  # first guess of one generate call; then the longest seen
        self.load_s = 0.0
        self.records: list[dict] = []

    def engine(self, precision: str) -> DeadlineEngine:
        if precision not in self.engines:
            if self.args.one_engine and self.engines:
                import gc

                import torch

                self.engines.clear()
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            t0 = time.time()
            e = load_engine(
                self.args.model,
                precision,
                device=self.args.device,
                max_batch=self.args.batch_size,
                max_seq_len=self.args.max_new_tokens + PROMPT_BUDGET,
            )
            self.engines[precision] = DeadlineEngine(e, self.deadline, self.timing)
            self.load_s += time.time() - t0
            print(f"loaded {precision} in {time.time() - t0:.1f}s", flush=True)
        return self.engines[precision]

    def unit(self, stage: str, spec: RunSpec, task, upto: int | None = None) -> None:
        """Run ``spec`` on ``task`` (first ``upto`` problems) and log it; re-raises the deadline."""
        run_dir = self.out / spec.name
        n0, tok0 = _done_tokens(run_dir)
        t0, load0, calls0 = time.time(), self.load_s, len(self.timing.get("calls", []))
        call = max(spec.samples, self.args.call_size // spec.samples * spec.samples)
        cfg = EvalConfig(
            samples=spec.samples,
            max_new_tokens=self.args.max_new_tokens,
            batch_size=call,
            trace=spec.trace,
        )
        interrupted = False
        try:
            run_eval(self.engine(spec.precision), task, spec.sampler, cfg, run_dir, upto=upto)
        except DeadlineReached:
            interrupted = True
            if (run_dir / PROBLEMS_FILE).exists() and _done_tokens(run_dir)[0]:
                write_summary(run_dir, task)
            raise
        finally:
            calls = self.timing.get("calls", [])[calls0:]
            self._log(stage, spec, run_dir, task, upto, (t0, load0, n0, tok0, interrupted, calls))

    def _log(self, stage, spec, run_dir, task, upto, before) -> None:
        t0, load0, n0, tok0, interrupted, calls = before
        n1, tok1 = _done_tokens(run_dir)
        load = self.load_s - load0
        gen_s = max(1e-9, time.time() - t0 - load)
        summ = run_dir / "summary.json"
        acc = json.loads(summ.read_text())["accuracy"]["mean"] if summ.exists() and n1 else None
        rec = {
            "stage": stage,
            "run": spec.name,
            "upto": upto or len(task.problems),
            "n_done": n1,
            "n_task": len(task.problems),
            "new_problems": n1 - n0,
            "new_tokens": tok1 - tok0,
            "wall_s": round(time.time() - t0, 1),
            "load_s": round(load, 1),
            "tokens_per_s": round((tok1 - tok0) / gen_s, 1),
            "accuracy": acc,
            "interrupted": interrupted,
        }
        if calls:  # the engine's own numbers (continuous batching): steps, slots, occupancy
            steps = sum(c.get("decode_steps", 0) for c in calls)
            slot_steps = sum(c.get("decode_steps", 0) * c.get("slots", 0) for c in calls)
            rec["engine"] = {
                "calls": len(calls),
                "seconds": round(sum(c.get("seconds", 0.0) for c in calls), 1),
                "decode_steps": steps,
                "occupancy": round(sum(c.get("tokens", 0) for c in calls) / slot_steps, 3)
                if slot_steps
                else None,
            }
        self.records.append(rec)
        self.write_log(rec)

    def write_log(self, rec: dict) -> None:
        with open(self.out / "study_log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    def stage_total(self, stage: str, first: int, t0: float) -> None:
        """One log line per stage invocation: its units' tokens over its wall time."""
        recs = self.records[first:]
        toks = sum(r["new_tokens"] for r in recs)
        wall = time.time() - t0
        self.write_log(
            {
                "stage_total": stage,
                "units": len(recs),
                "wall_s": round(wall, 1),
                "load_s": round(sum(r["load_s"] for r in recs), 1),
                "new_tokens": toks,
                "tokens_per_s": round(toks / wall, 1) if wall > 0 else None,
                "interrupted": any(r["interrupted"] for r in recs),
            }
        )


def stage_a(study: Study, specs: dict[str, RunSpec], cap: int | None) -> None:
    args = study.args
    gsm = load_task("gsm8k", limit=args.limit)
    names = _names(args.a_configs, A_CONFIGS, "--a-configs")
    for end in block_ends(len(gsm.problems), args.block, cap):
        for name in names:
            study.unit("a", specs[name], gsm, upto=end)


def stage_b(study: Study, specs: dict[str, RunSpec]) -> None:
    gsm = load_task("gsm8k", limit=study.args.b_limit)
    for name in _names(study.args.b_configs, B_CONFIGS, "--b-configs"):
        study.unit("b", specs[name], gsm)


def stage_c(study: Study, specs: dict[str, RunSpec]) -> None:
    easy = load_task("math-easy", limit=study.args.c_limit)
    for t in _grid(study.args.c_grid):
        study.unit("c", specs[f"c-w4a4-reset-tlow{t:g}"], easy)
    study.unit("c", specs["c-w4a4-t06"], easy)


def stage_calib(study: Study) -> Path:
    """Session 1's calibration (MATH-500, W4A4); returns the params file."""
    from resetfp4.eval.calibrate import calibrate

    args, calib_dir = study.args, study.out / "calib"
    if not (calib_dir / "params.json").exists():
        cfg = EvalConfig(samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=args.call_size)
        calibrate(
            study.engine(PRECISION["w4a4"]),
            load_task("math500"),
            load_task("gsm8k", limit=args.limit),
            SamplerConfig(mode="fixed", temperature=0.6, top_p=0.95),
            cfg,
            calib_dir,
            t_low_grid=[float(t) for t in args.t_low_grid.split(",")],
            n_tau0=args.n_tau0,
            n_select=args.n_select,
        )
    return calib_dir / "params.json"


def resolve_params(study: Study, stages: list[tuple[str, int | None]]) -> Path:
    """The params file: ``--params``, else a finished calibration, else the calib stage."""
    if study.args.params:
        load_params(study.args.params)  # fail early on a bad file
        return Path(study.args.params)
    if (study.out / "calib" / "params.json").exists():
        return study.out / "calib" / "params.json"
    if ("calib", None) not in stages:
        raise ValueError("no ReSET parameters: pass --params FILE or add the calib stage to --stages")
    return stage_calib(study)


PARALLEL_MIN_BYTES = 64 << 20  # below this much JSON, worker start-up costs more than it saves


def _analyze_all(traced: list[Path], pol) -> list[tuple[Path, dict | ValueError]]:
    """analyze_run(write_npz=True) of each run; in worker processes when the dumps are big."""
    from resetfp4.eval.analysis import analyze_run

    def one(get):
        try:
            return get()
        except ValueError as e:
            return e

    if sum((d / "tokens.jsonl").stat().st_size for d in traced) < PARALLEL_MIN_BYTES:
        return [(d, one(lambda d=d: analyze_run(d, pol, write_npz=True))) for d in traced]
    spawn = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA state
    with ProcessPoolExecutor(max_workers=min(8, len(traced)), mp_context=spawn) as pool:
        futs = [(d, pool.submit(analyze_run, d, pol, write_npz=True)) for d in traced]
        return [(d, one(f.result)) for d, f in futs]


def pack(args: argparse.Namespace, params_file: Path | None) -> None:
    """Analysis of every traced run + an accuracy table, then the packed runs, into ``--pack``."""
    from resetfp4.eval.analysis import Policy, analysis_markdown
    from resetfp4.eval.pack import pack_runs
    from resetfp4.eval.report import load_run, markdown_table

    out, dest = Path(args.out), Path(args.pack)
    dest.mkdir(parents=True, exist_ok=True)
    runs = [d for d in sorted(out.iterdir()) if (d / "summary.json").is_file()]
    pol = None
    if params_file is not None:
        p = load_params(params_file)
        pol = Policy(tau0=p.tau0, t_high=p.t_high, window=p.window)
    traced = [d for d in runs if (d / "tokens.jsonl").is_file()]
    results = []
    for d, res in _analyze_all(traced, pol):
        if isinstance(res, ValueError):  # e.g. a fixed-T run and no params to replay it with
            print(f"analysis of {d.name} skipped: {res}", flush=True)
        else:
            results.append(res)
    (out / "analysis.json").write_text(json.dumps(results, indent=2) + "\n")
    md = analysis_markdown(results) if results else "no traced runs\n"
    table = markdown_table([load_run(d) for d in runs], [d.name for d in runs]) if runs else ""
    for name, text in (("analysis.md", md), ("accuracy.md", table)):
        (out / name).write_text(text)
        (dest / name).write_text(text)
    if (out / "study_log.jsonl").exists():
        (dest / "study_log.jsonl").write_text((out / "study_log.jsonl").read_text())
    print(json.dumps(pack_runs(out, dest)), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    reserve = args.pack_reserve_s if args.pack else 0.0
    stages = parse_stages(args.stages)
    study = Study(args, t_start + args.deadline_s - reserve)
    params_file: Path | None = None
    rc = 0
    try:
        _names(args.a_configs, A_CONFIGS, "--a-configs")  # bad flags fail before any GPU work
        _names(args.b_configs, B_CONFIGS, "--b-configs")
        _grid(args.c_grid)
        params_file = resolve_params(study, stages)
        params = load_params(params_file)
        specs = run_specs(args, params, params_file)
        actions: dict[str, Callable] = {
            "a": lambda cap: stage_a(study, specs, cap),
            "b": lambda cap: stage_b(study, specs),
            "c": lambda cap: stage_c(study, specs),
            "calib": lambda cap: None,  # done by resolve_params when needed
        }
        for name, cap in stages:
            first, t0 = len(study.records), time.time()
            try:
                actions[name](cap)
            finally:
                if name != "calib":
                    study.stage_total(name if cap is None else f"{name}:{cap}", first, t0)
    except DeadlineReached:
        print("deadline reached: rerun the same command to resume", flush=True)
        rc = 3
    except Exception:  # one device call: still pack what finished, then fail
        traceback.print_exc()
        rc = 1
    if args.pack:
        try:
            pack(args, params_file)
        except Exception:  # the log above and whatever reached --pack still come back
            traceback.print_exc()
            rc = rc or 1
    print(f"study: {time.time() - t_start:.0f}s in all", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
