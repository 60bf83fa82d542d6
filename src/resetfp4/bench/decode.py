"""``resetfp4 bench decode``: end-to-end decode speed, bf16 vs nvfp4-w4a16 vs nvfp4-w4a4.

For each precision x sampler (``fixed`` = T 0.6 + top-p without ReSET's entropy/policy
work, ``reset`` = ReSET with Qwen3-8B's paper parameters) x batch size: prefill time of
``batch x prompt-len`` tokens (separately), then ``gen-len`` decode steps through the
engine's CUDA-graph decode step (sampler inside). Reported: tokens/s, ms per step,
achieved bandwidth = bytes read per step (all linear weights + lm_head + the KV cache
positions attended) / step time, and its % of the device-to-device copy bandwidth
measured in the same run. Random weights (``--random-weights``) are fine for speed and
the output says so.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from resetfp4.engine.build import PRECISIONS, random_model, resolve_device
from resetfp4.engine.config import PRESETS, ModelArgs
from resetfp4.engine.decode import DecodeRunner, attn_bucket
from resetfp4.engine.model import Linear, Transformer
from resetfp4.engine.sampling_glue import configure_rows, reset_config
from resetfp4.sampling import PAPER_PARAMS, BatchSampler, SamplerConfig

SAMPLERS = {
    "fixed": SamplerConfig(mode="fixed", temperature=0.6, top_p=0.95),
    "reset": reset_config(PAPER_PARAMS["qwen3-8b"], top_p=0.95),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=sorted(PRESETS), default="qwen3-8b")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights of --arch (speed only); give this or --model, not both",
    )
    p.add_argument("--model", default=None, help="a real model (alias/path) instead of --random-weights")
    p.add_argument("--layers", type=int, default=None, help="override the layer count (smoke runs)")
    p.add_argument("--batch", default="1,4,8", help="comma-separated batch sizes")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--gen-len", type=int, default=1024)
    p.add_argument("--precisions", default="bf16,nvfp4-w4a16,nvfp4-w4a4")
    p.add_argument("--samplers", default="fixed,reset", help="comma-separated: fixed, reset")
    p.add_argument("--lm-head", choices=("bf16", "nvfp4"), default="bf16")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the decode forward (default: on for CUDA, off for CPU)",
    )
    p.add_argument(
        "--count-kernels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="profile one decode step per cell and count its GPU kernels (default: on for CUDA)",
    )
    p.add_argument("--allow-slow-cpu", action="store_true",
                   help=f"run random weights of more than {CPU_MAX_GB:g} GB on the CPU (refused "
                        "without it: a full-size model takes many minutes and that much memory)")
    p.add_argument("--json", type=Path, default=Path("bench_decode.json"), help="where to write results")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def copy_bandwidth_gbs(dev: torch.device, nbytes: int = 1 << 30) -> float:
    """(read + write bytes) / time of a device-to-device copy, median of 5."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        _sync(dev)
        t = time.perf_counter()
        dst.copy_(src)
        _sync(dev)
        times.append(time.perf_counter() - t)
    return 2 * nbytes / sorted(times[1:])[2] / 1e9


def weight_bytes(model: Transformer) -> int:
    """Bytes of every linear weight (incl. lm_head) a decode step reads (fused linears
    counted once, not with their parts)."""
    total = 0
    for m in model.decode_linears():
        if isinstance(m, Linear):
            if m.qweight is not None:
                total += m.qweight.nbytes
            else:
                total += m.weight.numel() * m.weight.element_size()
    return total


def kv_bytes(model: Transformer, batch: int, attn_len: int) -> int:
    a = model.args
    return 2 * a.n_layers * batch * a.n_kv_heads * a.head_dim * attn_len * model.dtype.itemsize


def _sampler(model: Transformer, batch: int, mode: str, dev: torch.device) -> BatchSampler:
    kw: dict[str, Any] = {}
    if "track_entropy" in inspect.signature(BatchSampler).parameters:
        kw["track_entropy"] = mode == "reset"  # the fixed baseline skips ReSET's entropy work
    return BatchSampler(batch, model.args.vocab_size, dev, **kw)


