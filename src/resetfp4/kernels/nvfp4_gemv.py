"""NVFP4 linear on CUDA: load-time repack, torch custom ops, small-M / large-M dispatch.

Layout produced by :func:`repack` (documented in full in ``csrc/nvfp4_common.cuh``): a
*unit* is 16 rows x 64 K (four blocks of 16, one e4m3 scale per row and block); units
``u = tile * KC + chunk`` with ``T = ceil(N / 16)`` tiles and ``KC = ceil(K / 64)`` chunks are
stored one after the other (tile-major), so the K range of a tile is one contiguous byte range.

The result is one uint8 tensor ``[T * KC, 576]``: per unit 512 code bytes, then 64 scale
bytes (one stream: the kernel reads a unit's codes and scales from one pointer).

* codes (bytes 0..511 of a unit): 32 lanes x 4 words; lane ``l`` (``g = l // 4``,
  ``t = l % 4``) holds rows ``16*tile + {g, g+8}`` of block ``t`` of the chunk; word ``s``
  is the ``mma.m16n8k16`` A fragment of K step ``s``: register ``r`` = row
  ``16*tile + g + 8*(r & 1)``, ``k = 64*chunk + 16*t + 4*s + 2*(r >> 1) + h`` (``h`` = half;
  the kernel permutes x the same way, so a lane's x values are 16 contiguous elements),
  with the code bits at the positions of :data:`CODE_BITS` (chosen so that the kernel
  decodes a register with 1-4 ALU ops).
* scales (bytes 512..575, e4m3 bits): byte ``2*l + h`` = scale of row
  ``16*tile + g + 8*h``, block ``4*chunk + t``.

Padded rows and K columns have code 0 and scale 0. Same bytes as the input (0.5625 B per
weight plus < 16 padded rows and < 64 padded columns), so the kernel reads each weight
byte exactly once.
"""

from __future__ import annotations

import math

import torch

from resetfp4.format.nvfp4 import NVFP4Tensor, unpack_codes

TILE_ROWS = 16
CHUNK_K = 64
MAX_SMALL_M = 16
MAX_CLUSTER = 8  # portable thread-block cluster size (sm_90)
MAX_K = (2**31 - 1) // 576 * 64  # a tile's K range in bytes fits an int (launch_gemv checks too)
UNIT_BYTES = 576  # one unit: 512 code bytes, then 64 scale bytes
_DTYPES = (torch.bfloat16, torch.float16)
# Bit positions (m, e0, e1, sign) of register r's low-half code in a 32-bit word; the
# high-half code sits 16 bits higher (mod 32). Mirrors decode_word in nvfp4_common.cuh.
CODE_BITS = ((0, 1, 2, 9), (6, 7, 8, 15), (10, 11, 12, 19), (4, 5, 14, 13))


def grid_dims(n: int, k: int) -> tuple[int, int]:
    """(tiles, chunks) of the repacked layout of an ``[n, k]`` weight."""
    return math.ceil(n / TILE_ROWS), math.ceil(k / CHUNK_K)


# Rows repacked at a time (bounds the int64 temporaries: ~5 bytes per weight of the chunk).
REPACK_ROWS = 4096


