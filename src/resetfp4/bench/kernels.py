"""``resetfp4 bench kernels``: NVFP4 small-M kernels vs BF16 ``F.linear`` on paper shapes.

Timing: CUDA events around a batch of launches that rotate over enough weight copies to
exceed 2x L2 (so each launch streams its weight from HBM), median over batches, in µs per
launch. Bandwidth counts weight + scale bytes (0.5625 B/weight) for NVFP4 and 2 B/weight
for BF16; ``%copy`` is against a device-to-device copy measured in the same run.

Columns: ``w4a16`` (BF16 activations), ``w4a4s`` (NVFP4 activations with a static,
calibrated ``input_scale``: the deployment path; ``amax(|x|) / 2688`` of the benchmark's x,
computed once before timing; whatever path ``nvfp4_linear`` dispatches to) and ``w4a4``
(dynamic scale: an amax + quantization launch before every GEMV).

**Engine form** (``eng_*`` columns, M <= 16; :func:`_engine_form`): W4A4 against W4A16 as the
decode engine runs a layer, where no quantizer launch exists. The kernel that produces a
linear's input quantizes it in the same pass and the GEMV reads the quantized values with
the global scale in its epilogue, so the activation quantization is fused (the issue allows
"fused or in one tiny kernel"). Per layer family, as the Qwen3 step runs it:

- ``qkv`` (and the smoke shapes): the residual add + RMSNorm producer, then the GEMV. W4A16:
  the producer without quantization; W4A4: the producer quantizing with the static scale,
  the GEMV with that scale in its epilogue.
- ``gate_up``: the same producer, then the SwiGLU GEMV; in W4A4 its epilogue also quantizes
  ``h`` for down, so down's quantization is counted here.
- ``o``, ``down``: the GEMV alone, on activations that arrive quantized. o_proj's input comes
  from the attention kernel, whose fused quantization is not in this column (the decode
  benchmark's W4A4 rows count it: whole steps).

Before timing, the GEMV on the producer's quantized output is checked against the op path
on the same activations (same codes, same GEMV); a mismatch stops the benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {  # name: (N, K)
    "8B.qkv": (6144, 4096), "8B.o": (4096, 4096), "8B.gate_up": (24576, 4096),
    "8B.down": (4096, 12288), "14B.qkv": (7168, 5120), "14B.o": (5120, 5120),
    "14B.gate_up": (17408, 5120), "14B.down": (5120, 17408), "32B.qkv": (10240, 5120),
    "32B.o": (5120, 8192), "32B.gate_up": (25600, 5120), "32B.down": (5120, 25600),
}
SMOKE_SHAPES = {"smoke.a": (256, 512), "smoke.b": (72, 1024)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--m", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="batch rows")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    p.add_argument("--smoke", action="store_true", help="two tiny shapes, few repeats")
    p.add_argument("--batches", type=int, default=15, help="timed batches (median)")
    p.add_argument("--shapes", nargs="+", default=None, metavar="NAME",
                   help=f"subset of the layer shapes (default: all of {', '.join(SHAPES)})")


def _time_us(fns: list, batches: int, graph: bool = True) -> float:
    """Median over batches of (event time of one pass over fns) / len(fns).

    With ``graph`` the pass is captured once in a CUDA graph and replayed, so Python
    dispatch cost stays out of the number (as in a graph-captured decode step).
    """
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns[:3]:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    run_pass = lambda: [f() for f in fns]
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            run_pass()
        run_pass = g.replay
    run_pass()
    out = []
    for _ in range(batches):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run_pass()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) * 1e3 / len(fns))
    return statistics.median(out)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB: (read + write bytes) / time."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = _time_us([lambda: dst.copy_(src)] * 5, 10, graph=False)
    return 2 * src.numel() / (us * 1e-6) / 1e9


def environment() -> dict:
    p = torch.cuda.get_device_properties(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    try:
        clocks = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,driver_version",
                                 "--format=csv,noheader"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        clocks = "unknown"
    return {"gpu": p.name, "sms": p.multi_processor_count, "clocks_sm_mem_driver": clocks,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "commit": commit,
            "kernel_sources_sha256": kernel_sources_sha256()}


def kernel_sources_sha256() -> str:
    """sha256 over the CUDA sources the extension is built from (identifies the benchmarked
    kernel code even where a copied checkout's git metadata is stale)."""
    import hashlib

    from resetfp4.kernels import build

    h = hashlib.sha256()
    for f in (*build.SOURCES, *build.HEADERS):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _bench_shape(name: str, n: int, k: int, ms: list[int], batches: int, copy_gbs: float,
                 l2: int) -> list[dict]:
    from resetfp4.nvfp4 import quantize
    from resetfp4.ops import prepare_weight
    from resetfp4.sampling import triton_available

    q_bytes = n * k * 9 // 16
    copies = max(2, min(16, math.ceil(2 * l2 / q_bytes)))
    bcopies = max(2, min(8, math.ceil(2 * l2 / (2 * n * k))))
    w = quantize(torch.randn(n, k, device="cuda") * 0.02)
    pws = [prepare_weight(w) for _ in range(copies)]
    # W4A4 buffers of every copy now: created lazily, the copies past _time_us's warm-up would
    # make theirs inside the graph capture, and their fill kernels would replay with every
    # pass (inflating the W4A4 time at the first M timed; session 15).
    for pw in pws:
        pw.act_workspace(torch.bfloat16)
    wbs = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(bcopies)]
    engine = triton_available()  # the engine-form columns run the engine's Triton producers
    rows = []
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        t_bf = _time_us([lambda wb=wb, x=x: F.linear(x, wb) for wb in wbs] * 4, batches)
        r = {"shape": name, "N": n, "K": k, "M": m, "bf16_us": t_bf,
             "weight_scale_bytes": q_bytes}
        s = (x.float().abs().amax() / 2688.0).reshape(1)  # a calibrated static input_scale
        for tag, act, scale in (("w4a16", "bf16", None), ("w4a4s", "fp4", s),
                                ("w4a4", "fp4", None)):
            t = _time_us([lambda pw=pw, x=x, a=act, s=scale, o=out: pw(x, act=a, input_scale=s,
                                                                       out=o) for pw in pws] * 2,
                         batches)
            r[f"{tag}_us"] = t
            r[f"{tag}_gbs"] = q_bytes / (t * 1e-6) / 1e9
            r[f"{tag}_pct_copy"] = 100 * r[f"{tag}_gbs"] / copy_gbs
            r[f"{tag}_speedup"] = t_bf / t
        if engine and m <= 16:
            r.update(_engine_form(name, n, k, m, pws, batches))
        rows.append(r)
    del pws, wbs
    torch.cuda.empty_cache()
    return rows


