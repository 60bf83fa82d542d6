"""Registers, spills and shared memory of the decode step's Triton kernels at several
num_warps, without a GPU: Triton compiles each kernel for sm_90 (its PTX), then ``ptxas -v``
(CUDA's, on PATH; Triton's bundled ptxas may allocate a few registers differently) assembles
it. The last column is the programs an SM holds by registers alone (65,536 per SM, before
the allocation granularity and the warp / shared-memory limits): a rough guide.

    python -m venv --system-site-packages /tmp/trvenv && /tmp/trvenv/bin/pip install triton==3.6.0
    PYTHONPATH=src /tmp/trvenv/bin/python dev/engine/triton_regs.py --warps 2 4 8

Session 13 used this to read the split-attention kernel's register counts (dev/engine/NOTES.md).
Constexprs are Qwen3-8B's at batch 1 (head_dim 128, 4 query heads per KV head, hidden 4096).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from resetfp4.engine import act_quant_kernels as aq
from resetfp4.engine import attention_kernels as ak


def _split(tiles: int):
    return ak._attn_fused_split_kernel, {
        "ptr_bf16": {"qr_ptr", "kr_ptr", "vr_ptr", "qw_ptr", "kw_ptr", "cos_ptr", "sin_ptr", "kc_ptr",
                     "vc_ptr"},
        "ptr_i64": {"pos_ptr"}, "ptr_fp32": {"acc_ptr", "ml_ptr"}, "fp32": {"eps", "sm_scale"},
        "const": {"ROWS": 16, "D": 128, "BLOCK_N": 64, "TILES": tiles, "HAS_NORM": True, "PDL": True}}


KERNELS = {
    "attn_split_1tile": lambda: _split(1),
    "attn_split_2tiles": lambda: _split(2),
    "attn_combine": lambda: (ak._attn_combine_kernel, {
        "ptr_fp32": {"acc_ptr", "ml_ptr", "gs_ptr"}, "ptr_bf16": {"out_ptr"}, "fp32": set(),
        "const": {"SP": 16, "ROWS": 16, "D": 128, "QUANT": False, "PDL": True}}),
    "add_rmsnorm": lambda: (aq._add_rmsnorm_quant_kernel, {
        "ptr_bf16": {"h_ptr", "d_ptr", "w_ptr", "x_ptr", "xq_ptr"}, "ptr_fp32": {"gs_ptr"}, "fp32": {"eps"},
        "const": {"BLOCK": aq.BLOCK, "FULL": 4096, "QUANT": False, "PDL": True}}),
}


def signature(fn, spec) -> tuple[dict, dict]:
    sig = {}
    for n in fn.arg_names:
        if n in spec["const"]:
            sig[n] = "constexpr"
        elif n in spec.get("ptr_bf16", ()):
            sig[n] = "*bf16"
        elif n in spec.get("ptr_fp32", ()):
            sig[n] = "*fp32"
        elif n in spec.get("ptr_i64", ()):
            sig[n] = "*i64"
        elif n in spec.get("fp32", ()):
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    return sig, {(fn.arg_names.index(k),): v for k, v in spec["const"].items()}


def ptxas_info(ptx: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "k.ptx"
        p.write_text(ptx)
        out = subprocess.run(["ptxas", "-arch=sm_90a", "-v", str(p), "-o", str(Path(d) / "k.cubin")],
                             capture_output=True, text=True, check=True).stderr
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    return {"regs": regs, "spill_st": int(spill.group(1)), "spill_ld": int(spill.group(2))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS))
    a = ap.parse_args()
    print(f"{'kernel':20} {'warps':>5} {'regs':>5} {'spill':>9} {'smem':>7} {'per SM (regs)':>13}")
    for name in a.kernels:
        fn, spec = KERNELS[name]()
        sig, consts = signature(fn, spec)
        for w in a.warps:
            c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                               target=GPUTarget("cuda", 90, 32), options={"num_warps": w})
            info = ptxas_info(c.asm["ptx"])
            per_sm = 65536 // (info["regs"] * 32 * w)
            print(f"{name:20} {w:5} {info['regs']:5} {info['spill_st']:4}/{info['spill_ld']:<4} "
                  f"{c.metadata.shared:7} {per_sm:13}")


if __name__ == "__main__":
    main()