# Kernel-name patterns -> category of the per-step GPU-time breakdown (first match wins).
KERNEL_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nvfp4 gemv", ("gemv_kernel",)),
    ("nvfp4 act-quant", ("quant_act",)),
    # residual add + RMSNorm / SiLU-mul (engine.act_quant; W4A4: they also quantize)
    ("norm/silu producers", ("rmsnorm_quant", "silu_mul_quant")),
    ("nvfp4 dequant", ("dequant_kernel",)),
    ("attention", ("flash", "fmha", "attention", "attn", "efficient")),
    ("gemm (cuBLAS)", ("gemm", "nvjet", "xmma", "cutlass", "splitk")),
    ("inductor fused", ("triton_poi", "triton_red", "triton_per", "triton_tem")),
    ("triton (sampler)", ("_kernel",)),
)


def parse_batches(text: str) -> list[int]:
    """``"1,4,8"`` -> ``[1, 4, 8]``; each between 1 and the engine's ``MAX_BATCH``."""
    from resetfp4.engine.engine import MAX_BATCH

    try:
        batches = sorted({int(b) for b in text.split(",")})
    except ValueError:
        raise ValueError(f"--batch takes comma-separated integers such as 1,4,8, got {text!r}") from None
    bad = [b for b in batches if not 1 <= b <= MAX_BATCH]
    if bad:
        raise ValueError(f"--batch sizes must be between 1 and {MAX_BATCH} (the engine's limit), got {bad}")
    return batches


def kernel_category(name: str) -> str:
    low = name.lower()
    for cat, pats in KERNEL_CATEGORIES:
        if any(p in low for p in pats):
            return cat
    return "other"


def profile_step(fn: Any, dev: torch.device, reps: int = 3) -> dict[str, Any] | None:
    """Run ``fn()`` ``reps`` times under the profiler: GPU activities per call and the GPU
    time per call by :data:`KERNEL_CATEGORIES` (µs), plus the ten most expensive kernels.
    The sum of kernel times over the wall time of a graph replay shows the idle gaps."""
    if dev.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    _sync(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        _sync(dev)
    cats: dict[str, float] = {}
    per_kernel: dict[str, list[float]] = {}
    spans: list[tuple[float, float, str]] = []
    n = 0
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        n += 1
        tr = getattr(e, "time_range", None)
        if tr is not None:
            spans.append((tr.start, tr.end, kernel_category(e.name)))
        us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        cat = kernel_category(e.name)
        cats[cat] = cats.get(cat, 0.0) + us / reps
        per_kernel.setdefault(e.name, [0.0, 0])
        per_kernel[e.name][0] += us / reps
        per_kernel[e.name][1] += 1
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:10]
    exposed = critical_path(spans, reps)
    return {
        "activities_per_step": n / reps,
        "gpu_us_per_step": sum(cats.values()),
        "by_category_us": dict(sorted(cats.items(), key=lambda kv: -kv[1])),
        "exposed_by_category_us": exposed,
        "top_kernels": [
            {"name": k[:120], "us_per_step": v[0], "calls_per_step": v[1] / reps} for k, v in top
        ],
    }


def critical_path(spans: list[tuple[float, float, str]], reps: int = 1) -> dict[str, float]:
    """Exposed GPU time per category (µs per call) from ``(start, end, category)`` spans.

    With programmatic dependent launch a kernel starts (and is timed from) while the one
    before it still runs, so summed durations overcount. Here each kernel, in start order,
    is charged only the time its end adds past every earlier kernel's end; time when no
    kernel runs is charged to "idle (gaps)". The charges add up to the span of the calls."""
    out: dict[str, float] = {}
    horizon: float | None = None
    for start, end, cat in sorted(spans):
        if horizon is not None and start > horizon:
            out["idle (gaps)"] = out.get("idle (gaps)", 0.0) + (start - horizon) / reps
        lo = start if horizon is None else max(start, horizon)
        if end > lo:
            out[cat] = out.get(cat, 0.0) + (end - lo) / reps
        horizon = end if horizon is None else max(horizon, end)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def count_kernels(fn: Any, dev: torch.device) -> int | None:
    """GPU activities (kernels, memsets, copies) the profiler records while ``fn()`` runs."""
    prof = profile_step(fn, dev, reps=1)
    return None if prof is None else int(prof["activities_per_step"])


