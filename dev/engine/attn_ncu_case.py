"""One decode_attention_fused call (after warm-ups) for ncu:
    ncu -k regex:attn -s 2 -c 2 python dev/engine/attn_ncu_case.py BATCH POSITIONS MAX_SPLITS CUDA(0/1)
"""

import sys

import torch

from resetfp4.engine import attention as A

b, seq, cap, cuda = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
A.CUDA_ATTENTION, A.CUDA_MAX_SPLITS = cuda, cap
dt = torch.bfloat16
h_kv, rep, d = 8, 4, 128
kc = torch.randn(b, h_kv, 1024 if seq <= 1024 else 2048, d, device="cuda", dtype=dt)
vc = torch.randn_like(kc)
qkv = torch.randn(b, (h_kv * rep + 2 * h_kv) * d, device="cuda", dtype=dt)
q, k, v = qkv.split([h_kv * rep * d, h_kv * d, h_kv * d], -1)
w = torch.ones(d, device="cuda", dtype=dt)
cos, sin = torch.ones(b, d, device="cuda", dtype=dt), torch.zeros(b, d, device="cuda", dtype=dt)
pos = torch.full((b,), seq - 1, device="cuda", dtype=torch.int64)
for _ in range(3):
    A.decode_attention_fused(q, k, v, w, w, 1e-6, cos, sin, kc, vc, pos, kc.shape[2])
torch.cuda.synchronize()
print("done", b, seq, cap, cuda)
