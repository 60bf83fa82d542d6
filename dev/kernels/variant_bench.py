"""A/B of GEMV build variants on one machine (sm_90 builds, M <= 8 and M <= 16 classes).

    python3 dev/kernels/variant_bench.py --variants base lean pf1 [--src-base DIR] [--json F]

A variant is a source directory (default: the package's csrc; ``--src-base`` names another,
e.g. an older commit's csrc for a baseline in the same run) plus -D build knobs of
csrc/nvfp4_gemv.cu (RESETFP4_GEMV_DEPTH / _BODY / _MIN_BLOCKS / _PREFETCH / _WARPS /
_MAXNREG). All variants are compiled first, in parallel processes; then each is checked
against the float64 reference and W4A16 is timed as `bench kernels` does (CUDA graph of
launches rotating over weight copies), with the plan's CTAS_PER_SM matched to the variant's
occupancy. BF16 F.linear is timed once per shape in the same run for the speedup columns.
Since session 14 every variant also runs the 112-register wide build where its plan's grid
has at most 2 CTAs per SM (8B.o, 8B.down on 132 SMs); set RESETFP4_GEMV_WIDE=0 in the
environment to compare builds without it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from resetfp4.bench import kernels as bk
from resetfp4.kernels import build
from resetfp4.kernels import nvfp4_gemv as kg

# name: (source: "pkg" | "base", defines, CTAs per SM for M <= 8, for M <= 16)
def _v(depth: int, body: int, pf: int, blocks: int) -> tuple:
    return ("pkg", {"RESETFP4_GEMV_DEPTH": depth, "RESETFP4_GEMV_BODY": body,
                    "RESETFP4_GEMV_PREFETCH": pf, "RESETFP4_GEMV_MIN_BLOCKS": blocks}, blocks, 2)


# name: (source: "pkg" | "base", defines, CTAs per SM for M <= 8, for M <= 16); "dDbBpPcC":
# general-path ring depth D, aligned-path body B units, L2 prefetch P bodies ahead, C CTAs
# per SM (M <= 8).
VARIANTS = {"base": ("base", {}, 3, 2)}
VARIANTS.update({f"d{d}b{b}p{p}c{c}": _v(d, b, p, c) for d in (2, 4, 6, 8) for b in (2, 4, 8)
                 for p in (0, 1, 2, 3, 4) for c in (2, 3, 4)})
# the M <= 16 class with 2-unit bodies (the default since session 4) or 4
VARIANTS["m16b2"] = ("pkg", {"RESETFP4_GEMV_BODY16": 2}, 3, 2)
VARIANTS["m16b4"] = ("pkg", {"RESETFP4_GEMV_BODY16": 4}, 3, 2)
# session 15: fewer warps per CTA, more registers per thread at the same CTAs per SM
# (wWcC[rR]: the default build with W warps, C CTAs per SM for M <= 8, optional register cap R)
def _w(warps: int, blocks: int, maxnreg: int | None = None) -> tuple:
    src, defines, _, m16 = _v(4, 4, 1, blocks)
    extra = {"RESETFP4_GEMV_WARPS": warps} | ({"RESETFP4_GEMV_MAXNREG": maxnreg} if maxnreg else {})
    return (src, defines | extra, blocks, m16)


VARIANTS.update({"w6c3": _w(6, 3), "w6c3r104": _w(6, 3, 104), "w4c4": _w(4, 4),
                 "w4c4r112": _w(4, 4, 112), "w4c6": _w(4, 6)})
SHAPES = ["8B.qkv", "8B.o", "8B.gate_up", "8B.down", "14B.o", "32B.gate_up"]


def build_variant(name: str, src_base: Path | None, verbose: bool = False):
    from torch.utils.cpp_extension import load

    src, defines, _, _ = VARIANTS[name]
    csrc = build.CSRC if src == "pkg" else src_base
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    return load(name=f"resetfp4_var_{name}",
                sources=[str(csrc / s.name) for s in build.SOURCES],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr",
                                   *[f"-D{k}={v}" for k, v in defines.items()]],
                extra_include_paths=[str(csrc)], verbose=verbose)


def check(name: str) -> float:
    """Worst relative error of the variant against the float64 reference."""
    from resetfp4.nvfp4 import quantize
    from resetfp4.ops import prepare_weight

    worst = 0.0
    for n, k in ((4104, 4096), (200, 80), (1000, 12288), (24576, 256)):
        w = quantize(torch.randn(n, k, device="cuda"))
        pw = prepare_weight(w)
        wd = w.dequantize(torch.float64)
        for m in (1, 3, 8, 9, 16):
            for dt in (torch.bfloat16, torch.float16):
                x = torch.randn(m, k, device="cuda").to(dt)
                y = pw(x).double()
                ref = x.double() @ wd.T
                worst = max(worst, ((y - ref).norm() / ref.norm()).item())
    if not worst < 1e-2:
        raise SystemExit(f"{name}: wrong results (relative error {worst:.2e})")
    return worst


def time_w4a16(n: int, k: int, ms: list[int], l2: int) -> dict[int, float]:
    from resetfp4.nvfp4 import quantize
    from resetfp4.ops import prepare_weight

    q_bytes = n * k * 9 // 16
    copies = max(2, min(16, math.ceil(2 * l2 / q_bytes)))
    w = quantize(torch.randn(n, k, device="cuda") * 0.02)
    pws = [prepare_weight(w) for _ in range(copies)]
    out = {}
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        out[m] = bk._time_us([lambda pw=pw: pw(x, out=y) for pw in pws] * 2, 10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", nargs="+", default=["d4b4p1c3"])
    ap.add_argument("--src-base", type=Path, default=None, help="csrc dir of variant 'base'")
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--shapes", nargs="+", default=SHAPES)
    ap.add_argument("--build-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build_variant(args.build_only, args.src_base)
        return
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: dDbBpPcC (D in 2,4,6,8; B in 2,4,8; "
                         f"P in 0..4; C in 2,3,4), {[k for k in VARIANTS if k[0] != 'd']}")
    procs = [subprocess.Popen([sys.executable, __file__, "--build-only", v]
                              + (["--src-base", str(args.src_base)] if args.src_base else []))
             for v in args.variants]
    for p in procs:
        p.wait()
    copy = bk.copy_bandwidth_gbs()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    out = {"gpu": torch.cuda.get_device_name(0), "copy_gbs": copy, "bf16_us": {}, "variants": {}}
    for name in args.shapes:
        n, k = bk.SHAPES[name]
        wbs = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
        for m in args.m:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            out["bf16_us"][f"{name}/{m}"] = bk._time_us(
                [lambda wb=wb, x=x: F.linear(x, wb) for wb in wbs] * 4, 10)
        del wbs
    print(f"{out['gpu']}, copy {copy:.0f} GB/s", flush=True)
    for v in args.variants:
        ext = build_variant(v, args.src_base)
        kg._ext = lambda ext=ext: ext
        kg.CTAS_PER_SM[8], kg.CTAS_PER_SM[16] = VARIANTS[v][2], VARIANTS[v][3]
        defines = VARIANTS[v][1]
        b8 = defines.get("RESETFP4_GEMV_BODY", 4)
        kg.ALIGNED_BODY[8], kg.ALIGNED_BODY[16] = b8, defines.get("RESETFP4_GEMV_BODY16", 2)
        worst = check(v)
        rows = {}
        for name in args.shapes:
            n, k = bk.SHAPES[name]
            for m, t in time_w4a16(n, k, args.m, l2).items():
                rows[f"{name}/{m}"] = t
        out["variants"][v] = rows
        parts = []
        for m in args.m:
            sp = [out["bf16_us"][f"{s}/{m}"] / rows[f"{s}/{m}"] for s in args.shapes]
            parts.append(f"M={m} {bk._geomean(sp):.2f}x")
        times = " ".join(f"{key}:{t:.1f}" for key, t in rows.items())
        print(f"{v:12s} err {worst:.1e} | {' '.join(parts)} | {times}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
