"""W4A4 against W4A16 as the decode engine runs them: producer + GEMV (session 15).

    PYTHONPATH=src python3 dev/kernels/producer_pair_bench.py [--m 1 8] [--shapes ...] [--json F]

Written in session 15 after that session's device time was spent: not run yet.

`resetfp4 bench kernels` times W4A4 (static scale) as the op `nvfp4_linear(act="fp4")` runs it:
a quantizer launch, then the GEMV. That costs 1.18-1.21x W4A16. In the decode engine no
quantizer launch runs. The kernel that produces a linear's input quantizes it in the same
pass (`resetfp4.engine.act_quant`), and the GEMV reads the quantized values with the
global scale in its epilogue (`act="fp4_pre"`). The issue allows either form ("either fused
or in one tiny kernel").

This script times that form for every layer shape of `bench kernels`, as the Qwen3 step runs
each layer family (M <= 16, PDL launches as in the step):
- **qkv**: the residual add + RMSNorm producer (`_add_rmsnorm_quant_kernel`), then the GEMV.
  W4A16: producer without quantization, GEMV without an activation scale. W4A4: producer
  quantizing with a calibrated static `input_scale` (amax of its output / 2688), GEMV with
  that scale in its epilogue.
- **gate_up**: the same producer, then the SwiGLU GEMV (`nvfp4_gemv_swiglu_out`). In W4A4 its
  epilogue also quantizes h for down (`g_q`), so down's quantization is counted here. The
  rows are not interleaved; timing does not depend on it.
- **o, down**: the GEMV alone on activations that arrive quantized. o_proj's input comes from
  the attention kernel, whose W4A4 quantization is not counted here; down's from gate_up's
  epilogue, counted above.

Timing is as in `bench kernels`: a CUDA graph of passes rotating over enough weight copies
to exceed 2x L2, median over batches, µs per pass. The op path (`nvfp4_linear(act="fp4")`,
static scale: quantizer launch + GEMV) is timed in the same run. Before timing, the GEMV on
the producer's quantized output is checked against the op path on the same activations:
same codes, same GEMV, so they must agree; W4A16 likewise.

Review fix folded in before the first run: every weight copy's W4A4 workspace is created
before timing. Created lazily, the copies past the warm-up would make theirs inside the
graph capture, and their fill kernels would replay with every pass.
`resetfp4 bench kernels` had the same flaw at the first M it timed, fixed in session 15.
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
    for pw in pws:  # the op path's W4A4 buffers, created now and not inside a graph capture
        pw.act_workspace(torch.bfloat16)
    rows = [bench_m(name, n, k, m, pws, batches) for m in ms]
    del pws
    torch.cuda.empty_cache()
    return rows


def bench_m(name: str, n: int, k: int, m: int, pws: list, batches: int) -> dict:
    """One shape and M: the engine form of W4A16 and W4A4 for the shape's layer family
    (module docstring), the op path, and the check."""
    from resetfp4.engine import act_quant_kernels as kq
    from resetfp4.kernels import nvfp4_gemv as kg

    family = name.split(".", 1)[1]  # qkv, o, gate_up, down
    dt = torch.bfloat16
    h = torch.randn(m, k, device="cuda", dtype=dt)
    d = torch.randn(m, k, device="cuda", dtype=dt) * 0.1
    nw = (1.0 + 0.1 * torch.randn(k, device="cuda")).to(dt)
    x = torch.empty_like(h)
    y = torch.empty_like(h)  # the producer's output, unquantized (W4A16 input)
    yq = torch.empty_like(h)  # the same quantized with gs: e2m1 * block scale (W4A4 input)
    xq = torch.empty_like(h)  # what the timed producer writes
    out = torch.empty(m, n, device="cuda", dtype=dt)
    hbuf = torch.empty(m, n // 2, device="cuda", dtype=dt)
    kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, None, x, y)
    gs = (y.float().abs().amax() / 2688.0).reshape(1)  # a calibrated static input_scale
    g_q = gs.clone()  # gate/up: the (stand-in) input_scale of down, quantized in the epilogue
    kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, gs, x, yq)
    s, r = pws[0].plans[8 if m <= 8 else 16]
    cls = 8 if m <= 8 else 16

    def gemv(pw, inp, quant: bool) -> None:
        kg.nvfp4_gemv_out(inp, pw.packed, pw.global_scale, gs if quant else None, None, out, s, r,
                          pw.exact_scales)

    def step(pw, quant: bool) -> None:
        """The engine's work for this layer family, W4A4 (quant) or W4A16."""
        if family in ("o", "down"):  # the input arrives quantized (attention / SwiGLU epilogue)
            gemv(pw, yq if quant else y, quant)
            return
        kq.launch_add_rmsnorm_quant(h, d, nw, 1e-6, gs if quant else None, x, xq)
        if family == "gate_up":  # the SwiGLU GEMV; W4A4 also quantizes h for down
            kg.nvfp4_gemv_swiglu_out(xq, pw.packed, pw.global_scale, gs if quant else None,
                                     g_q if quant else None, None, hbuf, pw.swiglu_tiles[cls],
                                     pw.exact_scales)
        else:
            gemv(pw, xq, quant)

    # Checks (before timing): the producer-quantized W4A4 GEMV against the op path on the
    # same activations (same codes, same GEMV: equal up to nothing), and W4A16 likewise.
    errs = {}
    for tag, act, inp, scale in (("w4a4", "fp4", yq, gs), ("w4a16", "bf16", y, None)):
        want = pws[0](y.clone(), act=act, input_scale=scale).float()
        gemv(pws[0], inp, scale is not None)
        errs[tag] = ((out.float() - want).norm() / want.norm().clamp_min(1e-30)).item()
        if not errs[tag] < 1e-3:
            raise SystemExit(f"{name} M={m}: the engine-form {tag} GEMV differs from the op path "
                             f"(relative error {errs[tag]:.2e})")

    row = {"shape": name, "family": family, "N": n, "K": k, "M": m,
           "check_rel_err_w4a4": errs["w4a4"], "check_rel_err_w4a16": errs["w4a16"]}
    for tag, quant in (("engine_w4a16", False), ("engine_w4a4", True)):
        row[f"{tag}_us"] = bk._time_us([lambda pw=pw, q=quant: step(pw, q) for pw in pws] * 2,
                                       batches)
    for tag, act, scale in (("op_w4a16", "bf16", None), ("op_w4a4s", "fp4", gs)):
        row[f"{tag}_us"] = bk._time_us(
            [lambda pw=pw, a=act, sc=scale: pw(y, act=a, input_scale=sc, out=out) for pw in pws] * 2,
            batches)
    row["engine_ratio"] = row["engine_w4a4_us"] / row["engine_w4a16_us"]
    row["engine_extra_us"] = row["engine_w4a4_us"] - row["engine_w4a16_us"]
    row["op_ratio"] = row["op_w4a4s_us"] / row["op_w4a16_us"]
    row["op_extra_us"] = row["op_w4a4s_us"] - row["op_w4a16_us"]
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
    if not all(1 <= m <= 16 for m in args.m):
        raise SystemExit(f"--m takes batch sizes 1..16 (the GEMV's rows), got {args.m}")
    unknown = [s for s in args.shapes if s not in bk.SHAPES]
    if unknown:
        raise SystemExit(f"unknown shapes {unknown}; known: {list(bk.SHAPES)}")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    print(f"{'shape':14s} {'M':>2} {'engine a16':>10} {'a4':>7} {'a4/a16':>6} {'+us':>5} | "
          f"{'op a16':>7} {'a4s':>7} {'a4/a16':>6} {'+us':>5}")
    for name in args.shapes:
        n, k = bk.SHAPES[name]
        for r in bench_shape(name, n, k, args.m, args.batches, l2):
            rows.append(r)
            print(f"{name:14s} {r['M']:2d} {r['engine_w4a16_us']:10.2f} {r['engine_w4a4_us']:7.2f} "
                  f"{r['engine_ratio']:6.3f} {r['engine_extra_us']:5.2f} | {r['op_w4a16_us']:7.2f} "
                  f"{r['op_w4a4s_us']:7.2f} {r['op_ratio']:6.3f} {r['op_extra_us']:5.2f}", flush=True)
    for m in args.m:
        sel = [r for r in rows if r["M"] == m]
        eng = bk._geomean([r["engine_ratio"] for r in sel])
        op = bk._geomean([r["op_ratio"] for r in sel])
        extra = sum(r["engine_extra_us"] for r in sel) / len(sel)
        print(f"M={m}: geomean W4A4 / W4A16, engine form {eng:.3f} (mean +{extra:.2f} µs); "
              f"op path with its quantizer launch {op:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": bk.environment(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
