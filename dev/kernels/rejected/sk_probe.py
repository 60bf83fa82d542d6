"""Stream-K split of the GEMV (session 19 prototype, rejected): correctness, then timing.

Needs gemv_stream_k.patch applied (it adds the extension's `gemv_sk`), from the repository
root at 3404206:

    patch -p1 < dev/kernels/rejected/gemv_stream_k.patch
    PYTHONPATH=src python3 dev/kernels/rejected/sk_probe.py [--json out.json] [--m 1 8]

Variants timed: "sk" (RESETFP4_GEMV_SK_DEV=0, the acq_rel arrival) and "sk no-sync" (=2, no
arrival at all: wrong results, timing only).

Correctness (fails loudly): the stream-K launch (`ext.gemv_sk`) against the float64
reference on the dequantized weight, for several CTA counts G (1, odd, 3 x SMs, every body),
M in 1..16, bf16 / fp16, poisoned outputs; twice in a row (the counters must come back to
zero, the bits must repeat); under CUDA-graph capture + replay.
Timing: the bench shapes, default plan vs stream-K with G = CTAs-per-SM x SMs, M = 1, 8, 16
(same timing as `resetfp4 bench kernels`).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from resetfp4.bench.kernels import SHAPES, _time_us, copy_bandwidth_gbs
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.kernels.build import load_extension
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight
from resetfp4.testing.tolerances import assert_rel_close, rel_for_dtype

ext = load_extension()


def ws_words(n: int, g: int) -> int:
    tiles = math.ceil(n / 16)
    return (tiles + 3) // 4 * 4 + g * 2 * 16 * 16


def bodies(n: int, k: int, m: int) -> int:
    tiles, kc = kg.grid_dims(n, k)
    body = kg.ALIGNED_BODY[8 if m <= 8 else 16]
    pair = m <= 8 and tiles % 2 == 0
    kt = 2 if pair else 1
    return tiles // kt * (kc // (body // kt))


def fits(n: int, k: int, m: int, g: int) -> bool:
    """The most tiles a CTA touches fits the kernel's shared memory (launch_gemv_any)."""
    tiles, kc = kg.grid_dims(n, k)
    body = kg.ALIGNED_BODY[8 if m <= 8 else 16]
    kt = 2 if m <= 8 and tiles % 2 == 0 else 1
    bpg = kc // (body // kt)
    per = math.ceil(bodies(n, k, m) / g)
    rmax = min(tiles, (math.ceil(per / bpg) + 1) * kt)
    return rmax <= kg.MAX_TILES_PER_CLUSTER[8 if m <= 8 else 16]


def sk(x, pw, y, g, ws, g_x=None, bias=None):
    err = ext.gemv_sk(x, pw.packed, pw.global_scale, g_x, bias, y, g, ws, pw.exact_scales)
    if err:
        raise RuntimeError(err)


