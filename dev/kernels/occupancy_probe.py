"""Is the GEMV on the large shapes bound by DRAM or by how many CTAs stream at once?

    python3 dev/kernels/occupancy_probe.py [--json out.json]

For each shape whose plan fills only 320 of the 396 CTA slots (3 per SM on 132 SMs), time
the same K with N grown so that the same R gives 396 CTAs (one full wave). If the time
stays put while the bytes grow by 396/320, each CTA streams at a fixed rate and a split
that keeps every slot busy (stream-K over CTAs) would gain; if the time grows with the
bytes, the shape is at the DRAM limit already. Same timing as `resetfp4 bench kernels`.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from resetfp4.bench.kernels import _time_us, copy_bandwidth_gbs
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

PAIRS = {  # name: (N, K); the probe adds N' = N * 396 / 320
    "14B.down": (5120, 17408),
    "32B.qkv": (10240, 5120),
    "32B.o": (5120, 8192),
    "32B.gate_up": (25600, 5120),
    "32B.down": (5120, 25600),
    "8B.gate_up": (12288, 4096),  # control: already 384 CTAs
}


def time_plan(n: int, k: int, m: int, plan: tuple[int, int] | None) -> tuple[float, tuple]:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    w = quantize(torch.randn(n, k, device="cuda") * 0.02)
    copies = max(2, min(16, math.ceil(2 * l2 / (n * k * 9 // 16))))
    pws = [prepare_weight(w) for _ in range(copies)]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    mc = 8 if m <= 8 else 16
    p = plan or pws[0].plans[mc]
    fns = [lambda pw=pw: kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, y,
                                           p[0], p[1], pw.exact_scales) for pw in pws]
    us = _time_us(fns * 2, 15)
    del pws
    torch.cuda.empty_cache()
    return us, p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy = copy_bandwidth_gbs()
    print(f"{torch.cuda.get_device_name(0)}, {sms} SMs, copy {copy:.0f} GB/s")
    rows = []
    for name, (n, k) in PAIRS.items():
        for m in args.m:
            us0, p0 = time_plan(n, k, m, None)
            tiles, kc = kg.grid_dims(n, k)
            ctas0 = p0[0] * math.ceil(tiles / p0[1])
            # grow N so that the same (S, R) gives 3 CTAs on every SM
            n1 = 16 * p0[1] * 3 * sms // p0[0]
            us1, p1 = time_plan(n1, k, m, p0)
            b0, b1 = n * k * 9 / 16, n1 * k * 9 / 16
            r = {"shape": name, "M": m, "N": n, "K": k, "plan": list(p0), "ctas": ctas0,
                 "us": us0, "gbs": b0 / us0 / 1e3, "N_full": n1, "ctas_full": 3 * sms,
                 "us_full": us1, "gbs_full": b1 / us1 / 1e3, "copy_gbs": copy}
            rows.append(r)
            print(f"{name:12s} M={m:2d} plan {p0} {ctas0:4d} CTAs {us0:6.2f} us "
                  f"{r['gbs']:5.0f} GB/s ({100 * r['gbs'] / copy:4.1f}%) | N={n1} "
                  f"{3 * sms} CTAs {us1:6.2f} us {r['gbs_full']:5.0f} GB/s "
                  f"({100 * r['gbs_full'] / copy:4.1f}%)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(0), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