def repack(w: NVFP4Tensor) -> torch.Tensor:
    """NVFP4 ``[N, K]`` -> packed units, uint8 ``[T*KC, 576]`` (codes then scales)."""
    if len(w.shape) != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(w.shape)}")
    n, k = w.shape
    scales = w.block_scale.view(torch.uint8)
    parts = [_repack_rows(w.packed[r:r + REPACK_ROWS], scales[r:r + REPACK_ROWS], k)
             for r in range(0, n, REPACK_ROWS)]  # REPACK_ROWS % 16 == 0: whole tiles
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _repack_rows(packed_rows: torch.Tensor, scales: torch.Tensor, k: int) -> torch.Tensor:
    n = packed_rows.shape[0]
    tiles, kc = grid_dims(n, k)
    codes = unpack_codes(packed_rows)
    codes = torch.nn.functional.pad(codes, (0, kc * CHUNK_K - k, 0, tiles * TILE_ROWS - n))
    scales = torch.nn.functional.pad(scales, (0, kc * 4 - k // 16, 0, tiles * TILE_ROWS - n))
    c = codes.view(tiles, 2, 8, kc, 4, 4, 2, 2)  # tile, rhalf, g, chunk, t, s, pair, h
    f = c.permute(0, 3, 2, 4, 5, 6, 1, 7).reshape(tiles, kc, 8, 4, 4, 4, 2)  # r = 2*pair + rhalf
    word = torch.zeros(f.shape[:5], dtype=torch.int64, device=f.device)
    for r, bits in enumerate(CODE_BITS):
        for h in range(2):
            for b, pos in enumerate(bits):
                word |= ((f[..., r, h] >> b) & 1).long() << ((pos + 16 * h) % 32)
    word = torch.where(word >= 2**31, word - 2**32, word)  # as signed 32-bit
    word = word.to(torch.int32).contiguous()  # [tiles, kc, g, t, s] little-endian words
    packed = word.view(torch.uint8).reshape(tiles * kc, 512)
    sc = scales.view(tiles, 2, 8, kc, 4).permute(0, 3, 2, 4, 1)  # tile, chunk, g, t, rhalf
    return torch.cat([packed, sc.reshape(tiles * kc, 64)], dim=1).contiguous()


def unrepack(packed: torch.Tensor, n: int, k: int, global_scale: torch.Tensor) -> NVFP4Tensor:
    """Inverse of :func:`repack` (tests and the CPU fallback)."""
    tiles, kc = grid_dims(n, k)
    codes, scales = packed[:, :512].contiguous(), packed[:, 512:].contiguous()
    word = codes.reshape(tiles, kc, 8, 4, 16).view(torch.int32).long() & 0xFFFFFFFF  # g, t, s
    f = torch.zeros(tiles, kc, 8, 4, 4, 4, 2, dtype=torch.uint8, device=codes.device)
    for r, bits in enumerate(CODE_BITS):
        for h in range(2):
            for b, pos in enumerate(bits):
                f[..., r, h] |= (((word >> ((pos + 16 * h) % 32)) & 1) << b).to(torch.uint8)
    c = f.view(tiles, kc, 8, 4, 4, 2, 2, 2)     # tile, chunk, g, t, s, pair, rhalf, h
    c = c.permute(0, 6, 2, 1, 3, 4, 5, 7)      # tile, rhalf, g, chunk, t, s, pair, h
    full = c.reshape(tiles * TILE_ROWS, kc * CHUNK_K)[:n, :k]
    packed = full[:, 0::2] | (full[:, 1::2] << 4)
    s = scales.view(tiles, kc, 8, 4, 2).permute(0, 4, 2, 1, 3)  # tile, rhalf, g, chunk, t
    s = s.reshape(tiles * TILE_ROWS, kc * 4)[:n, :k // 16]
    return NVFP4Tensor(packed.contiguous(), s.contiguous().view(torch.float8_e4m3fn),
                       global_scale.float().reshape(()).clone())


# CTAs per SM the GEMV is built for (__launch_bounds__ in nvfp4_gemv.cu: 80 registers for
# M <= 8, 128 for M <= 16); and the most tiles per cluster whose partials still let that
# many CTAs share an SM's shared memory.
CTAS_PER_SM = {8: 3, 16: 2}
MAX_TILES_PER_CLUSTER = {8: 64, 16: 48}
# Cost model of a plan, in units (576 bytes: one 16 x 64 weight block) streamed by the
# busiest SM: a unit costs 1 + f * (CTAS_PER_SM - c) / c times more with c < CTAS_PER_SM
# resident CTAs (fewer bytes in flight; f = FEWER_CTAS_SLOWDOWN of the M class), each wave
# of CTAs on an SM costs WAVE_COST_UNITS
# (first-load latency, the end-of-CTA reduction), a cluster (S > 1) CLUSTER_COST_UNITS.
# Refit for kernel v8 on an H100 (dev/kernels/plan_sweep_v8.txt, 14 shapes x M = 1, 8, every
# candidate plan timed): one wave of CTAs with the fewest tiles each is best almost
# everywhere (a second wave costs more than the v7 fit's 50 units: 32B.qkv 1 x 2 11.6 µs vs
# 1 x 1 12.1), and no cluster plan won by more than 3% on any shape (0.5B.down: 7 x 1 8.1 µs
# vs 1 x 1 3.9), so clusters are priced out unless S = 1 would leave most SMs idle for a
# long time. The plans this picks are within 0.2% of the best timed plan summed over the
# sweep. ``tiles >= SMs`` shapes never use clusters.
# The M <= 16 class (1 or 2 CTAs of 128 registers per SM) was first swept in session 19, on
# an H200 (`bench_results/session19/plan_sweep_m16.json`, 15 shapes, every candidate timed):
# with f = 0.3 the model preferred one longer CTA per SM to more, shorter CTAs (two on some
# SMs) and lost 24-28% on two shapes (8B.qkv 1 x 3 11.6 µs vs 1 x 2 8.8; 14B.o 1 x 3 14.0 vs
# 1 x 2 10.1): a CTA streams at about a fixed rate, so its length counts for more than the
# busiest SM's units. f = 0.75 for that class; every f in 0.5..1.0 picks a plan within 2% of
# the best timed one on all 15 shapes (the SwiGLU plans do not move).
WAVE_COST_UNITS = 100
CLUSTER_COST_UNITS = 400
FEWER_CTAS_SLOWDOWN = {8: 0.3, 16: 0.75}


# Units per loop body of the kernel's aligned loop per M class (Cfg<kR>::kBody in
# nvfp4_gemv.cu), used when K % (64 * body) == 0: then each cluster rank gets whole bodies.
ALIGNED_BODY = {8: 4, 16: 2}


def chunks_per_rank(k: int, s: int, m_class: int = 8) -> int:
    """64-wide K chunks per cluster rank for cluster size ``s`` (mirrors launch_gemv)."""
    kc = math.ceil(k / CHUNK_K)
    p = math.ceil(kc / s)
    body = ALIGNED_BODY[m_class]
    if k % (CHUNK_K * body) == 0:
        p = math.ceil(p / body) * body
    return p


def _plan_cost(tiles: int, s: int, r: int, p: int, sm_count: int, per_sm: int,
               m_class: int = 8) -> float:
    """The cost model's units for the busiest SM (see :func:`plan`)."""
    ctas = s * math.ceil(tiles / r)
    cps = math.ceil(ctas / sm_count)
    c = min(cps, per_sm)
    slow = 1.0 + FEWER_CTAS_SLOWDOWN[m_class] * (per_sm - c) / c
    return (cps * r * p * slow + math.ceil(cps / per_sm) * WAVE_COST_UNITS
            + (CLUSTER_COST_UNITS if s > 1 else 0))


def plan(n: int, k: int, sm_count: int, max_cluster: int, m_class: int,
         even: bool = False) -> tuple[int, int]:
    """(cluster size S, tiles per cluster R) for the GEMV, for M <= ``m_class`` (8 or 16).

    Cluster ``c`` owns ``R`` row tiles and its ``S`` CTAs split their K range, so the grid
    has ``S * ceil(T / R)`` CTAs of ``R * ceil(KC / S)`` units each. The plan minimizes the
    cost of the busiest SM: ``cps * R * ceil(KC / S)`` units for ``cps = ceil(CTAs / SMs)``
    CTAs (times the fewer-CTAs slowdown), plus :data:`WAVE_COST_UNITS` per wave of
    ``CTAS_PER_SM`` CTAs, plus :data:`CLUSTER_COST_UNITS` when ``S > 1``; ties prefer no
    cluster, then more CTAs.
    Clusters only when there are fewer row tiles than SMs; ``max_cluster`` is 1 before
    sm_90 (no thread-block clusters). ``even``: only even R (whole gate/up tile pairs per
    CTA, :func:`swiglu_plan`; every even R up to the limit is a candidate).
    """
    tiles, kc = grid_dims(n, k)
    per_sm = CTAS_PER_SM[m_class]
    r_max = min(tiles, MAX_TILES_PER_CLUSTER[m_class])
    if even and max_cluster != 1:
        raise ValueError(f"plan(even=True) is the SwiGLU GEMV's plan, which runs without clusters: "
                         f"max_cluster must be 1, got {max_cluster}")
    if even and r_max < 2:
        raise ValueError(f"an even tile count per CTA needs at least 2 row tiles, got N={n}")
    best: tuple | None = None
    if tiles >= sm_count:
        max_cluster = 1
    for s in range(1, min(max_cluster, kc) + 1):
        p = chunks_per_rank(k, s, m_class)
        if (s - 1) * p >= kc:  # the last rank would get no chunk
            continue
        if even:
            cands = set(range(2, r_max + 1, 2))
        else:
            cands = {1, tiles}
            for cps in range(1, 3 * per_sm + 1):  # CTAs per SM the plan aims at
                cands.add(math.ceil(tiles / max(1, cps * sm_count // s)))
        for r in cands:
            r = min(r, r_max)
            cost = _plan_cost(tiles, s, r, p, sm_count, per_sm, m_class)
            key = (cost, s, -s * math.ceil(tiles / r))
            if best is None or key < best[0]:
                best = (key, s, r)
    assert best is not None
    return best[1], best[2]


def pair_bodies(m: int, n: int, k: int, cluster: int, tiles_per_cluster: int, mode: int = 1) -> bool:
    """Whether the GEMV runs pair bodies (2 tiles x ``body / 2`` chunks; each x fragment
    feeds both tiles) for this call: mirrors ``launch_gemv`` in ``csrc/nvfp4_gemv.cu``.
    ``mode`` is ``RESETFP4_GEMV_PAIR`` as the extension read it (``gemv_pair_mode()``): 1
    (default) for every M <= 8, so a row's result does not depend on how many rows share
    the call within that class; 0 never (M > 8 never: measured slower). Needs the aligned
    loop, no cluster, and an even tile count both per CTA and in all."""
    tiles, _ = grid_dims(n, k)
    return (mode == 1 and m <= 8 and k % (CHUNK_K * ALIGNED_BODY[8]) == 0
            and cluster == 1 and tiles_per_cluster % 2 == 0 and tiles % 2 == 0)


def wide_build(m: int, n: int, k: int, cluster: int, tiles_per_cluster: int, sm_count: int,
               mode: int = 1) -> bool:
    """Whether the GEMV runs its 2-CTAs-per-SM build (112 registers instead of 80) for this
    call: mirrors ``launch_gemv`` in ``csrc/nvfp4_gemv.cu``. ``mode`` is ``RESETFP4_GEMV_WIDE``
    as the extension read it (``gemv_wide_mode()``): 1 (default) for M <= 8 on the aligned
    loop when the grid has at most 2 CTAs per SM, 0 never. The choice depends on the plan,
    not on M within the class, and both builds give the same bits."""
    tiles, _ = grid_dims(n, k)
    ctas = cluster * math.ceil(tiles / tiles_per_cluster)
    return (mode == 1 and m <= 8 and k % (CHUNK_K * ALIGNED_BODY[8]) == 0
            and ctas <= 2 * sm_count)


# Bodies a warp must stream before the two-body L2 prefetch is used (kPf2MinBodies in
# nvfp4_gemv.cu).
PF2_MIN_BODIES = 7


def two_body_prefetch(m: int, n: int, k: int, cluster: int, tiles_per_cluster: int, sm_count: int,
                      mode: int = 1, pair_mode: int = 1, wide_mode: int = 1) -> bool:
    """Whether the GEMV issues its L2 prefetch after every other body, two bodies at a time
    (session 17): mirrors ``launch_gemv`` in ``csrc/nvfp4_gemv.cu``. ``mode`` is
    ``RESETFP4_GEMV_PF2`` as the extension read it (``gemv_pf2_mode()``): 1 (default) for
    M <= 8 on the aligned loop with one-tile bodies (neither pair bodies nor the wide build)
    when a warp of a full CTA streams at least :data:`PF2_MIN_BODIES` bodies; 0 never. On the
    Qwen3 shapes on 132 SMs that is 14B gate/up and down and 32B gate/up and down, and no
    Qwen3-8B layer. The arithmetic is the same either way. ``pair_mode`` / ``wide_mode``:
    ``RESETFP4_GEMV_PAIR`` / ``_WIDE`` as read (see :func:`pair_bodies`, :func:`wide_build`)."""
    if mode != 1 or m > 8 or k % (CHUNK_K * ALIGNED_BODY[8]) != 0:
        return False
    if (pair_bodies(m, n, k, cluster, tiles_per_cluster, pair_mode)
            or wide_build(m, n, k, cluster, tiles_per_cluster, sm_count, wide_mode)):
        return False
    _, kc = grid_dims(n, k)
    per_cta = tiles_per_cluster * min(chunks_per_rank(k, cluster, 8), kc)
    return math.ceil(per_cta / (8 * ALIGNED_BODY[8])) >= PF2_MIN_BODIES


def needs_exact_scales(w: NVFP4Tensor) -> bool:
    """True if some block scale is zero, subnormal or negative (one device sync).

    The kernel's fast scale decode (one integer multiply-add) is exact only for normal
    e4m3 values; otherwise it uses the general decode (two extra bf16 products per pair
    of scales).
    """
    b = w.block_scale.view(torch.uint8)
    return bool((((b & 0x78) == 0) | ((b & 0x80) != 0)).any())


def check_small_m(x: torch.Tensor) -> None:
    """The GEMV entry takes 1 <= M <= 16 rows of a 2-D x."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_SMALL_M:
        raise ValueError(f"the NVFP4 GEMV takes x [M, K] with 1 <= M <= {MAX_SMALL_M}, got shape "
                         f"{tuple(x.shape)}; use resetfp4.ops.nvfp4_linear for larger M")


# ---- SwiGLU: gate/up rows interleaved per tile ----


def interleave_rows(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Rows of ``gate`` and ``up`` (``[I, ...]`` each, ``I % 16 == 0``) interleaved per 16:
    ``[gate[0:16], up[0:16], gate[16:32], up[16:32], ...]``, the layout whose repacked
    tiles ``2j`` / ``2j + 1`` are gate / up rows ``16j..16j+15`` (:func:`nvfp4_gemv_swiglu`)."""
    if gate.shape != up.shape or gate.dim() < 1 or gate.shape[0] % TILE_ROWS:
        raise ValueError(f"gate and up must have one shape [I, ...] with I % {TILE_ROWS} == 0, got "
                         f"{tuple(gate.shape)} and {tuple(up.shape)}")
    i, rest = gate.shape[0], tuple(gate.shape[1:])
    pair = torch.stack([gate.reshape(i // TILE_ROWS, TILE_ROWS, *rest),
                        up.reshape(i // TILE_ROWS, TILE_ROWS, *rest)], dim=1)
    return pair.reshape(2 * i, *rest)


def deinterleave_cols(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gate, up)`` ``[..., I]`` views of ``y`` ``[..., 2I]``, the output of a linear whose
    rows were interleaved by :func:`interleave_rows`."""
    n = y.shape[-1]
    if n % (2 * TILE_ROWS):
        raise ValueError(f"an interleaved gate/up output has a multiple of {2 * TILE_ROWS} columns, "
                         f"got {n}")
    v = y.unflatten(-1, (n // (2 * TILE_ROWS), 2, TILE_ROWS))
    return v[..., 0, :].flatten(-2), v[..., 1, :].flatten(-2)


def interleave_gate_up(gate: NVFP4Tensor, up: NVFP4Tensor) -> NVFP4Tensor:
    """One NVFP4 weight ``[2I, K]`` from ``gate`` and ``up`` (``[I, K]``, the same global
    scale: the codes and block scales are kept exactly), rows interleaved per 16."""
    if not torch.equal(gate.global_scale.float().reshape(()), up.global_scale.float().reshape(())):
        raise ValueError("gate and up have different global scales; requantize them with one scale "
                         "to fuse them exactly")
    return NVFP4Tensor(interleave_rows(gate.packed, up.packed),
                       interleave_rows(gate.block_scale.view(torch.uint8), up.block_scale.view(torch.uint8))
                       .view(torch.float8_e4m3fn), gate.global_scale)


def swiglu_plan(n: int, k: int, sm_count: int, m_class: int) -> int:
    """Tiles per CTA of :func:`nvfp4_gemv_swiglu` for the interleaved ``[n, k]`` weight: the
    :func:`plan` cost model without clusters (the epilogue needs a CTA to finish whole tiles)
    over even tile counts (a CTA owns whole gate/up tile pairs).

    Until session 18 this rounded the unrestricted plan's R up to even, which for a Qwen3-32B
    gate/up (3200 tiles: R 5 -> 6, 534 CTAs, two waves) cost 4-6% against the best even R
    (10: 320 CTAs, one wave; H200, ``dev/kernels/swiglu_plan_sweep.py``). Over the even R the
    cost model picks the fastest timed R of each swept shape."""
    return plan(n, k, sm_count, 1, m_class, even=True)[1]


def swiglu_ref(gu: torch.Tensor, g_q: torch.Tensor | None) -> torch.Tensor:
    """What :func:`nvfp4_gemv_swiglu` computes from the GEMV output ``gu`` ``[M, 2I]`` of the
    interleaved weight (bf16/fp16, as the plain GEMV rounds it): ``silu(gate) * up`` with
    torch's eager roundings, then (``g_q``) the NVFP4 round trip without its global scale
    (``act_quant.fake_quant_ref``)."""
    from resetfp4.engine.act_quant import fake_quant_ref

    g, u = deinterleave_cols(gu)
    h = torch.nn.functional.silu(g) * u
    return fake_quant_ref(h, g_q) if g_q is not None else h


# ---- custom ops (registered lazily: the library needs no GPU to import) ----

def _ext():
    from resetfp4.kernels.build import load_extension
    return load_extension()


def _raise(err: str) -> None:
    """The extension returns an error message ('' on success) instead of throwing."""
    if err:
        raise RuntimeError(err)


def _check_tensor(name: str, t: torch.Tensor, dtypes: tuple, shape: tuple | None,
                  device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {t.dtype}; expected {' or '.join(map(str, dtypes))}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {shape}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}; expected {device} (where x is)")
    if not t.is_contiguous():
        raise ValueError(f"{name} with shape {tuple(t.shape)} is not contiguous")


def _need_cuda(t: torch.Tensor) -> None:
    """The raw ops launch CUDA kernels; say what to use for CPU tensors."""
    if t.device.type != "cuda":
        raise ValueError(
            f"the raw resetfp4 kernel ops run on CUDA tensors; got tensors on {t.device}. "
            "resetfp4.ops.nvfp4_linear runs the float reference on CPU"
        )


def check_gemv_args(x: torch.Tensor, packed: torch.Tensor, g_w: torch.Tensor,
                    g_x: torch.Tensor | None, bias: torch.Tensor | None, n: int,
                    cluster: int, tiles_per_cluster: int) -> None:
    """Everything the GEMV kernel assumes, checked before it runs (a wrong pointer or size
    would make it read or write out of bounds)."""
    check_small_m(x)
    _check_tensor("x", x, _DTYPES, None, x.device)
    if x.data_ptr() % 16:
        raise ValueError("x must start on a 16-byte boundary (the kernel reads it 16 bytes at a "
                         "time); pass x.clone()")
    k = x.shape[1]
    if k < 16 or k % 16:
        raise ValueError(f"x has K={k}; the NVFP4 GEMV needs K a positive multiple of 16")
    if k > MAX_K:
        raise ValueError(f"x has K={k}; the NVFP4 GEMV takes K <= {MAX_K} (the byte offset of a "
                         "tile's K range must fit 32 bits); use resetfp4.ops.nvfp4_linear with "
                         "M > 16 (dequantize + matmul)")
    if n < 1:
        raise ValueError(f"the weight has N={n}; need N >= 1")
    tiles, kc = grid_dims(n, k)
    _check_tensor("packed", packed, (torch.uint8,), (tiles * kc, UNIT_BYTES), x.device)
    _check_tensor("g_w", g_w, (torch.float32,), None, x.device)
    if g_w.numel() != 1:
        raise ValueError(f"g_w must hold one fp32 value, got shape {tuple(g_w.shape)}")
    if g_x is not None:
        _check_tensor("g_x", g_x, (torch.float32,), None, x.device)
        if g_x.numel() != 1:
            raise ValueError(f"g_x must hold one fp32 value, got shape {tuple(g_x.shape)}")
    if bias is not None:
        _check_tensor("bias", bias, (x.dtype,), (n,), x.device)
    if not 1 <= cluster <= MAX_CLUSTER:
        raise ValueError(f"cluster={cluster}; the cluster size must be in 1..{MAX_CLUSTER}")
    if not 1 <= tiles_per_cluster <= tiles:
        raise ValueError(f"tiles_per_cluster={tiles_per_cluster}; must be in 1..{tiles} "
                         f"(ceil(N/16) for N={n})")


@torch.library.custom_op("resetfp4::nvfp4_gemv_out", mutates_args=("y",))
def nvfp4_gemv_out(x: torch.Tensor, packed: torch.Tensor, g_w: torch.Tensor,
                   g_x: torch.Tensor | None, bias: torch.Tensor | None,
                   y: torch.Tensor, cluster: int, tiles_per_cluster: int,
                   exact: bool = True) -> None:
    """y[M, N] = (x[M, K] @ dequant(W)^T) * g_x + bias; M <= 16; allocates nothing.

    ``cluster``, ``tiles_per_cluster``: the work split, :func:`plan` for this M's class
    (``cluster > 1`` needs sm_90). ``exact=False`` selects the faster scale decode, valid
    only when every block scale is a normal e4m3 (:func:`needs_exact_scales`). W4A4: x is
    the quantizer's dequantized activation and ``g_x`` its global scale (fp32 ``[1]``).
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 2:
        raise ValueError(f"y must be a 2-D [M, N] tensor, got {getattr(y, 'shape', type(y))}")
    check_gemv_args(x, packed, g_w, g_x, bias, y.shape[1], cluster, tiles_per_cluster)
    _check_tensor("y", y, (x.dtype,), (x.shape[0], y.shape[1]), x.device)
    _need_cuda(x)
    with torch.cuda.device(x.device):  # launch on x's GPU, whatever device is current
        _raise(_ext().gemv(x, packed, g_w, g_x, bias, y, cluster, tiles_per_cluster, exact))


@torch.library.custom_op("resetfp4::nvfp4_gemv", mutates_args=())
def nvfp4_gemv(x: torch.Tensor, packed: torch.Tensor, g_w: torch.Tensor,
               g_x: torch.Tensor | None, bias: torch.Tensor | None, cluster: int,
               tiles_per_cluster: int, n: int, exact: bool = True) -> torch.Tensor:
    """Functional form of :func:`nvfp4_gemv_out`: returns a new ``[M, n]`` in x.dtype."""
    check_gemv_args(x, packed, g_w, g_x, bias, n, cluster, tiles_per_cluster)
    y = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    _need_cuda(x)
    with torch.cuda.device(x.device):
        _raise(_ext().gemv(x, packed, g_w, g_x, bias, y, cluster, tiles_per_cluster, exact))
    return y


@nvfp4_gemv.register_fake
def _(x, packed, g_w, g_x, bias, cluster, tiles_per_cluster, n, exact=True):
    return x.new_empty(x.shape[0], n)


def check_swiglu_args(x: torch.Tensor, packed: torch.Tensor, g_w: torch.Tensor,
                      g_x: torch.Tensor | None, g_q: torch.Tensor | None, bias: torch.Tensor | None,
                      inter: int, tiles_per_cta: int) -> None:
    """:func:`check_gemv_args` for the interleaved ``[2 * inter, K]`` gate/up weight, plus
    what the SwiGLU epilogue needs (``inter % 16 == 0``, an even tile count per CTA)."""
    if inter < 1 or inter % TILE_ROWS:
        raise ValueError(f"the SwiGLU GEMV needs the intermediate size I % {TILE_ROWS} == 0, got I={inter} "
                         "(interleave_rows pairs 16-row tiles of gate and up)")
    check_gemv_args(x, packed, g_w, g_x, bias, 2 * inter, 1, tiles_per_cta)
    if tiles_per_cta % 2:
        raise ValueError(f"tiles_per_cta={tiles_per_cta}; the SwiGLU GEMV needs it even (whole gate/up "
                         "tile pairs), see swiglu_plan")
    if g_q is not None:
        _check_tensor("g_q", g_q, (torch.float32,), None, x.device)
        if g_q.numel() != 1:
            raise ValueError(f"g_q must hold one fp32 value, got shape {tuple(g_q.shape)}")


@torch.library.custom_op("resetfp4::nvfp4_gemv_swiglu_out", mutates_args=("h",))
def nvfp4_gemv_swiglu_out(x: torch.Tensor, packed: torch.Tensor, g_w: torch.Tensor,
                          g_x: torch.Tensor | None, g_q: torch.Tensor | None,
                          bias: torch.Tensor | None, h: torch.Tensor, tiles_per_cta: int,
                          exact: bool = True) -> None:
    """``h[M, I] = silu(gate) * up`` for the gate/up weight ``[2I, K]`` repacked from
    :func:`interleave_gate_up` (and ``bias`` interleaved the same way), in one launch; M <= 16;
    allocates nothing.

    gate and up are :func:`nvfp4_gemv_out`'s values (bitwise, for the same S = 1 and
    ``tiles_per_cta``), each rounded to x.dtype; silu and the product are rounded as torch
    eager rounds them (:func:`swiglu_ref`). ``g_q`` (fp32 ``[1]``, the next linear's
    ``input_scale``): ``h`` is quantized like ``resetfp4.nvfp4.quantize(h, global_scale=g_q)``
    and holds ``e2m1(code) * block_scale``, what the W4A4 GEMV reads with ``g_x = g_q``.
    ``g_x``: as in :func:`nvfp4_gemv_out` (x already quantized, W4A4).
    """
    if not isinstance(h, torch.Tensor) or h.dim() != 2:
        raise ValueError(f"h must be a 2-D [M, I] tensor, got {getattr(h, 'shape', type(h))}")
    check_swiglu_args(x, packed, g_w, g_x, g_q, bias, h.shape[1], tiles_per_cta)
    _check_tensor("h", h, (x.dtype,), (x.shape[0], h.shape[1]), x.device)
    _need_cuda(x)
    with torch.cuda.device(x.device):
        _raise(_ext().gemv_swiglu(x, packed, g_w, g_x, g_q, bias, h, tiles_per_cta, exact))


@torch.library.custom_op("resetfp4::nvfp4_gemv_swiglu", mutates_args=())
def nvfp4_gemv_swiglu(x: torch.Tensor, packed: torch.Tensor, g_w: torch.Tensor,
                      g_x: torch.Tensor | None, g_q: torch.Tensor | None,
                      bias: torch.Tensor | None, tiles_per_cta: int, inter: int,
                      exact: bool = True) -> torch.Tensor:
    """Functional form of :func:`nvfp4_gemv_swiglu_out`: a new ``[M, inter]`` in x.dtype."""
    check_swiglu_args(x, packed, g_w, g_x, g_q, bias, inter, tiles_per_cta)
    h = torch.empty(x.shape[0], inter, dtype=x.dtype, device=x.device)
    _need_cuda(x)
    with torch.cuda.device(x.device):
        _raise(_ext().gemv_swiglu(x, packed, g_w, g_x, g_q, bias, h, tiles_per_cta, exact))
    return h


@nvfp4_gemv_swiglu.register_fake
def _(x, packed, g_w, g_x, g_q, bias, tiles_per_cta, inter, exact=True):
    return x.new_empty(x.shape[0], inter)


@nvfp4_gemv_swiglu_out.register_fake
def _(x, packed, g_w, g_x, g_q, bias, h, tiles_per_cta, exact=True):
    return None


@torch.library.custom_op("resetfp4::nvfp4_quant_act",
                         mutates_args=("sync", "gs_out", "xq", "codes", "scales"))
def nvfp4_quant_act(x: torch.Tensor, gs_static: torch.Tensor | None, sync: torch.Tensor,
                    gs_out: torch.Tensor, xq: torch.Tensor, codes: torch.Tensor,
                    scales: torch.Tensor) -> None:
    """Quantize x [M, K] like ``resetfp4.nvfp4.quantize`` (one launch, no host sync).

    Writes codes (uint8 [M, K/2]), scales (uint8 e4m3 bits [M, K/16]), the global scale
    (fp32 [1]) and ``xq = e2m1(code) * fp32(scale)`` (x.dtype [M, K], exact).
    """
    _check_tensor("x", x, _DTYPES, None, x.device)
    if x.dim() != 2 or x.shape[1] % 16:
        raise ValueError(f"x must be [M, K] with K % 16 == 0, got {tuple(x.shape)}")
    m, k = x.shape
    _check_tensor("xq", xq, (x.dtype,), (m, k), x.device)
    _check_tensor("codes", codes, (torch.uint8,), (m, k // 2), x.device)
    _check_tensor("scales", scales, (torch.uint8,), (m, k // 16), x.device)
    _check_tensor("sync", sync, (torch.int32,), (4,), x.device)
    _check_tensor("gs_out", gs_out, (torch.float32,), (1,), x.device)
    if gs_static is not None:
        _check_tensor("gs_static", gs_static, (torch.float32,), (1,), x.device)
    _need_cuda(x)
    with torch.cuda.device(x.device):
        _raise(_ext().quant_act(x, gs_static, sync, gs_out, xq, codes, scales))


@torch.library.custom_op("resetfp4::nvfp4_dequant", mutates_args=("w",))
def nvfp4_dequant(packed: torch.Tensor, g_w: torch.Tensor, w: torch.Tensor) -> None:
    """w[N, K] = e2m1(code) * (fp32(scale) * g_w) in w.dtype (bit-exact dequantize)."""
    _check_tensor("w", w, _DTYPES, None, w.device)
    if w.dim() != 2 or w.shape[1] % 16 or w.shape[1] < 16:
        raise ValueError(f"w must be [N, K] with K a positive multiple of 16, got {tuple(w.shape)}")
    tiles, kc = grid_dims(w.shape[0], w.shape[1])
    _check_tensor("packed", packed, (torch.uint8,), (tiles * kc, UNIT_BYTES), w.device)
    _check_tensor("g_w", g_w, (torch.float32,), None, w.device)
    if g_w.numel() != 1:
        raise ValueError(f"g_w must hold one fp32 value, got shape {tuple(g_w.shape)}")
    _need_cuda(w)
    with torch.cuda.device(w.device):
        _raise(_ext().dequant(packed, g_w, w))


class ActWorkspace:
    """Preallocated buffers for quantizing up to ``rows`` activation rows of width k."""

    def __init__(self, rows: int, k: int, dtype: torch.dtype, device: torch.device) -> None:
        self.gs = torch.ones(1, dtype=torch.float32, device=device)
        # grid-wide amax: {amax bits, arrived, left, unused}, zero at rest
        self.sync = torch.zeros(4, dtype=torch.int32, device=device)
        self.xq = torch.empty(rows, k, dtype=dtype, device=device)
        self.codes = torch.empty(rows, k // 2, dtype=torch.uint8, device=device)
        self.scales = torch.empty(rows, k // 16, dtype=torch.uint8, device=device)

    def quantize(self, x: torch.Tensor, gs_static: torch.Tensor | None) -> torch.Tensor:
        m = x.shape[0]
        xq, codes, scales = self.xq[:m], self.codes[:m], self.scales[:m]
        nvfp4_quant_act(x, gs_static, self.sync, self.gs, xq, codes, scales)
        return xq


@nvfp4_gemv_out.register_fake
def _(x, packed, g_w, g_x, bias, y, cluster, tiles_per_cluster, exact=True):
    return None


@nvfp4_quant_act.register_fake
def _(x, gs_static, sync, gs_out, xq, codes, scales):
    return None


@nvfp4_dequant.register_fake
def _(packed, g_w, w):
    return None
