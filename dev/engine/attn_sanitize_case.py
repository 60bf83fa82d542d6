"""A small decode_attention_fused call on the one-kernel CUDA path, for compute-sanitizer:

    compute-sanitizer --tool memcheck python dev/engine/attn_sanitize_case.py
    compute-sanitizer --tool racecheck python dev/engine/attn_sanitize_case.py
"""

import torch

from resetfp4.engine import attention as A

A.CUDA_ATTENTION, A.CUDA_MIN_ROWS = True, 1
dt = torch.bfloat16
for b, h_kv, rep, d, seq, max_seq in ((2, 2, 4, 128, 200, 260), (3, 1, 7, 64, 130, 140)):
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(b, (h_kv * rep + 2 * h_kv) * d, device="cuda", generator=g).to(dt)
    q, k, v = qkv.split([h_kv * rep * d, h_kv * d, h_kv * d], -1)
    w = torch.ones(d, device="cuda", dtype=dt)
    ang = torch.rand(b, d // 2, device="cuda", generator=g)
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(dt)
    sin = torch.cat([-ang.sin(), ang.sin()], -1).to(dt)
    kc = torch.randn(b, h_kv, max_seq, d, device="cuda", generator=g).to(dt)
    vc = torch.randn_like(kc)
    pos = torch.tensor([seq - 1, 0, max_seq - 1][:b], device="cuda")
    assert A.cuda_serves(q, kc, vc, rep)
    out = A.decode_attention_fused(q, k, v, w, w, 1e-6, cos, sin, kc, vc, pos, seq,
                                   out_scale=torch.ones(1, device="cuda"))
    torch.cuda.synchronize()
    print("case done", tuple(out.shape), bool(torch.isfinite(out).all()))
