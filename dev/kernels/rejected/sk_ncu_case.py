"""One shape, three default-plan launches then three stream-K launches (for ncu; needs
gemv_stream_k.patch applied, see sk_probe.py):

    ncu --kernel-name regex:gemv_kernel --metrics ... python3 dev/kernels/sk_ncu_case.py N K M
"""
import math
import sys

import torch

from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.kernels.build import load_extension
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

n, k, m = (int(v) for v in sys.argv[1:4])
ext = load_extension()
pw = prepare_weight(quantize(torch.randn(n, k, device="cuda") * 0.02))
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
s, r = pw.plans[8 if m <= 8 else 16]
tiles = math.ceil(n / 16)
g = 3 * torch.cuda.get_device_properties(0).multi_processor_count
ws = torch.zeros((tiles + 3) // 4 * 4 + g * 512, dtype=torch.int32, device="cuda")
for _ in range(3):
    kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, y, s, r, pw.exact_scales)
for _ in range(3):
    assert not ext.gemv_sk(x, pw.packed, pw.global_scale, None, None, y, g, ws, pw.exact_scales)
torch.cuda.synchronize()
