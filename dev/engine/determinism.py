"""Replay one compiled, graph-captured decode forward many times on fixed inputs and
check that the logits are bitwise identical every time (a race between the kernels of a
step, e.g. a wrong programmatic-dependent-launch edge, shows up as run-to-run changes).

    python dev/engine/determinism.py [--arch qwen3-8b] [--layers 4] [--batch 4] [--reps 300]
"""

from __future__ import annotations

import argparse
import json

import torch

from resetfp4.engine.build import random_model
from resetfp4.engine.config import preset
from resetfp4.engine.decode import _compiled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="qwen3-8b")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--precisions", default="nvfp4-w4a16,nvfp4-w4a4,bf16")
    a = ap.parse_args()
    dev = torch.device("cuda")
    out = {}
    for precision in a.precisions.split(","):
        model = random_model(preset(a.arch, n_layers=a.layers), precision, dev)
        model.setup_cache(a.batch, 1024)
        model.fuse_projections()
        cf = _compiled(model)
        g = torch.Generator(device=dev).manual_seed(1)
        tok = torch.randint(0, 1000, (a.batch, 1), device=dev, generator=g)
        pos = torch.randint(100, 900, (a.batch, 1), device=dev, generator=g)
        with torch.no_grad():
            for _ in range(3):
                cf(tok, pos, 1024)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = cf(tok, pos, 1024)
            graph.replay()
            torch.cuda.synchronize()
            first = logits.clone()
            diffs = 0
            for _ in range(a.reps):
                graph.replay()
                diffs += int(not torch.equal(logits, first))
            torch.cuda.synchronize()
        out[precision] = {"reps": a.reps, "replays_differing": diffs}
        print(precision, out[precision], flush=True)
        del model, cf, graph
        torch.cuda.empty_cache()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
