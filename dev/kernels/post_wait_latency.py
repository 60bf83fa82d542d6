"""How long an NVFP4 GEMV keeps the decode step waiting after its input is ready.

In the graphed decode step every GEMV is launched with programmatic dependent launch: its
CTAs start while the kernel before it runs, stream their first weights, then wait
(``griddepcontrol.wait``). What the step pays for a GEMV is the time from its predecessor's
end to the moment the next kernel's wait is released. The session-10 batch-1 timeline put
that at ~5.9 µs for o_proj (3.2 µs of bytes) and ~4.8 µs for qkv (4.7 µs of bytes, half of
them preloaded): latency chains, not DRAM time (dev/engine/NOTES.md, session 10).

This script isolates that number per shape. One CUDA graph holds R repetitions of

    spin (one program: triggers its dependents, then busy-waits SPIN_US on %globaltimer)
      -> GEMV (PDL: preloads during the spin, waits for it)
      -> stamp (PDL: waits, then writes %globaltimer)

and a second graph the same without the GEMV. The difference of the two per-repetition
times (CUDA events over the whole replay) is the GEMV's post-wait cost in the step's
situation; ``cold`` is the GEMV after a plain launch (no preload window), as ``bench
kernels`` times it. The weights rotate over enough copies to miss L2, as in the step.
The globaltimer column (stamp - spin end, median) is a cross-check with ~1 µs granularity.

    PYTHONPATH=src python3 dev/kernels/post_wait_latency.py --json $OUT/post_wait.json

Build variants: run it once per tree / -D knob set (see variant_bench.py) and compare.
Status: written at the end of session 10 with no device time left; not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import triton
import triton.language as tl

from resetfp4.bench.kernels import copy_bandwidth_gbs
from resetfp4.engine.act_quant_kernels import launch_opts, pdl_trigger, pdl_wait
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

L2_BYTES = 50 * 2**20  # H100 L2; the rotation covers 3x this

# name: (N, K, swiglu) for Qwen3-8B
SHAPES = {
    "qkv": (6144, 4096, False),
    "o": (4096, 4096, False),
    "gate_up": (24576, 4096, True),
    "down": (4096, 12288, False),
    "head": (151936, 4096, False),
}


@triton.jit
def _now():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                      is_pure=False, pack=1)


@triton.jit
def _spin_kernel(t_ptr, SPIN_NS, PDL: tl.constexpr):
    pdl_trigger(PDL)  # the GEMV after it may launch now and stream its first weights
    t0 = _now()
    t = t0
    while t - t0 < SPIN_NS:
        t = _now()
    tl.store(t_ptr, t)


@triton.jit
def _stamp_kernel(t_ptr, PDL: tl.constexpr):
    pdl_trigger(PDL)
    pdl_wait(PDL)  # released when the kernel before it (the GEMV, or the spin) has finished
    tl.store(t_ptr, _now())


def _random_weight(n: int, k: int, swiglu: bool, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    if not swiglu:
        return prepare_weight(quantize(torch.randn(n, k, device="cuda", generator=g)))
    gate = quantize(torch.randn(n // 2, k, device="cuda", generator=g))
    up = quantize(torch.randn(n // 2, k, device="cuda", generator=g), global_scale=gate.global_scale)
    return prepare_weight(kg.interleave_gate_up(gate, up))


def _time_graph(launch, reps: int, replays: int) -> float:
    """µs per repetition of ``launch(i)``, i < reps, captured in one graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(2):
            launch(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(reps):
            launch(i)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def rotated_gemv(name: str, m: int, reps: int):
    """GEMV of shape ``name`` at ``m`` rows over enough weight copies to miss L2.

    Returns ``(weights, x, gemv, (S, R))``: ``gemv(i)`` launches on copy ``i % len(weights)``
    with that copy's output buffer; ``(S, R)`` is the plan it runs (S = 1 for SwiGLU)."""
    n, k, swiglu = SHAPES[name]
    w0 = _random_weight(n, k, swiglu, 0)
    copies = max(1, min(reps, math.ceil(3 * L2_BYTES / w0.packed.numel())))
    ws = [w0] + [_random_weight(n, k, swiglu, i) for i in range(1, copies)]
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    cls = 8 if m <= 8 else 16
    if swiglu:
        s_, r = 1, w0.swiglu_tiles[cls]
        outs = [torch.empty(m, n // 2, dtype=x.dtype, device="cuda") for _ in ws]

        def gemv(i: int) -> None:
            w = ws[i % copies]
            kg.nvfp4_gemv_swiglu_out(x, w.packed, w.global_scale, None, None, None, outs[i % copies], r,
                                     w.exact_scales)
    else:
        s_, r = w0.plans[cls]
        outs = [torch.empty(m, n, dtype=x.dtype, device="cuda") for _ in ws]

        def gemv(i: int) -> None:
            w = ws[i % copies]
            kg.nvfp4_gemv_out(x, w.packed, w.global_scale, None, None, outs[i % copies], s_, r,
                              w.exact_scales)
    return ws, x, gemv, (s_, r)


def measure(name: str, m: int, spin_us: float, reps: int, replays: int) -> dict:
    n, k, swiglu = SHAPES[name]
    ws, x, gemv, _ = rotated_gemv(name, m, reps)
    nbytes, copies = ws[0].packed.numel(), len(ws)

    stamps = torch.zeros(reps, 2, dtype=torch.int64, device="cuda")
    opts = launch_opts(x)
    plain = {"PDL": opts["PDL"]}  # the spin itself starts after the previous stamp
    spin_ns = int(spin_us * 1e3)

    def spin(i: int) -> None:
        _spin_kernel[(1,)](stamps[i, 0:], spin_ns, num_warps=1, **plain)

    def stamp(i: int) -> None:
        _stamp_kernel[(1,)](stamps[i, 1:], num_warps=1, **opts)

    with_gemv = _time_graph(lambda i: (spin(i), gemv(i), stamp(i)), reps, replays)
    delta_ns = (stamps[:, 1] - stamps[:, 0]).float().median().item()
    without = _time_graph(lambda i: (spin(i), stamp(i)), reps, replays)
    base_ns = (stamps[:, 1] - stamps[:, 0]).float().median().item()
    cold = _time_graph(lambda i: (gemv(i), stamp(i)), reps, replays) - _time_graph(stamp, reps, replays)
    return {"shape": name, "n": n, "k": k, "m": m, "swiglu": swiglu, "bytes": nbytes, "copies": copies,
            "post_wait_us": with_gemv - without, "cold_us": cold,
            "globaltimer_post_wait_us": (delta_ns - base_ns) / 1e3,
            "spin_us": spin_us, "per_rep_with_us": with_gemv, "per_rep_without_us": without}


def write_rows(path: Path, copy_gbs: float, rows: list[dict]) -> None:
    """The JSON of this tool and l2_warm.py: the device, its copy bandwidth, the rows."""
    path.write_text(json.dumps({"device": torch.cuda.get_device_name(), "copy_gbs": copy_gbs,
                                "rows": rows}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--m", default="1,8")
    ap.add_argument("--spin-us", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=64, help="repetitions per graph")
    ap.add_argument("--replays", type=int, default=15)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    copy_gbs = copy_bandwidth_gbs()
    rows = []
    print(f"{torch.cuda.get_device_name()}, copy {copy_gbs:.0f} GB/s, spin {a.spin_us} us")
    print(f"{'shape':8} {'M':>2} {'MB':>7} {'bytes us':>8} {'post-wait':>9} {'cold':>7} {'gtimer':>7}")
    for name in a.shapes.split(","):
        for m in (int(v) for v in a.m.split(",")):
            r = measure(name, m, a.spin_us, a.reps, a.replays)
            r["bytes_us"] = r["bytes"] / copy_gbs / 1e3
            rows.append(r)
            print(f"{name:8} {m:2d} {r['bytes'] / 1e6:7.1f} {r['bytes_us']:8.2f} {r['post_wait_us']:9.2f} "
                  f"{r['cold_us']:7.2f} {r['globaltimer_post_wait_us']:7.2f}", flush=True)
    if a.json:
        write_rows(a.json, copy_gbs, rows)


if __name__ == "__main__":
    main()