def _engine_form(name: str, n: int, k: int, m: int, pws: list, batches: int) -> dict:
    """W4A16 and W4A4 (static scale) as the decode engine runs this shape's layer family
    (module docstring): ``eng_w4a16_us``, ``eng_w4a4_us``, ``eng_ratio`` and the pre-timing
    check's relative errors."""
    from resetfp4.engine import act_quant_kernels as kq
    from resetfp4.kernels import nvfp4_gemv as kg

    family = name.rpartition(".")[2]
    family = family if family in ("qkv", "o", "gate_up", "down") else "qkv"
    dt = torch.bfloat16
    h = torch.randn(m, k, device="cuda", dtype=dt)  # the residual stream
    d = torch.randn(m, k, device="cuda", dtype=dt) * 0.1  # the layer output added to it
    nw = (1.0 + 0.1 * torch.randn(k, device="cuda")).to(dt)  # RMSNorm weight
    x = torch.empty_like(h)  # the producer's new residual
    y = torch.empty_like(h)  # its normalized output, unquantized (what W4A16 reads)
    yq = torch.empty_like(h)  # the same quantized: e2m1 * block scale (what W4A4 reads)
    xq = torch.empty_like(h)  # what the timed producer writes
    out = torch.empty(m, n, device="cuda", dtype=dt)
    hbuf = torch.empty(m, n // 2, device="cuda", dtype=dt)
    kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, None, x, y)
    gs = (y.float().abs().amax() / 2688.0).reshape(1)  # a calibrated static input_scale
    g_q = gs.clone()  # gate/up: a stand-in input_scale of down, quantized in the epilogue
    kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, gs, x, yq)
    cls = 8 if m <= 8 else 16
    s, r = pws[0].plans[cls]

    def gemv(pw, inp: torch.Tensor, quant: bool) -> None:
        kg.nvfp4_gemv_out(inp, pw.packed, pw.global_scale, gs if quant else None, None, out, s, r,
                          pw.exact_scales)

    def layer(pw, quant: bool) -> None:
        if family in ("o", "down"):  # the input arrives quantized (attention / SwiGLU epilogue)
            gemv(pw, yq if quant else y, quant)
            return
        kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, gs if quant else None, x, xq)
        if family == "gate_up":  # rows not interleaved: the timing does not depend on it
            kg.nvfp4_gemv_swiglu_out(xq, pw.packed, pw.global_scale, gs if quant else None,
                                     g_q if quant else None, None, hbuf, pw.swiglu_tiles[cls],
                                     pw.exact_scales)
        else:
            gemv(pw, xq, quant)

    res = {"eng_family": family}
    for tag, act, inp, scale in (("w4a4", "fp4", yq, gs), ("w4a16", "bf16", y, None)):
        want = pws[0](y.clone(), act=act, input_scale=scale).float()
        gemv(pws[0], inp, scale is not None)
        err = ((out.float() - want).norm() / want.norm().clamp_min(1e-30)).item()
        if not err < 1e-3:
            raise RuntimeError(f"bench kernels: {name} M={m}: the engine-form {tag} GEMV differs from "
                               f"nvfp4_linear on the same activations (relative error {err:.2e}); "
                               "the producer's quantization and the op's quantizer disagree: a bug")
        res[f"eng_check_rel_err_{tag}"] = err
    for tag, quant in (("w4a16", False), ("w4a4", True)):
        res[f"eng_{tag}_us"] = _time_us([lambda pw=pw, q=quant: layer(pw, q) for pw in pws] * 2, batches)
    res["eng_ratio"] = res["eng_w4a4_us"] / res["eng_w4a16_us"]
    return res


