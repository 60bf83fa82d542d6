"""``resetfp4 bench sampler``: ReSET vs fixed-temperature top-p in the same BatchSampler.

Per batch size: µs/step eager and replayed inside a CUDA graph (median of ``--repeats``
timings of ``--iters`` steps each), host syncs per eager step (counted with
``torch.cuda.set_sync_debug_mode("warn")``), and ReSET's extra cost as % of a decode step
(``--decode-step-ms``, or per-batch values found in a decode-benchmark JSON). ``--impl``
picks the sampler implementation (``triton`` fast path, ``torch`` candidates, ``sort`` the
exact full-sort reference); ``--profile`` prints a torch.profiler table of the GPU kernels.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from resetfp4.sampling import BatchSampler, SamplerConfig, triton_available
from resetfp4.sampling.batch import DEFAULT_CANDIDATES, IMPLS, SELECTS, pick_select

QWEN3_VOCAB = 151_936
DECODE_PRECISIONS = ("nvfp4-w4a16", "nvfp4-w4a4", "bf16")
STEP_KEYS = ("decode_step_ms", "step_ms", "ms_per_step", "ms_per_token")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes")
    p.add_argument("--vocab", type=int, default=QWEN3_VOCAB, help="vocabulary size (Qwen3: 151,936)")
    p.add_argument("--iters", type=int, default=100, help="steps per timing")
    p.add_argument("--repeats", type=int, default=5, help="timings per cell (median reported)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--decode-step-ms", type=float, nargs="+", default=None,
                   help="Qwen3-8B NVFP4 decode step in ms: one value, or one per --batch")
    p.add_argument("--decode-json", type=Path, default=None,
                   help=f"decode-benchmark JSON: records with 'batch' and one of {STEP_KEYS}")
    p.add_argument("--decode-precision", default="nvfp4-w4a16", choices=DECODE_PRECISIONS,
                   help="with --decode-json: the decode records to compare against (the fixed-"
                        "sampler, CUDA-graph, compiled one is preferred)")
    p.add_argument("--json", type=Path, default=Path("bench_sampler.json"), help="where to write results")
    p.add_argument("--impl", default="auto", choices=IMPLS, help="BatchSampler implementation")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help="top-p candidates per row")
    p.add_argument("--select", default="auto", choices=SELECTS,
                   help="Triton path: candidates from a logit histogram (no sort), torch.topk, or auto")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler kernel table per cell")


def _make(mode: str, B: int, args: argparse.Namespace) -> BatchSampler:
    # the fixed baseline skips entropy + policy; ReSET adds exactly those
    s = BatchSampler(B, args.vocab, args.device, track_entropy=mode == "reset", impl=args.impl,
                     candidates=args.candidates, select=args.select)
    for b in range(B):  # paper settings: fixed T=0.6 / ReSET (Qwen3-8B), both with top-p 0.95
        s.configure(b, SamplerConfig(mode=mode, temperature=0.6, t_low=0.1, tau0=0.5505, top_p=0.95), seed=b)
    return s


def _time_us(fn, iters: int, repeats: int, cuda: bool) -> float:
    out = []
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(iters):
                fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) * 1e3 / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            out.append((time.perf_counter() - t0) * 1e6 / iters)
    return statistics.median(out)


def _count_syncs(s: BatchSampler, x: torch.Tensor, steps: int = 3) -> float | None:
    if x.device.type != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                s.step(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # the checker's own message; not the one-time "prototype feature" notice
    return sum("called a synchronizing" in str(w.message) for w in caught) / steps


def _graph_us(s: BatchSampler, x: torch.Tensor, iters: int, repeats: int) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            s.step(x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        s.step(x)
    g.replay()
    return _time_us(g.replay, iters, repeats, True)


def _logits(B: int, V: int, device: str) -> torch.Tensor:
    """LM-like rows: a few dozen plausible tokens over a long Gaussian tail (seeded)."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, V, device=device, generator=g) * 2 - 6
    x[:, :64] += 8 + 4 * torch.rand(B, 64, device=device, generator=g)
    return x


