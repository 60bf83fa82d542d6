"""Time decode_attention_fused per layer (36 layer caches in rotation, one CUDA graph) with
the two Triton kernels and with the one-kernel CUDA path, in one process.

    python dev/engine/attn_backend_bench.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from resetfp4.engine import attention as A

sys.path.insert(0, str(Path(__file__).parent))
from attn_sweep import bench  # noqa: E402  (same 36-layer graph timing)


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
