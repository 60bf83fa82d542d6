"""W4A4 against W4A16 as the decode engine runs them: producer + GEMV (session 15).

    PYTHONPATH=src python3 dev/kernels/producer_pair_bench.py [--m 1 8] [--shapes ...] [--json F]

Written in session 15 after that session's device time was spent: not run yet.

`resetfp4 bench kernels` times W4A4 (static scale) as the op `nvfp4_linear(act="fp4")` runs it:
a quantizer launch, then the GEMV. That costs 1.18-1.21x W4A16. In the decode engine no
quantizer launch runs. The kernel that produces a linear's input quantizes it in the same
pass (`resetfp4.engine.act_quant`), and the GEMV reads the quantized values with the
global scale in its epilogue (`act="fp4_pre"`). The issue allows either form ("either fused
or in one tiny kernel").

This script times that form for every layer shape of `bench kernels`. Each pass is the
residual add + RMSNorm producer (`_add_rmsnorm_quant_kernel`, launched with PDL as in the
step), then the GEMV on its output:
- W4A16: producer without quantization, then the GEMV with no activation scale;
- W4A4: producer quantizing with a calibrated static `input_scale` (amax of the producer's
  output / 2688, computed once), then the GEMV with that scale in its epilogue.

Timing is as in `bench kernels`: a CUDA graph of passes rotating over enough weight copies
to exceed 2x L2, median over batches, µs per pass. It prints per shape and M the W4A16 and
W4A4 pair times, the pair ratio, and the quantizer-launch ratio of the op path from the same
run. Before timing, the W4A4 pair's output is checked against the op path
(`nvfp4_linear(act="fp4")`) on the same producer output: the codes are the reference's, so
the two must agree to fp32 summation order.

In the engine not every linear's producer is this kernel: o_proj's input comes from the
attention kernel and down's from the gate/up GEMV's SwiGLU epilogue, both quantizing the same
way. The add + RMSNorm producer stands in for all of them here.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from resetfp4.bench import kernels as bk


def bench_shape(name: str, n: int, k: int, ms: list[int], batches: int, l2: int) -> list[dict]:
    from resetfp4.nvfp4 import quantize
    from resetfp4.ops import prepare_weight

    q_bytes = n * k * 9 // 16
    copies = max(2, min(16, math.ceil(2 * l2 / q_bytes)))
    w = quantize(torch.randn(n, k, device="cuda") * 0.02)
    pws = [prepare_weight(w) for _ in range(copies)]
    rows = [bench_m(name, n, k, m, pws, batches) for m in ms]
    del pws
    torch.cuda.empty_cache()
    return rows


def bench_m(name: str, n: int, k: int, m: int, pws: list, batches: int) -> dict:
    from resetfp4.engine import act_quant_kernels as kq
    from resetfp4.kernels import nvfp4_gemv as kg

    dt = torch.bfloat16
    h = torch.randn(m, k, device="cuda", dtype=dt)
    d = torch.randn(m, k, device="cuda", dtype=dt) * 0.1
    nw = (1.0 + 0.1 * torch.randn(k, device="cuda")).to(dt)
    x = torch.empty_like(h)
    xq = torch.empty_like(h)
    out = torch.empty(m, n, device="cuda", dtype=dt)
    kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, None, x, xq)  # unquantized y, for the scale
    gs = (xq.float().abs().amax() / 2688.0).reshape(1)
    s, r = pws[0].plans[8 if m <= 8 else 16]

    def pair(pw, quant: bool) -> None:
        kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, gs if quant else None, x, xq)
        kg.nvfp4_gemv_out(xq, pw.packed, pw.global_scale, gs if quant else None, None, out, s, r,
                          pw.exact_scales)

    # Check: the fused W4A4 pair against the op path on the same producer output.
    kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, None, x, xq)
    want = pws[0](xq.clone(), act="fp4", input_scale=gs).float()
    pair(pws[0], True)
    err = ((out.float() - want).norm() / want.norm().clamp_min(1e-30)).item()
    if not err < 1e-3:
        raise SystemExit(f"{name} M={m}: the producer-quantized W4A4 GEMV differs from the op "
                         f"path (relative error {err:.2e})")

    row = {"shape": name, "N": n, "K": k, "M": m, "check_rel_err": err}
    for tag, quant in (("pair_w4a16", False), ("pair_w4a4", True)):
        row[f"{tag}_us"] = bk._time_us([lambda pw=pw, q=quant: pair(pw, q) for pw in pws] * 2,
                                       batches)
    for tag, act, scale in (("op_w4a16", "bf16", None), ("op_w4a4s", "fp4", gs)):
        row[f"{tag}_us"] = bk._time_us(
            [lambda pw=pw, a=act, sc=scale: pw(xq, act=a, input_scale=sc, out=out) for pw in pws] * 2,
            batches)
    row["pair_ratio"] = row["pair_w4a4_us"] / row["pair_w4a16_us"]
    row["op_ratio"] = row["op_w4a4s_us"] / row["op_w4a16_us"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--shapes", nargs="+", default=list(bk.SHAPES))
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("producer_pair_bench.py needs a CUDA GPU")
    unknown = [s for s in args.shapes if s not in bk.SHAPES]
    if unknown:
        raise SystemExit(f"unknown shapes {unknown}; known: {list(bk.SHAPES)}")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    print(f"{'shape':12s} {'M':>2} {'a16 pair':>9} {'a4 pair':>8} {'pair a4/a16':>11} "
          f"{'op a4/a16':>9}")
    for name in args.shapes:
        n, k = bk.SHAPES[name]
        for r in bench_shape(name, n, k, args.m, args.batches, l2):
            rows.append(r)
            print(f"{name:12s} {r['M']:2d} {r['pair_w4a16_us']:9.2f} {r['pair_w4a4_us']:8.2f} "
                  f"{r['pair_ratio']:11.3f} {r['op_ratio']:9.3f}", flush=True)
    for m in args.m:
        sel = [r for r in rows if r["M"] == m]
        pair = bk._geomean([r["pair_ratio"] for r in sel])
        op = bk._geomean([r["op_ratio"] for r in sel])
        print(f"M={m}: geomean W4A4 / W4A16, producer + GEMV {pair:.3f}; op path (quantizer launch) {op:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": bk.environment(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
