"""A/B of GEMV build variants on one machine: ring depth and CTAs per SM (M <= 8 class).

    python3 dev/kernels/variant_bench.py [--json out.json]

Builds csrc/ again under other extension names with -DRESETFP4_GEMV_DEPTH / _MIN_BLOCKS
(sm_90 only), points resetfp4.kernels.nvfp4_gemv at each build in turn (with the plan's
CTAS_PER_SM to match), and times W4A16 on a subset of the paper shapes, as `bench kernels`.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch.utils.cpp_extension import load

from resetfp4.bench import kernels as bk
from resetfp4.kernels import build, nvfp4_gemv as kg

VARIANTS = {"d4_b3": (4, 3), "d6_b2": (6, 2), "d8_b2": (8, 2), "d3_b3": (3, 3)}
SHAPES = ["8B.qkv", "8B.o", "8B.gate_up", "8B.down", "14B.o", "32B.gate_up"]


def build_variant(name: str, depth: int, blocks: int):
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    return load(name=f"resetfp4_v7_{name}", sources=[str(s) for s in build.SOURCES],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr",
                                   f"-DRESETFP4_GEMV_DEPTH={depth}",
                                   f"-DRESETFP4_GEMV_MIN_BLOCKS={blocks}"],
                extra_include_paths=[str(build.CSRC)], verbose=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
    copy = bk.copy_bandwidth_gbs()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    out = {"gpu": torch.cuda.get_device_name(0), "copy_gbs": copy, "variants": {}}
    for v in args.variants:
        depth, blocks = VARIANTS[v]
        ext = build_variant(v, depth, blocks)
        kg._ext = lambda ext=ext: ext
        kg.CTAS_PER_SM[8] = blocks
        rows = []
        for name in SHAPES:
            n, k = bk.SHAPES[name]
            rows += bk._bench_shape(name, n, k, [1, 8], 10, copy, l2)
        out["variants"][v] = rows
        g1 = bk._geomean([r["w4a16_speedup"] for r in rows if r["M"] == 1])
        g8 = bk._geomean([r["w4a16_speedup"] for r in rows if r["M"] == 8])
        print(f"{v}: W4A16 geomean over {len(SHAPES)} shapes M=1 {g1:.2f}x M=8 {g8:.2f}x | "
              + " ".join(f"{r['shape']}/{r['M']}:{r['w4a16_us']:.1f}" for r in rows), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