def bench_cell(
    model: Transformer,
    batch: int,
    mode: str,
    prompt_len: int,
    gen_len: int,
    dev: torch.device,
    compile: bool = False,
    kernels: bool = False,
) -> dict[str, Any]:
    """Prefill + ``gen_len - 1`` graph-replayed decode steps for one batch size and sampler."""
    runner = DecodeRunner(model, _sampler(model, batch, mode, dev), use_graphs=True, compile=compile)
    steps = list(range(1, gen_len))
    buckets = sorted({attn_bucket(prompt_len + s, model.max_seq_len) for s in steps})
    t = time.perf_counter()
    runner.capture(batch, buckets)
    capture_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.args.vocab_size, (batch, prompt_len), generator=g).tolist()
    configure_rows(runner.sampler, [SAMPLERS[mode]] * batch, batch)
    st = runner.prefill(prompts, batch)  # warm-up (lazy workspaces of the prefill path)
    k_eager = k_graph = prof = None
    if kernels:  # a few steps after the warm-up prefill; the timed prefill below resets the state
        a = buckets[0]
        k_eager = count_kernels(lambda: runner.step_eager(st, batch, a), dev)
        if runner.use_graphs:
            prof = profile_step(lambda: runner.decode(st, batch, a), dev)
            k_graph = None if prof is None else int(prof["activities_per_step"])
    configure_rows(runner.sampler, [SAMPLERS[mode]] * batch, batch)
    _sync(dev)
    t = time.perf_counter()
    st = runner.prefill(prompts, batch)
    _sync(dev)
    prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    kv = 0
    for s in steps:
        a = attn_bucket(prompt_len + s, model.max_seq_len)
        kv += kv_bytes(model, batch, a)
        runner.decode(st, batch, a)
    _sync(dev)
    decode_s = time.perf_counter() - t
    step_s = decode_s / len(steps)
    bytes_step = weight_bytes(model) + kv / len(steps)
    return {
        "batch": batch,
        "sampler": mode,
        "graphs": runner.use_graphs,
        "compiled": runner.compiled is not None,
        "kernels_per_step": k_eager,
        "kernels_per_step_graph_replay": k_graph,
        "prefill_ms": prefill_s * 1e3,
        "prefill_tokens_per_s": batch * prompt_len / prefill_s,
        "ms_per_step": step_s * 1e3,
        "tokens_per_s": batch / step_s,
        "bytes_per_step": bytes_step,
        "achieved_gbs": bytes_step / step_s / 1e9,
        "capture_s": capture_s,
        "profile_graph_step": prof,
    }


def environment(dev: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update(gpu=p.name, sms=p.multi_processor_count, cuda=torch.version.cuda)
    return env


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'precision':<12} {'sampler':<7} {'B':>3} {'tok/s':>9} {'ms/step':>8} {'prefill ms':>10} "
        f"{'GB/s':>7} {'%copy':>6} {'vs bf16':>8} {'kernels':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['precision']:<12} {r['sampler']:<7} {r['batch']:>3} {r['tokens_per_s']:>9.1f} "
            f"{r['ms_per_step']:>8.3f} {r['prefill_ms']:>10.1f} {r['achieved_gbs']:>7.0f} "
            f"{r['pct_copy_bw']:>5.0f}% {r.get('speedup_vs_bf16', float('nan')):>7.2f}x "
            f"{r.get('kernels_per_step') or '-':>7}"
        )
    return "\n".join(lines)


