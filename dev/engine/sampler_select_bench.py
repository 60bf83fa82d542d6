"""Graph-replayed fast-sampler step (vocab 151,936) per candidate selection variant.

    PYTHONPATH=src python3 dev/engine/sampler_select_bench.py --select hist --bins 2048 --res 16
    PYTHONPATH=src python3 dev/engine/sampler_select_bench.py --select topk

``--bins`` / ``--res`` patch the histogram constants of resetfp4.sampling.kernels before any
kernel compiles (one variant per process). Prints µs per step for batch 1 and 8 and the mean
candidate count on LM-like logits; one JSON line per batch goes to ``--json`` (appended).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton.language as tl

from resetfp4.sampling import BatchSampler, SamplerConfig
from resetfp4.sampling import kernels as K

V = 151_936


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--select", default="hist")
    ap.add_argument("--bins", type=int, default=K.HIST_BINS_N)
    ap.add_argument("--res", type=float, default=float(K.HIST_RES.value))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    K.HIST_BINS_N, K.HIST_BINS, K.HIST_RES = a.bins, tl.constexpr(a.bins), tl.constexpr(a.res)
    dev = torch.device("cuda")
    for b in (int(x) for x in a.batches.split(",")):
        s = BatchSampler(b, V, dev, track_entropy=False, impl="triton", select=a.select)
        for r in range(b):
            s.configure(r, SamplerConfig(mode="fixed", temperature=0.6, top_p=0.95), seed=r)
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(b, V, device=dev, generator=g) * 2 - 4
        x[:, :64] += 6 + 8 * torch.rand(b, 64, device=dev, generator=g)
        flat = torch.randn(b, V, device=dev, generator=g) * 0.5  # random-weight-like: flat
        out = {}
        for name, logits in (("lm", x), ("flat", flat)):
            for _ in range(3):
                s.step(logits)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                s.step(logits)
            graph.replay()
            torch.cuda.synchronize()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(a.reps):
                graph.replay()
            e1.record()
            torch.cuda.synchronize()
            us = e0.elapsed_time(e1) * 1e3 / a.reps
            n = (s.fast["hist"][:b, K.HIST_BINS_N].float().mean().item()
                 if a.select == "hist" else float(s.candidates))
            out[name] = {"us": us, "candidates": n, "truncated": int(s.truncated[:b].sum())}
        rec = {"select": a.select, "bins": a.bins, "res": a.res, "batch": b, **out}
        print(f"{a.select:<5} bins {a.bins:>5} res {a.res:>5} B{b}: "
              + "  ".join(f"{k} {v['us']:7.1f} us (cand {v['candidates']:.0f}, trunc {v['truncated']})"
                          for k, v in out.items()), flush=True)
        if a.json:
            with a.json.open("a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
