"""Why the NVFP4 GEMV is slower at M=8 than at M=1 (session 7 question): one launch per
(shape, M) for ncu to profile. Run on a GPU machine:

    ncu -k regex:gemv_kernel --metrics gpu__time_duration.sum,dram__bytes_read.sum,\
lts__t_sectors_srcunit_tex_op_read.sum,l1tex__t_sector_hit_rate.pct,\
l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,\
smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct,smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct \
        python3 dev/kernels/ncu_m1_vs_m8.py

Shapes: Qwen3-8B down (4096 x 12288) and the interleaved gate/up (24576 x 4096), plain GEMV.
"""

import torch

from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight

torch.manual_seed(0)
for n, k in [(4096, 12288), (24576, 4096)]:
    pw = prepare_weight(quantize(torch.randn(n, k, device="cuda")))
    for m in (1, 8):
        x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
        y = pw(x)
        torch.cuda.synchronize()
        print(f"N={n} K={k} M={m} plan={pw.plans[8]} ok={bool(torch.isfinite(y).all())}")
