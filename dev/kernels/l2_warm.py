"""Does a byte-bound decode GEMV get faster when part of each warp's weights is already in L2?

In the batch-1 decode step DRAM idles for ~17 µs per layer between the qkv GEMV's end and
the gate/up GEMV's start (attention, o_proj and the norm are latency chains), while gate/up
(56.6 MB, 19 µs) and down (28.3 MB) are DRAM-bound. If a kernel in that window pulled a part
of gate/up's weight into L2, gate/up would stream less from DRAM. Session 10 tried
"the first fraction of the weight tensor" from the previous GEMV's epilogue and saw no gain;
but that part belongs to the CTAs of the first tiles only, so the other CTAs stayed
DRAM-bound. Here the prefetched part is the first bodies of *every warp's* range (the order
the GEMV reads them), so each warp's stream gets shorter.

Setup (post_wait_latency.py's): one CUDA graph holds R repetitions of

    spin+prefetch (132 programs: trigger dependents, issue cp.async.bulk.prefetch.L2 for the
                   chosen segments of this repetition's weight copy, busy-wait SPIN_US)
      -> GEMV (PDL: preloads during the spin, waits for it)
      -> stamp (PDL)

minus the same graph without the GEMV. Columns: the GEMV's post-wait cost with the first
``bodies`` bodies of every warp prefetched (0: none). Weights rotate over copies that miss L2.

    PYTHONPATH=src python3 dev/kernels/l2_warm.py --json $OUT/l2_warm.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import post_wait_latency as pw
import torch
import triton
import triton.language as tl

from resetfp4.bench.kernels import copy_bandwidth_gbs
from resetfp4.engine.act_quant_kernels import launch_opts, pdl_trigger
from resetfp4.kernels import nvfp4_gemv as kg

UNIT = kg.UNIT_BYTES


def warp_segments(n: int, k: int, m: int, s: int, r: int, first: int, count: int) -> list[int]:
    """Byte offsets of the body segments (each ``kCh * 576`` bytes) of bodies
    ``[first, first + count)`` of every warp, mirroring gemv_kernel's aligned-loop split."""
    tiles, kc = kg.grid_dims(n, k)
    body = kg.ALIGNED_BODY[8 if m <= 8 else 16]
    pair = kg.pair_bodies(m, n, k, s, r)
    kt = 2 if pair else 1
    p_rank = kg.chunks_per_rank(k, s, 8 if m <= 8 else 16)
    out = []
    for cl in range(math.ceil(tiles / r)):
        tile0 = cl * r
        nr = min(r, tiles - tile0)
        for rank in range(s):
            ch0 = rank * p_rank
            pn = max(0, min(p_rank, kc - ch0))
            total = nr * pn
            q = math.ceil(total / (8 * body)) * body
            for w in range(8):
                b = min(total, w * q)
                nu = min(total, b + q) - b
                for i in range(first, min(nu // body, first + count)):
                    u = b + i * body
                    p, c = u // (kt * pn), u // kt % pn
                    for j in range(kt):
                        out.append(((tile0 + kt * p + j) * kc + ch0 + c) * UNIT)
    return out


@triton.jit
def _spin_prefetch_kernel(t_ptr, SPIN_NS, base, off_ptr, n_seg, seg_bytes, PDL: tl.constexpr,
                          BLOCK: tl.constexpr):
    pdl_trigger(PDL)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    o = tl.arange(0, BLOCK)
    for start in range(pid * BLOCK, n_seg, nprog * BLOCK):
        msk = start + o < n_seg
        off = tl.load(off_ptr + start + o, mask=msk, other=0)
        addr = base + off
        sz = tl.where(msk, seg_bytes, 16)
        tl.inline_asm_elementwise("cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0;", "=r,l,r",
                                  [addr, sz], dtype=tl.int32, is_pure=False, pack=1)
    t0 = pw._now()
    t = t0
    while t - t0 < SPIN_NS:
        t = pw._now()
    if pid == 0:
        tl.store(t_ptr, t)


def measure(name: str, m: int, bodies: int, first: int, spin_us: float, reps: int, replays: int) -> dict:
    n, k, _ = pw.SHAPES[name]
    ws, x, gemv, (s_, r) = pw.rotated_gemv(name, m, reps)
    nbytes, copies, cls = ws[0].packed.numel(), len(ws), 8 if m <= 8 else 16
    pair = kg.pair_bodies(m, n, k, s_, r)
    seg_bytes = kg.ALIGNED_BODY[cls] // (2 if pair else 1) * UNIT
    segs = warp_segments(n, k, m, s_, r, first, bodies)
    offs = torch.tensor(segs if segs else [0], dtype=torch.int64, device="cuda")
    n_seg = len(segs)
    stamps = torch.zeros(reps, 2, dtype=torch.int64, device="cuda")
    opts = launch_opts(x)
    plain = {"PDL": opts["PDL"]}
    spin_ns = int(spin_us * 1e3)
    sms = torch.cuda.get_device_properties(0).multi_processor_count

    def spin(i: int) -> None:
        _spin_prefetch_kernel[(sms,)](stamps[i, 0:], spin_ns, ws[i % copies].packed.data_ptr(), offs, n_seg,
                                      seg_bytes, BLOCK=128, num_warps=4, **plain)

    def stamp(i: int) -> None:
        pw._stamp_kernel[(1,)](stamps[i, 1:], num_warps=1, **opts)

    with_gemv = pw._time_graph(lambda i: (spin(i), gemv(i), stamp(i)), reps, replays)
    without = pw._time_graph(lambda i: (spin(i), stamp(i)), reps, replays)
    return {"shape": name, "m": m, "bodies": bodies, "first": first, "bytes": nbytes,
            "prefetched_bytes": n_seg * seg_bytes, "post_wait_us": with_gemv - without,
            "per_rep_without_us": without, "pair": pair, "plan": [s_, r]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="gate_up,down,qkv")
    ap.add_argument("--m", default="1,8")
    ap.add_argument("--bodies", default="0,1,2,3,4,6")
    ap.add_argument("--first", type=int, default=0, help="first body of each warp to prefetch")
    ap.add_argument("--spin-us", type=float, default=25.0)
    ap.add_argument("--reps", type=int, default=32)
    ap.add_argument("--replays", type=int, default=9)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    copy_gbs = copy_bandwidth_gbs()
    rows = []
    print(f"{torch.cuda.get_device_name()}, copy {copy_gbs:.0f} GB/s, spin {a.spin_us} us")
    print(f"{'shape':8} {'M':>2} {'MB':>6} {'bytes us':>8} {'bodies':>6} {'pf MB':>6} {'post-wait':>9}")
    for name in a.shapes.split(","):
        for m in (int(v) for v in a.m.split(",")):
            for nb in (int(v) for v in a.bodies.split(",")):
                r = measure(name, m, nb, a.first, a.spin_us, a.reps, a.replays)
                r["bytes_us"] = r["bytes"] / copy_gbs / 1e3
                rows.append(r)
                print(f"{name:8} {m:2d} {r['bytes'] / 1e6:6.1f} {r['bytes_us']:8.2f} {nb:6d} "
                      f"{r['prefetched_bytes'] / 1e6:6.1f} {r['post_wait_us']:9.2f}", flush=True)
    if a.json:
        pw.write_rows(a.json, copy_gbs, rows)


if __name__ == "__main__":
    main()