def _profile(s: BatchSampler, x: torch.Tensor, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            s.step(x)
        torch.cuda.synchronize()
    print(f"## profile {label} (20 eager steps)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=48))


def _bench_cell(mode: str, B: int, args: argparse.Namespace) -> dict[str, Any]:
    s = _make(mode, B, args)
    x = _logits(B, args.vocab, args.device)
    cuda = x.device.type == "cuda"
    for _ in range(3):
        s.step(x)
    row: dict[str, Any] = {"mode": mode, "batch": B, "impl": s.impl, "candidates": s.candidates,
                           "select": pick_select(s.select, B) if s.impl == "triton" else None,
                           "eager_us": _time_us(lambda: s.step(x), args.iters, args.repeats, cuda)}
    row["host_syncs_per_step"] = _count_syncs(s, x)
    row["graph_us"] = _graph_us(s, x, args.iters, args.repeats) if cuda else None
    steps = s.counter[:B].double().clamp(min=1)
    row["truncated_frac"] = float((s.truncated[:B] / steps).mean())
    if args.profile and cuda:
        _profile(s, x, f"{s.impl} {mode} batch {B}")
    return row


RECORD_FIELDS = ("precision", "sampler", "graphs", "compiled")


def _dicts(o: Any) -> Iterator[dict]:
    """Every dict in a JSON value, depth first (the value itself first)."""
    if isinstance(o, dict):
        yield o
        for v in o.values():
            yield from _dicts(v)
    elif isinstance(o, list):
        for v in o:
            yield from _dicts(v)


def _find_step_record(obj: Any, B: int, precision: str) -> dict | None:
    """The decode step to compare against: a record with ``batch == B``, a step-time key and
    ``precision`` (records without that field match any precision). Among those, the fixed
    sampler (ReSET's extra cost is measured on top of it), CUDA graphs and torch.compile are
    preferred, then the first found (depth-first). Returns ``{"ms": .., <RECORD_FIELDS>}``."""
    found: list[dict] = []
    for o in _dicts(obj):
        if o.get("batch") == B and o.get("precision", precision) == precision:
            for k in STEP_KEYS:
                if isinstance(o.get(k), (int, float)) and not isinstance(o.get(k), bool):
                    found.append({"ms": float(o[k])} | {f: o.get(f) for f in RECORD_FIELDS})
                    break
    found.sort(key=lambda r: (r["sampler"] not in (None, "fixed"), r["graphs"] is False,
                              r["compiled"] is False))
    return found[0] if found else None


def _precisions(obj: Any) -> list[str]:
    """Every ``precision`` value in a decode-benchmark JSON (for the error message)."""
    return sorted({o["precision"] for o in _dicts(obj) if isinstance(o.get("precision"), str)})


def _decode_records(args: argparse.Namespace) -> dict[int, dict | None]:
    """Per batch size, the decode step the ReSET overhead is a percentage of (or None)."""
    if args.decode_step_ms:
        v = args.decode_step_ms
        if len(v) not in (1, len(args.batch)):
            n = len(args.batch)
            raise ValueError(f"--decode-step-ms takes 1 value or one per batch ({n}), got {len(v)}")
        if any(not 0 < x < float("inf") for x in v):
            raise ValueError(f"--decode-step-ms values must be finite and > 0 (ms per decode step), got {v}")
        return {B: {"ms": (v[0] if len(v) == 1 else v[i]), "source": "--decode-step-ms"}
                for i, B in enumerate(args.batch)}
    if args.decode_json:
        try:
            data = json.loads(args.decode_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(
                f"--decode-json {args.decode_json} is not valid JSON ({e}); pass the file "
                "`resetfp4 bench decode --json` wrote"
            ) from None
        out = {B: _find_step_record(data, B, args.decode_precision) for B in args.batch}
        if all(r is None for r in out.values()):
            have = _precisions(data)
            raise ValueError(
                f"--decode-json {args.decode_json} has no record with precision "
                f"{args.decode_precision!r} at batch {args.batch} (precisions in the file: "
                f"{have or 'none'}); pass --decode-precision, or run `resetfp4 bench decode` "
                "at these batch sizes"
            )
        for r in out.values():
            if r is not None:
                r["source"] = str(args.decode_json)
        return out
    return {B: None for B in args.batch}


def check_args(args: argparse.Namespace) -> None:
    """Refuse counts that would time nothing (ZeroDivisionError, an empty median), before any work."""
    for flag, v in (("--iters", args.iters), ("--repeats", args.repeats)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    bad = [b for b in args.batch if b < 1]
    if bad:
        raise ValueError(f"--batch sizes must be >= 1, got {bad}")


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but no CUDA GPU is visible; pass --device cpu for a smoke run")
    check_args(args)
    dev = torch.device(args.device)
    if dev.type == "cuda" and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {args.device}: only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
        # events, streams and graphs below use the current device: make it the one asked for
        torch.cuda.set_device(dev)
    decode = _decode_records(args)
    rows = []
    for B in args.batch:
        fixed, reset = _bench_cell("fixed", B, args), _bench_cell("reset", B, args)
        for key in ("eager_us", "graph_us"):
            extra = None if reset[key] is None else reset[key] - fixed[key]
            reset[f"reset_extra_{key}"] = extra
        rec = decode[B]
        ms = None if rec is None else rec["ms"]
        reset["decode_record"] = rec
        graphed = reset["graph_us"] is not None  # the graph replay is what rides with a decode step
        basis = reset["reset_extra_graph_us"] if graphed else reset["reset_extra_eager_us"]
        reset["decode_step_ms"] = ms
        reset["overhead_pct_of_decode"] = None if ms is None else 100 * basis / (ms * 1e3)
        rows += [fixed, reset]
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": args.device,
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
           "vocab": args.vocab, "iters": args.iters, "repeats": args.repeats, "impl": args.impl,
           "candidates": args.candidates, "select": args.select}
    if args.device.startswith("cuda") and triton_available():
        import triton

        env["triton"] = triton.__version__
    print(f"# sampler bench  {env['gpu']}  torch {env['torch']}  vocab {args.vocab}  impl {rows[0]['impl']}"
          f"  select {args.select}  K {args.candidates}")
    print(f"{'batch':>5} {'mode':>6} {'eager µs':>9} {'graph µs':>9} {'syncs':>6} {'+µs(graph)':>10} "
          f"{'% decode':>9} {'trunc':>6}")
    for r in rows:
        print(f"{r['batch']:>5} {r['mode']:>6} {_fmt(r['eager_us']):>9} {_fmt(r['graph_us']):>9} "
              f"{_fmt(r['host_syncs_per_step'], '.2f'):>6} {_fmt(r.get('reset_extra_graph_us')):>10} "
              f"{_fmt(r.get('overhead_pct_of_decode'), '.3f'):>9} {r['truncated_frac']:>6.3f}")
    args.json.write_text(json.dumps({"env": env, "results": rows}, indent=2))  # after the table
    print(f"wrote {args.json}")
    return 0
