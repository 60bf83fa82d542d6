"""One NVFP4 GEMV shape for ncu: ``python3 dev/kernels/ncu_case.py N K M [bf16|fp4|fp4s]``."""

import sys

import torch

from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

n, k, m = (int(v) for v in sys.argv[1:4])
act = sys.argv[4] if len(sys.argv) > 4 else "bf16"  # bf16 | fp4 (dynamic) | fp4s (static)
pw = prepare_weight(quantize(torch.randn(n, k, device="cuda") * 0.02))
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
scale = (x.float().abs().amax() / 2688).reshape(1) if act == "fp4s" else None
for _ in range(4):
    pw(x, act="bf16" if act == "bf16" else "fp4", input_scale=scale, out=out)
torch.cuda.synchronize()
print("done", n, k, m, act)
