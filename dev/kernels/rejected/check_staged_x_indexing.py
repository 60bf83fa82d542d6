"""CPU check of gemv_staged_x.patch's indexing, before any GPU time is spent on it.

Mirrors the aligned loop of ``gemv_kernel`` (pointer walk per warp: bodies of kCh chunks of
kT tiles, the one-chunk-ahead x loads, the wrap to chunk 0 at a tile's end) twice: with x
read from global memory (chunk index) and with x read from the warp's staged buffer
(position), and checks for every CTA, warp and x read of many plans that
  * the staged buffer holds, at the position read, the chunk the global loop reads;
  * every staged read is inside the warp's buffer (spare chunk included) and every staged
    write inside it too;
  * the buffers of the largest CTA (what the host allocates) cover every CTA's.
Plans: Qwen3 / odd shapes, M classes 8 and 16, cluster sizes 1..8, pair and single bodies.

    python3 dev/kernels/rejected/check_staged_x_indexing.py
"""

from __future__ import annotations

import itertools

WARPS = 8


def xs_chunks(q: int, kt: int, pn: int) -> int:
    return min(q // kt, pn) + 1


def check_cta(tiles: int, kc: int, s: int, r: int, p: int, kt: int, body: int, cl: int, rank: int,
              host_chunks: int) -> int:
    kch = body // kt
    tile0 = cl * r
    nr = min(r, tiles - tile0)
    ch0 = rank * p
    pn = max(0, min(p, kc - ch0))
    total = nr * pn
    q = (total + WARPS * body - 1) // (WARPS * body) * body
    reads = 0
    for w in range(WARPS):
        b = min(total, w * q)
        n = min(total, b + q) - b
        if n <= 0:
            continue
        assert n % body == 0, (n, body)
        pt, pc = b // (kt * pn), b // kt % pn
        nch = xs_chunks(q, kt, pn) - 1
        assert nch + 1 <= host_chunks, "host buffer smaller than a CTA's"
        natural = n // kt >= pn
        c0 = 0 if natural else pc
        staged = {}  # position -> chunk
        for pos in range(nch):
            c = c0 + pos
            staged[pos] = c - pn if c >= pn else c
        p0 = 0 if (natural or c0 == 0) else min(pn - c0, nch)
        # pointers: global chunk index g_*, staged position s_*
        g_x0, s_x0 = 0, p0
        g_xp, s_xp = pc, (pc if natural else 0)
        i = 0
        while True:
            last = i + body >= n
            tile_end = pc + kch == pn
            g_xn = g_x0 if tile_end else g_xp + kch
            s_xn = s_x0 if tile_end else s_xp + kch
            # chunk d of the body is consumed from (xp + d); the loads: xp (before the loop
            # or by the previous body), then one ahead at each d.
            for d in range(kch):
                g_read, s_read = (g_xp + d + 1, s_xp + d + 1) if d + 1 < kch else (g_xn, s_xn)
                consumed_g, consumed_s = g_xp + d, s_xp + d
                assert consumed_g == pc + d, (consumed_g, pc, d)
                assert 0 <= consumed_s < nch, ("consumed position outside the staged chunks", consumed_s, nch)
                assert staged[consumed_s] == consumed_g, ("wrong chunk", consumed_s, consumed_g)
                assert 0 <= s_read <= nch, ("read past the spare chunk", s_read, nch)
                if not (last and d + 1 == kch):  # every read but the last one-ahead is consumed
                    assert s_read < nch and staged[s_read] == g_read, (s_read, g_read)
                reads += 1
            g_xp, s_xp = g_xn, s_xn
            pc += kch
            if tile_end:
                pt += 1
                pc = 0
            if last:
                break
            i += body
    return reads


def plan_grid():
    shapes = [(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288), (151936, 4096), (64, 256),
              (4104, 4096), (1024, 896 * 4), (7168, 5120), (5120, 17408), (256, 1024), (48, 512)]
    for (n, k), mcls in itertools.product(shapes, (8, 16)):
        body = 4 if mcls == 8 else 2
        if k % (64 * body):
            continue
        tiles, kc = -(-n // 16), k // 64
        for s in (1, 2, 3, 4, 8):
            p = -(-kc // s)
            p = -(-p // body) * body
            if (s - 1) * p >= kc:
                continue
            for r in sorted({1, 2, 3, 4, 6, 8, 24, min(tiles, 64)}):
                if r > tiles:
                    continue
                for kt in (1, 2):
                    if kt == 2 and (mcls == 16 or s != 1 or r % 2 or tiles % 2):
                        continue
                    yield tiles, kc, s, r, p, kt, body


def main() -> None:
    plans = reads = 0
    for tiles, kc, s, r, p, kt, body in plan_grid():
        pn_full = min(p, kc)
        total = r * pn_full
        q = (total + WARPS * body - 1) // (WARPS * body) * body
        host_chunks = xs_chunks(q, kt, pn_full)
        for cl in range(-(-tiles // r)):
            for rank in range(s):
                reads += check_cta(tiles, kc, s, r, p, kt, body, cl, rank, host_chunks)
        plans += 1
    print(f"staged-x indexing: {plans} plans, {reads} x reads checked, all consistent")


if __name__ == "__main__":
    main()