def _load_real(ref: str, precision: str, dev: torch.device, lm_head: str) -> Transformer:
    """A real model (alias / GGUF / HF / NVFP4 folder) for the sanity row."""
    from resetfp4.engine.build import build_model
    from resetfp4.engine.loader import load_tokenizer, read_source

    src = read_source(ref)
    return build_model(src, precision, dev, lm_head=lm_head, tokenizer=load_tokenizer(src))


def check_args(args: argparse.Namespace) -> None:
    """Refuse sizes that would benchmark nothing (0 layers) or divide by zero, before any work."""
    if args.random_weights == bool(args.model):
        raise ValueError(
            "pass --random-weights (speed does not depend on weight values) or --model PATH_OR_ALIAS "
            "(a real-model sanity row), not both"
        )
    if args.layers is not None:
        if args.model:
            raise ValueError("--layers applies to --random-weights only (a real model keeps its layers)")
        if args.layers < 1:
            raise ValueError(f"--layers must be >= 1 (a model needs a layer to benchmark), got {args.layers}")
    if args.prompt_len < 1:
        raise ValueError(f"--prompt-len must be >= 1 (tokens prefilled first), got {args.prompt_len}")
    if args.gen_len < 2:
        raise ValueError(
            f"--gen-len must be >= 2 (the first token comes from the prefill, the other gen-len - 1 are "
            f"the timed decode steps), got {args.gen_len}"
        )


# Random bf16 weights above this size are refused on the CPU unless --allow-slow-cpu.
CPU_MAX_GB = 4.0


def bf16_weight_gb(arch: ModelArgs) -> float:
    """GB of the bf16 weights of ``arch`` (embedding, untied head, q/k/v/o, MLP, norms)."""
    hd = arch.head_dim or arch.dim // arch.n_heads
    attn = arch.dim * hd * (2 * arch.n_heads + 2 * arch.n_kv_heads)
    per_layer = attn + 3 * arch.dim * arch.intermediate_size + 2 * arch.dim
    emb = arch.vocab_size * arch.dim * (1 if arch.tie_embeddings else 2)
    return 2 * (emb + arch.n_layers * per_layer) / 1e9


def check_cpu_size(arch: ModelArgs, allow: bool) -> None:
    """Refuse a full-size random-weight model on the CPU (minutes per cell, tens of GB) unless
    asked for."""
    gb = bf16_weight_gb(arch)
    if gb > CPU_MAX_GB and not allow:
        raise ValueError(
            f"{arch.n_layers} layers of random weights are {gb:.1f} GB in bf16: on the CPU that takes "
            f"many minutes and more memory than that. Use a CUDA GPU (--device cuda), a smoke run "
            f"(--layers 1 --prompt-len 8 --gen-len 3), or pass --allow-slow-cpu"
        )


def cpu_notice(args: argparse.Namespace, layers: int) -> str:
    """The note printed before a CPU run: it is a smoke run, and a full-size model is slow."""
    what = args.model or f"{args.arch}, {layers} layers"
    return (
        f"note: running the decode benchmark on the CPU ({what}): CPU numbers are a smoke test, not "
        "the GPU benchmark the docs report, and a full-size model takes many minutes here; use a CUDA "
        "GPU, or for a quick check e.g. --layers 1 --prompt-len 8 --gen-len 3"
    )