def check(sms: int) -> int:
    cases = 0
    for n, k in [(8, 256), (24, 512), (4104, 4096), (6144, 4096), (5120, 25600), (1000, 3072)]:
        w = quantize(torch.randn(n, k, device="cuda"))
        pw = prepare_weight(w)
        wd = w.dequantize(torch.float64)
        bias = torch.randn(n, device="cuda")
        for m in (1, 2, 5, 8, 9, 16):
            nb = bodies(n, k, m)
            for g in sorted({1, 7, min(nb, 3 * sms), min(nb, 2 * sms), nb}):
                if g > nb or not fits(n, k, m, g):
                    continue
                ws = torch.zeros(ws_words(n, g), dtype=torch.int32, device="cuda")
                for dt in (torch.bfloat16, torch.float16):
                    x = torch.randn(m, k, device="cuda").to(dt)
                    b = bias.to(dt) if m % 2 else None
                    ref = x.double() @ wd.T + (b.double() if b is not None else 0)
                    y = torch.full((m, n), float("nan"), dtype=dt, device="cuda")
                    sk(x, pw, y, g, ws, bias=b)
                    assert_rel_close(y, ref, rel_for_dtype(dt), f"N={n} K={k} M={m} G={g}")
                    y2 = torch.full_like(y, float("nan"))
                    sk(x, pw, y2, g, ws, bias=b)
                    assert torch.equal(y, y2), f"not repeatable N={n} K={k} M={m} G={g}"
                    tiles = math.ceil(n / 16)
                    groups = tiles // 2 if m <= 8 and tiles % 2 == 0 else tiles
                    left = int(ws[:groups].abs().sum())
                    assert left == 0, f"counters not back to rest N={n} K={k} M={m} G={g}: {left}"
                    cases += 1
            # graph capture + replay, G = 3 x SMs (or every body)
            g = min(nb, 3 * sms)
            ws = torch.zeros(ws_words(n, g), dtype=torch.int32, device="cuda")
            x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
            y = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                sk(x, pw, y, g, ws)
            torch.cuda.current_stream().wait_stream(s)
            want = y.clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                sk(x, pw, y, g, ws)
            for _ in range(3):
                y.fill_(float("nan"))
                graph.replay()
                torch.cuda.synchronize()
                assert torch.equal(y, want), f"graph replay differs N={n} K={k} M={m}"
    # rejected inputs
    w = quantize(torch.randn(64, 256, device="cuda"))
    pw = prepare_weight(w)
    x = torch.randn(1, 256, device="cuda").to(torch.bfloat16)
    y = torch.empty(1, 64, dtype=torch.bfloat16, device="cuda")
    ws = torch.zeros(ws_words(64, 8), dtype=torch.int32, device="cuda")
    for bad in (0, bodies(64, 256, 1) + 1):
        assert ext.gemv_sk(x, pw.packed, pw.global_scale, None, None, y, bad, ws, True), bad
    return cases


VARIANTS = [("sk", "0", 3), ("sk no-sync", "2", 3)]


def bench(sms: int, ms: list[int], shapes: list[str], variants: list) -> list[dict]:
    """Default plan vs stream-K variants (name, RESETFP4_GEMV_SK_DEV, CTAs per SM for M <= 8)."""
    import os
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for name in shapes:
        n, k = SHAPES[name]
        w = quantize(torch.randn(n, k, device="cuda") * 0.02)
        copies = max(2, min(16, math.ceil(2 * l2 / (n * k * 9 // 16))))
        pws = [prepare_weight(w) for _ in range(copies)]
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            mc = 8 if m <= 8 else 16
            s, r = pws[0].plans[mc]
            base = [lambda pw=pw: kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, y,
                                                    s, r, pw.exact_scales) for pw in pws]
            res = {"plan": [_time_us(base * 2, 15)]}
            for vname, dev, cps in variants:
                cps = cps if m <= 8 else min(cps, 2)
                g = min(bodies(n, k, m), cps * sms)
                wss = [torch.zeros(ws_words(n, g), dtype=torch.int32, device="cuda") for _ in pws]
                os.environ["RESETFP4_GEMV_SK_DEV"] = dev
                skf = [lambda pw=pw, ws=ws, g=g: sk(x, pw, y, g, ws) for pw, ws in zip(pws, wss)]
                res[vname] = [_time_us(skf * 2, 15)]
                os.environ["RESETFP4_GEMV_SK_DEV"] = "0"
            res["plan"].append(_time_us(base * 2, 15))
            best = {kk: min(v) for kk, v in res.items()}
            rows.append({"shape": name, "N": n, "K": k, "M": m, "plan": [s, r], "us": res})
            print(f"{name:12s} M={m:2d} plan {s}x{r:<3d} {best['plan']:6.2f} | " + " | ".join(
                f"{kk} {v:6.2f} ({v / best['plan']:.3f})" for kk, v in best.items() if kk != "plan"),
                flush=True)
        del pws
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    if not args.skip_check:
        print(f"correctness: {check(sms)} cases passed", flush=True)
    copy = copy_bandwidth_gbs()
    print(f"{torch.cuda.get_device_name(0)}, {sms} SMs, copy {copy:.0f} GB/s", flush=True)
    rows = bench(sms, args.m, args.shapes, VARIANTS)
    for m in args.m:
        rs = [r for r in rows if r["M"] == m]
        for vname, _, _ in VARIANTS:
            geo = math.exp(sum(math.log(min(r["us"][vname]) / min(r["us"]["plan"])) for r in rs)
                           / len(rs))
            print(f"M={m}: geomean time {vname} / plan {geo:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(0), "copy_gbs": copy, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
