"""Time decode_attention_fused per layer (36 layer caches in rotation, one CUDA graph) with
the two Triton kernels and with the one-kernel CUDA path, in one process.

    python dev/engine/attn_backend_bench.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json

import torch

from resetfp4.engine import attention as A


def bench(b: int, seq_used: int, attn_len: int, layers: int = 36, iters: int = 30) -> float:
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
    cases = [(1, 640, 1024), (1, 1536, 2048), (4, 1536, 2048), (8, 640, 1024), (8, 1536, 2048)]
    rows = []
    for b, used, alen in cases:
        r = {"batch": b, "positions": used, "attn_len": alen}
        for name, on, cap in (("triton_us", False, 16), ("cuda_us", True, 16), ("cuda_max8_us", True, 8),
                              ("cuda_max4_us", True, 4)):
            A.CUDA_ATTENTION, A.CUDA_MAX_SPLITS = on, cap
            r[name] = round(bench(b, used, alen), 2)
        r["kv_mb"] = round(b * 8 * used * 128 * 2 * 2 / 1e6, 2)
        rows.append(r)
        print(r, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
