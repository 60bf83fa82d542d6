"""Consumer-rate probe (session 4): the v7 GEMV on one weight that stays in L2 (no rotation),
so HBM is out of the picture and the time is the kernel's own issue/latency limit.

    python3 dev/kernels/l2_rate.py [--json out.json]
"""

import argparse
import json

import torch

from resetfp4.bench.kernels import SHAPES, _time_us
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

ap = argparse.ArgumentParser()
ap.add_argument("--json", default=None)
ap.add_argument("--shapes", nargs="+", default=["8B.qkv", "8B.o", "14B.o", "8B.down"])
args = ap.parse_args()
rows = []
for name in args.shapes:
    n, k = SHAPES[name]
    pw = prepare_weight(quantize(torch.randn(n, k, device="cuda") * 0.02))
    qb = n * k * 9 // 16
    for m in (1, 8, 16):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        t = _time_us([lambda: pw(x, out=out)] * 40, 10)
        rows.append({"shape": name, "M": m, "MB": qb / 1e6, "us": t, "gbs": qb / t / 1e3})
        print(f"L2-resident {name:8s} M={m:2d} {qb / 1e6:6.1f} MB {t:7.2f} us {qb / t / 1e3:7.0f} GB/s")
if args.json:
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
