"""Run the GEMV under every work split of one shape, one launch at a time, printing before
each (a crash names its split): python3 dev/kernels/split_debug.py N K"""

import sys

import torch

from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

n, k = int(sys.argv[1]), int(sys.argv[2])
w = quantize(torch.randn(n, k, device="cuda"))
pw = prepare_weight(w)
tiles, kc = kg.grid_dims(n, k)
rmax = min(tiles, kg.MAX_TILES_PER_CLUSTER[16])
for plan in [(1, 1), (1, rmax), (2, 1), (3, 2), (8, 1), (5, max(1, rmax // 2)), (8, rmax)]:
    for m in (1, 9):
        print("split", plan, "M", m, flush=True)
        x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
        y = torch.full((m, n), float("nan"), dtype=x.dtype, device="cuda")
        kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, y, *plan, pw.exact_scales)
        torch.cuda.synchronize()
        ref = x.double() @ w.dequantize(torch.float64).T
        err = ((y.double() - ref).norm() / ref.norm()).item()
        print("  rel err", f"{err:.2e}", flush=True)
