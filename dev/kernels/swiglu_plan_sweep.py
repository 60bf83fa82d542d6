"""Tiles per CTA of the SwiGLU GEMV: every even R against the plan's choice (session 18).

    PYTHONPATH=src python3 dev/kernels/swiglu_plan_sweep.py [--json F] [--batches 20]

For each interleaved gate/up weight [2I, K] below and each M (default 1 and 8), times
``nvfp4_gemv_swiglu_out`` for each even tiles-per-CTA R (a CUDA graph of launches rotating
over weight copies, as `bench kernels` times), and the plain GEMV of the same weight with its
own plan for reference. Prints, per shape and M, the µs of every R and the R that
``swiglu_plan`` picks. Random weights: the timing does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from resetfp4.bench import kernels as bk
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

SHAPES = {  # name: (2I, K): the fused gate/up of each model, and the bench's half-size rows
    "8B.gu": (2 * 12288, 4096),
    "14B.gu": (2 * 17408, 5120),
    "32B.gu": (2 * 25600, 5120),
    "bench14B.gate_up": (17408, 5120),
    "bench32B.gate_up": (25600, 5120),
    "qwen1.5B.gu": (2 * 8960, 1536),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    l2 = props.L2_cache_size
    rows = []
    print(f"{props.name}, {sms} SMs")
    for name in args.shapes:
        n, k = SHAPES[name]
        tiles, _ = kg.grid_dims(n, k)
        q_bytes = n * k * 9 // 16
        copies = max(2, min(16, math.ceil(2 * l2 / q_bytes)))
        w = quantize(torch.randn(n, k, device="cuda") * 0.02)
        pws = [prepare_weight(w) for _ in range(copies)]
        for m in args.m:
            cls = 8 if m <= 8 else 16
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            h = torch.empty(m, n // 2, device="cuda", dtype=torch.bfloat16)
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            s, r = pws[0].plans[cls]
            plain = bk._time_us([lambda pw=pw, x=x, out=out, s=s, r=r: kg.nvfp4_gemv_out(
                x, pw.packed, pw.global_scale, None, None, out, s, r, pw.exact_scales)
                for pw in pws] * 2, args.batches)
            res = {}
            for rr in range(2, min(tiles, 24) + 1, 2):
                res[rr] = bk._time_us([lambda pw=pw, rr=rr, x=x, h=h: kg.nvfp4_gemv_swiglu_out(
                    x, pw.packed, pw.global_scale, None, None, None, h, rr, pw.exact_scales)
                    for pw in pws] * 2, args.batches)
            picked = pws[0].swiglu_tiles[cls]
            best = min(res, key=res.get)
            row = {"shape": name, "N": n, "K": k, "M": m, "plain_us": plain, "plain_plan": [s, r],
                   "swiglu_us": {str(a): b for a, b in res.items()}, "picked_R": picked,
                   "picked_us": res.get(picked), "best_R": best, "best_us": res[best],
                   "ctas": {str(a): math.ceil(tiles / a) for a in res}}
            rows.append(row)
            cells = " ".join(f"{a}:{b:.1f}" for a, b in res.items())
            print(f"{name:17s} M={m} plain {plain:6.1f} (S,R)=({s},{r}) | picked R={picked} "
                  f"{res.get(picked, float('nan')):6.1f} best R={best} {res[best]:6.1f} | {cells}")
        del pws
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps({"device": props.name, "sms": sms, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