def _geomean(v: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in v) / len(v))


def _print_table(rows: list[dict], copy_gbs: float) -> None:
    print(f"copy bandwidth {copy_gbs:.0f} GB/s")
    print("w4a4s: static input_scale (quantizer launch + GEMV); w4a4d: dynamic scale; eng*: "
          "the engine's form, producer + GEMV with the static scale's quantization fused "
          "(docs/bench_kernels.md; M <= 16 and Triton installed, else '-')")
    print(f"{'shape':12} {'M':>2} {'bf16us':>7} {'w4a16us':>8} {'GB/s':>6} {'%copy':>5} "
          f"{'xBF16':>5} {'w4a4sus':>7} {'xBF16':>5} {'s/a16':>6} {'w4a4dus':>7} {'d/a16':>6} "
          f"{'eng16us':>7} {'eng4us':>7} {'e4/e16':>6}")
    for r in rows:
        print(f"{r['shape']:12} {r['M']:>2} {r['bf16_us']:7.1f} {r['w4a16_us']:8.1f} "
              f"{r['w4a16_gbs']:6.0f} {r['w4a16_pct_copy']:5.1f} {r['w4a16_speedup']:5.2f} "
              f"{r['w4a4s_us']:7.1f} {r['w4a4s_speedup']:5.2f} "
              f"{r['w4a4s_us'] / r['w4a16_us']:6.3f} {r['w4a4_us']:7.1f} "
              f"{r['w4a4_us'] / r['w4a16_us']:6.3f} "
              + (f"{r['eng_w4a16_us']:7.1f} {r['eng_w4a4_us']:7.1f} {r['eng_ratio']:6.3f}"
                 if "eng_ratio" in r else f"{'-':>7} {'-':>7} {'-':>6}"))
    for m in sorted({r["M"] for r in rows}):
        sel = [r for r in rows if r["M"] == m]
        g = lambda key, sel=sel: _geomean([r[key] for r in sel])  # noqa: E731
        print(f"M={m}: geomean speedup W4A16 {g('w4a16_speedup'):.2f}x"
              f"  W4A4 static {g('w4a4s_speedup'):.2f}x  W4A4 dynamic {g('w4a4_speedup'):.2f}x"
              f"  time/W4A16: static "
              f"{_geomean([r['w4a4s_us'] / r['w4a16_us'] for r in sel]):.3f}"
              f" dynamic {_geomean([r['w4a4_us'] / r['w4a16_us'] for r in sel]):.3f}"
              + (f" engine form {_geomean([r['eng_ratio'] for r in sel]):.3f}"
                 if all("eng_ratio" in r for r in sel) else ""))


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        raise RuntimeError("bench kernels needs a CUDA GPU (torch.cuda.is_available() is False)")
    env = environment()
    print("env:", json.dumps(env))
    copy_gbs = copy_bandwidth_gbs()
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    if args.shapes:
        unknown = [s for s in args.shapes if s not in shapes]
        if unknown:
            raise ValueError(f"unknown shape(s) {unknown}; choose from {', '.join(shapes)}")
        shapes = {s: shapes[s] for s in args.shapes}
    batches = 3 if args.smoke else args.batches
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for name, (n, k) in shapes.items():
        rows += _bench_shape(name, n, k, args.m, batches, copy_gbs, l2)
    _print_table(rows, copy_gbs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "copy_gbs": copy_gbs, "rows": rows}, indent=1))
    return 0
