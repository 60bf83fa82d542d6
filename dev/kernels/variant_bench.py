"""A/B of GEMV build variants on one machine: ring depth and CTAs per SM (M <= 8 class).
(Session 3 also compared a shared-memory ring filled by cp.async, source at commit a3afee4.)

    python3 dev/kernels/variant_bench.py [--json out.json]

Builds csrc/ again under other extension names with -DRESETFP4_GEMV_DEPTH / _MIN_BLOCKS
(sm_90 only), points resetfp4.kernels.nvfp4_gemv at each build in turn (with the
plan's CTAS_PER_SM to match), checks it against the float64 reference, and times W4A16 on a
subset of the paper shapes, as `bench kernels`.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch.utils.cpp_extension import load

from resetfp4.bench import kernels as bk
from resetfp4.kernels import build
from resetfp4.kernels import nvfp4_gemv as kg

VARIANTS = {  # name: (depth, CTAs per SM); depth must be even (session 3's d3_b3 timing
    # predates that check)
    "d4_b3": (4, 3), "d6_b2": (6, 2), "d8_b2": (8, 2), "d2_b3": (2, 3),
}
SHAPES = ["8B.qkv", "8B.o", "8B.gate_up", "8B.down", "14B.o", "32B.gate_up"]


def build_variant(name: str, depth: int, blocks: int):
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    return load(name=f"resetfp4_v7_{name}", sources=[str(s) for s in build.SOURCES],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr",
                                   f"-DRESETFP4_GEMV_DEPTH={depth}",
                                   f"-DRESETFP4_GEMV_MIN_BLOCKS={blocks}"],
                extra_include_paths=[str(build.CSRC)], verbose=False)


def check(v: str) -> float:
    """Worst relative error of the variant against the float64 reference."""
    from resetfp4.nvfp4 import quantize
    from resetfp4.ops import prepare_weight

    worst = 0.0
    for n, k in ((4104, 4096), (200, 80), (1000, 12288)):
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
        raise SystemExit(f"{v}: wrong results (relative error {worst:.2e})")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", nargs="+", default=["d4_b3", "d6_b2"])
    args = ap.parse_args()
    copy = bk.copy_bandwidth_gbs()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    out = {"gpu": torch.cuda.get_device_name(0), "copy_gbs": copy, "variants": {}}
    for v in args.variants:
        depth, blocks = VARIANTS[v]
        ext = build_variant(v, depth, blocks)
        kg._ext = lambda ext=ext: ext
        kg.CTAS_PER_SM[8] = blocks
        worst = check(v)
        rows = []
        for name in SHAPES:
            n, k = bk.SHAPES[name]
            rows += bk._bench_shape(name, n, k, [1, 8], 10, copy, l2)
        out["variants"][v] = rows
        g1 = bk._geomean([r["w4a16_speedup"] for r in rows if r["M"] == 1])
        g8 = bk._geomean([r["w4a16_speedup"] for r in rows if r["M"] == 8])
        times = " ".join(f"{r['shape']}/{r['M']}:{r['w4a16_us']:.1f}" for r in rows)
        print(f"{v}: worst rel err {worst:.2e}; W4A16 geomean over {len(SHAPES)} shapes "
              f"M=1 {g1:.2f}x M=8 {g8:.2f}x | {times}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
