"""Time decode_attention_fused (the decode step's attention) for split-count / tile / stage
variants, on 36 layer-like caches in rotation (the KV comes from HBM as in a real step).

    python dev/engine/attn_sweep.py [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from resetfp4.engine import attention as A
from resetfp4.engine import attention_kernels as ak


def bench(b: int, seq_used: int, attn_len: int, layers: int = 36, iters: int = 20) -> float:
    dev, dt = torch.device("cuda"), torch.bfloat16
    h_kv, rep, d = 8, 4, 128
    caches = [(torch.randn(b, h_kv, attn_len, d, device=dev, dtype=dt),
               torch.randn(b, h_kv, attn_len, d, device=dev, dtype=dt)) for _ in range(layers)]
    qkv = torch.randn(b, (h_kv * rep + 2 * h_kv) * d, device=dev, dtype=dt)
    q, k, v = qkv.split([h_kv * rep * d, h_kv * d, h_kv * d], -1)
    w = torch.ones(d, device=dev, dtype=dt)
    cos, sin = torch.ones(b, d, device=dev, dtype=dt), torch.zeros(b, d, device=dev, dtype=dt)
    pos = torch.full((b,), seq_used - 1, device=dev, dtype=torch.int64)

    def step():
        for kc, vc in caches:
            A.decode_attention_fused(q, k, v, w, w, 1e-6, cos, sin, kc, vc, pos, attn_len)

    step()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    g.replay()
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(iters):
        g.replay()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) * 1000 / iters / layers  # us per layer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    a = ap.parse_args()
    cases = [(1, 640, 1024), (8, 640, 1024), (1, 1536, 2048), (8, 1536, 2048), (4, 1536, 2048)]
    rows = []
    for pps, bn, st in itertools.product((2, 4, 8), (64, 32), (None, 2)):
        A.PROGRAMS_PER_SM, A.BLOCK_N, ak.SPLIT_STAGES = pps, bn, st
        r = {"programs_per_sm": pps, "block_n": bn, "stages": st}
        for b, used, alen in cases:
            r[f"B{b}_pos{used}_len{alen}"] = round(bench(b, used, alen), 2)
        rows.append(r)
        print(r, flush=True)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
