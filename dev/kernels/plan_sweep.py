"""Time the GEMV under several work splits (cluster size S, tiles per cluster R) per shape,
to check the plan cost model (resetfp4.kernels.nvfp4_gemv.plan) against the GPU.

    python3 dev/kernels/plan_sweep.py [--json out.json]

Prints, per shape and M: the chosen plan's µs, then every candidate's µs (same timing as
`resetfp4 bench kernels`: CUDA graph of launches over rotating weight copies, median).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from resetfp4.bench.kernels import SHAPES as BENCH_SHAPES
from resetfp4.bench.kernels import _time_us
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

SHAPES = {**BENCH_SHAPES, "0.5B.qkv": (1152, 896), "0.5B.down": (896, 4864),
          "8B.lm_head": (151936, 4096)}
DEFAULT_SHAPES = ["8B.qkv", "8B.o", "8B.gate_up", "8B.down", "14B.o", "32B.gate_up",
                  "0.5B.qkv", "0.5B.down"]


def candidates(n: int, k: int, sms: int, m_class: int, max_cluster: int) -> list[tuple[int, int]]:
    tiles, kc = kg.grid_dims(n, k)
    out = set()
    for s in (1, 2, 3, 4, 6, 8):
        if s > max_cluster:
            continue
        if s > kc:
            continue
        for cps in (1, 2, 3, 4):
            r = max(1, math.ceil(tiles / max(1, cps * sms // s)))
            out.add((s, min(r, tiles, kg.MAX_TILES_PER_CLUSTER[m_class])))
            if s == 1:  # and its neighbours (session 18)
                out.update((1, min(max(1, r + d), tiles, kg.MAX_TILES_PER_CLUSTER[m_class]))
                           for d in (-2, -1, 1, 2))
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES))
    ap.add_argument("--max-cluster", type=int, default=8)
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for name in args.shapes:
        n, k = SHAPES[name]
        w = quantize(torch.randn(n, k, device="cuda") * 0.02)
        copies = max(2, min(16, math.ceil(2 * l2 / (n * k * 9 // 16))))
        pws = [prepare_weight(w) for _ in range(copies)]
        for m in args.m:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            mc = 8 if m <= 8 else 16
            chosen = pws[0].plans[mc]
            res = {}
            for plan in candidates(n, k, sms, mc, args.max_cluster) + [chosen]:
                fns = [lambda pw=pw, p=plan, x=x, y=y: kg.nvfp4_gemv_out(
                    x, pw.packed, pw.global_scale, None, None, y, p[0], p[1], pw.exact_scales)
                    for pw in pws]
                res[plan] = _time_us(fns * 2, 10)
            best = min(res, key=res.get)
            rows.append({"shape": name, "N": n, "K": k, "M": m, "chosen": list(chosen),
                         "chosen_us": res[chosen], "best": list(best), "best_us": res[best],
                         "all": {f"{s}x{r}": t for (s, r), t in res.items()}})
            print(f"{name:12s} M={m:2d} chosen {chosen} {res[chosen]:7.2f} us | best {best} "
                  f"{res[best]:7.2f} us | " + " ".join(f"{s}x{r}:{t:.1f}" for (s, r), t in
                                                        sorted(res.items())), flush=True)
        del pws
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(0), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
