"""One NVFP4 GEMV shape for ncu: ``python3 dev/kernels/ncu_case.py N K M [act]``."""

import sys

import torch

from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

n, k, m = (int(v) for v in sys.argv[1:4])
act = sys.argv[4] if len(sys.argv) > 4 else "bf16"
pw = prepare_weight(quantize(torch.randn(n, k, device="cuda") * 0.02))
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
for _ in range(4):
    pw(x, act=act, out=out)
torch.cuda.synchronize()
print("done", n, k, m, act)