def run(args: argparse.Namespace) -> int:
    check_args(args)
    dev = resolve_device(args.device)
    compile = dev.type == "cuda" if args.compile is None else args.compile
    kernels = dev.type == "cuda" if args.count_kernels is None else args.count_kernels
    batches = parse_batches(args.batch)
    precisions = [p.strip() for p in args.precisions.split(",")]
    modes = [m.strip() for m in args.samplers.split(",")]
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; choose from {PRECISIONS}")
    for m in modes:
        if m not in SAMPLERS:
            raise ValueError(f"unknown sampler {m!r}; choose from {sorted(SAMPLERS)}")
    arch = (
        PRESETS[args.arch]
        if args.layers is None
        else PRESETS[args.arch].__class__(**{**PRESETS[args.arch].as_dict(), "n_layers": args.layers})
    )
    if dev.type == "cpu":
        if not args.model:
            check_cpu_size(arch, args.allow_slow_cpu)
        print(cpu_notice(args, arch.n_layers), file=sys.stderr, flush=True)
    copy_gbs = copy_bandwidth_gbs(dev, (1 << 30) if dev.type == "cuda" else (1 << 26))
    rows: list[dict[str, Any]] = []
    for prec in precisions:
        head = args.lm_head if prec.startswith("nvfp4") else "bf16"  # BF16 rows keep their head
        if args.model:
            model = _load_real(args.model, prec, dev, head)
            arch = model.args
        else:
            model = random_model(arch, prec, dev, lm_head=head)
        model.setup_cache(max(batches), args.prompt_len + args.gen_len)
        for mode in modes:
            for b in batches:
                r = bench_cell(model, b, mode, args.prompt_len, args.gen_len, dev, compile, kernels)
                r.update(precision=prec, lm_head=head, pct_copy_bw=100 * r["achieved_gbs"] / copy_gbs)
                rows.append(r)
                print(f"  {prec} {mode} B={b}: {r['tokens_per_s']:.1f} tok/s", flush=True)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    base = {(r["sampler"], r["batch"]): r["tokens_per_s"] for r in rows if r["precision"] == "bf16"}
    for r in rows:
        if (r["sampler"], r["batch"]) in base:
            r["speedup_vs_bf16"] = r["tokens_per_s"] / base[(r["sampler"], r["batch"])]
    out = {
        "benchmark": "decode",
        "arch": args.model or args.arch,
        "layers": arch.n_layers,
        "weights": "real" if args.model else "random",
        "prompt_len": args.prompt_len,
        "gen_len": args.gen_len,
        "lm_head": args.lm_head,
        "compile": compile,
        "copy_bandwidth_gbs": copy_gbs,
        "environment": environment(dev),
        "rows": rows,
    }
    print(
        f"decode benchmark: {args.model or args.arch} ({arch.n_layers} layers), "
        f"{'real weights' if args.model else 'RANDOM WEIGHTS (speed only)'}, "
        f"prompt {args.prompt_len}, gen {args.gen_len}, lm_head {args.lm_head}, compile {compile}, "
        f"{environment(dev)}"
    )
    print(f"copy bandwidth {copy_gbs:.0f} GB/s; JSON: {args.json}")
    print(_table(rows))
    breakdown = _breakdown(rows)
    if breakdown:
        print(breakdown)
    args.json.write_text(json.dumps(out, indent=2) + "\n")  # after the table: it is shown whatever happens
    return 0


def _breakdown(rows: list[dict[str, Any]]) -> str:
    """GPU time per decode step by kernel category (graph replay, profiled), per cell."""
    if not any(r.get("profile_graph_step") for r in rows):
        return ""  # no GPU profile (CPU runs)
    lines = ["GPU time per step by kernel category (µs; profiled graph replay):"]
    for r in rows:
        p = r.get("profile_graph_step")
        if not p:
            continue
        cats = ", ".join(f"{k} {v:.0f}" for k, v in p["by_category_us"].items())
        lines.append(
            f"  {r['precision']} {r['sampler']} B={r['batch']}: kernels {p['gpu_us_per_step']:.0f} of "
            f"{r['ms_per_step'] * 1e3:.0f} wall; {cats}"
        )
    exp = [r for r in rows if (r.get("profile_graph_step") or {}).get("exposed_by_category_us")]
    if exp:
        lines.append("Critical path per step (µs; each kernel charged only the time its end adds past the "
                     "kernels before it, see critical_path; idle includes the host gaps between replays):")
    for r in exp:
        cats = ", ".join(f"{k} {v:.0f}" for k, v in r["profile_graph_step"]["exposed_by_category_us"].items())
        lines.append(f"  {r['precision']} {r['sampler']} B={r['batch']}: {cats}")
    return "\n".join(lines)
