"""CPU model of the GEMV's work split (csrc/nvfp4_gemv.cu, gemv_kernel and launch_gemv).

The kernel's index arithmetic is mirrored here step by step (keep the two in sync): the
cluster ranks' chunk ranges P (rounded to whole bodies for the aligned loop), the per-warp
unit ranges (Q), the aligned loop's body pointers (step_in / step_wrap), its x offsets and
L2 prefetches, the general loop's ring pointer, the park slots and the epilogue's warp
ranges. For many shapes and plans it checks what the GPU tests can only sample: every
weight unit is read exactly once, no weight read, prefetch or x read leaves its buffer,
the x chunk matches the weight chunk, park slots are unique and inside shared memory, and
the epilogue sums exactly the warps that parked each tile.
"""

from __future__ import annotations

import pytest

from resetfp4.kernels import nvfp4_gemv as kg

UNIT = kg.UNIT_BYTES
WARPS = 8
PREFETCH = 1  # RESETFP4_GEMV_PREFETCH


def _aligned_warp(n, b, tile0, kc, ch0, pn, body, k, n_bytes, cover, parked, warp):
    pt, pc = b // pn, b % pn
    assert b % body == 0 and n % body == 0 and pn % body == 0
    wp = ((tile0 + pt) * kc + ch0 + pc) * UNIT
    step_in, step_wrap = body * UNIT, (kc - pn + body) * UNIT

    def read_body(ptr):
        for d in range(body):
            a = ptr + d * UNIT
            assert 0 <= a and a + UNIT <= n_bytes, "weight read out of bounds"
            cover[a // UNIT] += 1

    def ahead(ptr, chunk, steps):
        for _ in range(steps):
            wrap = chunk + body == pn
            ptr += step_wrap if wrap else step_in
            chunk = 0 if wrap else chunk + body
        return ptr

    bodies = n // body
    read_body(wp)
    for j in range(PREFETCH):  # prologue prefetches
        if j + 1 < bodies:
            p = ahead(wp, pc, j + 1)
            assert 0 <= p and p + body * UNIT <= n_bytes, "prefetch out of bounds"
    x0 = ch0 * 64
    xp = x0 + pc * 64
    i = 0
    while True:
        refill = i + body < n
        tile_end = pc + body == pn
        wn = wp + (step_wrap if tile_end else step_in)
        xn = x0 if tile_end else xp + body * 64
        assert (wp // UNIT % kc) * 64 == xp, "x chunk differs from the weight chunk"
        for d in range(body):  # x one unit ahead: 16 elements at lane offset 48 at most
            xo = xp + (d + 1) * 64 if d + 1 < body else xn
            assert 0 <= xo and xo + 64 <= k, "x read out of bounds"
        if refill:
            read_body(wn)
            if i // body + PREFETCH + 1 < bodies:
                p = ahead(wp, pc, PREFETCH + 1)
                assert 0 <= p and p + body * UNIT <= n_bytes, "prefetch out of bounds"
        wp, xp, pc = wn, xn, pc + body
        if tile_end:
            assert warp + pt not in parked
            parked[warp + pt] = (warp, pt)
            pt, pc = pt + 1, 0
        if not refill:
            break
        i += body
    if pc > 0:
        assert warp + pt not in parked
        parked[warp + pt] = (warp, pt)


def _general_warp(n, b, tile0, kc, ch0, pn, n_bytes, cover, parked, warp):
    lc = b % pn
    wp = ((tile0 + b // pn) * kc + ch0 + lc) * UNIT
    jump = (kc - pn + 1) * UNIT
    pt, pc = b // pn, b % pn
    for _ in range(n):
        assert 0 <= wp and wp + UNIT <= n_bytes, "weight read out of bounds"
        cover[wp // UNIT] += 1
        lc += 1
        wrap = lc == pn
        lc = 0 if wrap else lc
        wp += jump if wrap else UNIT
        pc = 0 if pc + 1 == pn else pc + 1
        if pc == 0:
            assert warp + pt not in parked
            parked[warp + pt] = (warp, pt)
            pt += 1
    if pc > 0:
        assert warp + pt not in parked
        parked[warp + pt] = (warp, pt)


def check_split(n_rows: int, k: int, s: int, r: int, m: int) -> None:
    tiles, kc = kg.grid_dims(n_rows, k)
    body = kg.ALIGNED_BODY[8 if m <= 8 else 16]
    aligned = k % (64 * body) == 0
    p = kg.chunks_per_rank(k, s, 8 if m <= 8 else 16)
    n_bytes = tiles * kc * UNIT
    cover = [0] * (tiles * kc)
    for blk in range(s * -(-tiles // r)):
        rank, cl = blk % s, blk // s
        tile0 = cl * r
        n_r = min(r, tiles - tile0)
        ch0 = rank * p
        pn = max(0, min(p, kc - ch0))
        total = n_r * pn
        q = -(-total // (WARPS * body)) * body if aligned else -(-total // WARPS)
        parked: dict[int, tuple[int, int]] = {}
        for warp in range(WARPS):
            b = min(total, warp * q)
            n = min(total, b + q) - b
            if n <= 0:
                continue
            if aligned:
                _aligned_warp(n, b, tile0, kc, ch0, pn, body, k, n_bytes, cover, parked, warp)
            else:
                _general_warp(n, b, tile0, kc, ch0, pn, n_bytes, cover, parked, warp)
        assert all(slot < WARPS + r for slot in parked), "park slot outside shared memory"
        if pn > 0:
            for t in range(n_r):  # the epilogue's warps for local tile t
                wa, wb = t * pn // q, min(WARPS - 1, ((t + 1) * pn - 1) // q)
                assert sorted(w for w, tt in parked.values() if tt == t) == list(range(wa, wb + 1))
    assert all(c == 1 for c in cover), "a weight unit read twice or never"


@pytest.mark.parametrize("m", [1, 9])
@pytest.mark.parametrize("k", [16, 48, 192, 256, 384, 768, 896, 1536, 4096, 4864])
def test_every_unit_once_in_bounds(k, m):
    for n_rows in (1, 17, 40, 257, 1000):
        tiles = -(-n_rows // 16)
        for s in range(1, 9):
            for r in sorted({1, 2, 3, tiles, max(1, tiles // 2)}):
                if r <= tiles:
                    check_split(n_rows, k, s, r, m)


def test_planned_splits_of_paper_shapes():
    for n_rows, k in ((6144, 4096), (4096, 12288), (10240, 5120), (5120, 25600), (896, 4864)):
        for m in (1, 16):
            s, r = kg.plan(n_rows, k, 132, kg.MAX_CLUSTER, 8 if m <= 8 else 16)
            check_split(n_rows, k, s, r, m)


@pytest.mark.parametrize("n,k,want", [
    (6144, 4096, (1, 2)),   # Qwen3-8B qkv: 1 x 3 was 11.6 µs, 1 x 2 8.8 (H200)
    (5120, 5120, (1, 2)),   # Qwen3-14B o: 1 x 3 was 14.0 µs, 1 x 2 10.1
    (4096, 12288, (1, 1)),  # unchanged picks (each the fastest timed one)
    (25600, 5120, (1, 7)),
    (151936, 4096, (1, 36)),
])
def test_m16_plans_keep_two_ctas_per_sm(n, k, want):
    """The M <= 16 class on 132 SMs (session 19 sweep, bench_results/session19/
    plan_sweep_m16.json): where two 128-register CTAs fit an SM the plan must not fall back
    to one (a unit streams 1.76x slower at one CTA per SM in that class)."""
    assert kg.plan(n, k, 132, kg.MAX_CLUSTER, 16) == want


def test_m8_plans_unchanged_by_the_m16_refit():
    """The M <= 8 class keeps its session-18 picks (plan_sweep_h200.json)."""
    assert kg.plan(6144, 4096, 132, kg.MAX_CLUSTER, 8) == (1, 1)
    assert kg.plan(151936, 4096, 132, kg.MAX_CLUSTER, 8) == (1, 24)
    assert kg.plan(25600, 5120, 132, kg.MAX_CLUSTER, 8) == (1, 5)
