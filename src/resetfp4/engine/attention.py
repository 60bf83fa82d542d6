"""Decode attention (one query token per row) with the KV length split across programs.

At decode, ``F.scaled_dot_product_attention`` with the engine's additive mask runs one
program per (row, KV head) that walks every cached position: at batch 1 with 8 KV heads
that is 8 programs on a 132-SM GPU, measured at ~20 µs per layer for 768 positions on an
H200 (``resetfp4 bench decode`` profile), 13% of an NVFP4 decode step.
:func:`decode_attention` splits the positions ``[0, attn_len)`` into chunks so that about
two programs per SM run ("flash decoding"):

1. ``_attn_split_kernel`` grid ``(B * H_kv, S)``: the ``rep`` query heads that share KV head
   ``h`` (padded to 16 rows for ``tl.dot``) against the keys of chunk ``s`` that are
   ``<= pos[b]``; online softmax in fp32; writes the chunk's un-normalised output, row max
   and row sum (fp32).
2. ``_attn_combine_kernel`` grid ``(B * H_kv, rep)``: per query row, loads the S partials
   at once, rescales them to the common max and divides by the total sum. (Session 2 ran
   one program per (row, KV head) that looped over the splits and all 16 padded rows:
   6.3 µs per layer at batch 1 on an H100, more than the split kernel; now 1.8 µs.)

:func:`decode_attention_fused` (what the engine's decode step runs) takes the raw q/k/v
projections instead: the split kernel also applies the per-head RMSNorm (Qwen3) and RoPE,
and the split that owns position ``pos[b]`` writes the new key and value into the cache.
On sm_90, from :data:`CUDA_MIN_ROWS` (row, KV head) pairs on, one CUDA kernel does all of
it instead (``kernels/csrc/decode_attention.cu``): its split CTAs form a thread-block
cluster and combine their partials through distributed shared memory.
That replaces the two small elementwise kernels (query heads; key heads + cache write)
that Inductor generated around attention in every layer (~1.8 µs each at batch 1 on an
H100, plus a launch gap; session-4 profile in docs/bench_decode.md).

Semantics = SDPA over keys ``0..pos[b]`` (inclusive) with scale ``1/sqrt(head_dim)``;
``p`` is rounded to the activation dtype before ``p @ V`` (as flash attention does),
everything else is fp32. Static shapes and no host sync: CUDA-graph capturable.
:func:`decode_attention_ref` is the float64 reference.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch
from torch import Tensor

_HAS_TRITON = importlib.util.find_spec("triton") is not None

# The one-kernel CUDA path of decode_attention_fused (sm_90 clusters; see cuda_serves), used
# for at least CUDA_MIN_ROWS (row, KV head) pairs. In the Qwen3-8B decode step (H100, gen
# 1024, session 8; W4A16 ms per step, alternating runs) it is faster at batch 8 (3.404 ->
# 3.193) and batch 4 (2.955 -> 2.856), slower at batch 1 (2.565 -> 2.784), so batch 1
# keeps the two Triton kernels.
# RESETFP4_ATTN_CUDA (read at import): 0 never, 1 (default) from CUDA_MIN_ROWS, 2 always.
_ATTN_CUDA_ENV = os.environ.get("RESETFP4_ATTN_CUDA", "1")
CUDA_ATTENTION = _ATTN_CUDA_ENV != "0"
CUDA_MIN_ROWS = 1 if _ATTN_CUDA_ENV == "2" else 32
CUDA_MAX_SPLITS = 8  # CTAs per cluster: portable sizes (16 measured slower at batch 1: 9.15 vs 8.26 µs)
CUDA_TILE = 64  # keys per tile of the CUDA kernel
# Tiles each CTA requests before the PDL wait (cached keys, whatever pos is): both ring
# stages at batch <= CUDA_PRE_ROWS (row, KV head) pairs, else one (keys past pos are then
# never read). RESETFP4_ATTN_PRE overrides (0, 1 or 2).
CUDA_PRE_ROWS = 16
_PRE_ENV = os.environ.get("RESETFP4_ATTN_PRE")
if _PRE_ENV is not None and _PRE_ENV not in ("0", "1", "2"):
    raise ValueError(f"RESETFP4_ATTN_PRE={_PRE_ENV!r}: use 0, 1 or 2 (tiles requested before the PDL wait), "
                     "or unset it")

BLOCK_N = 64  # keys per inner tile
PROGRAMS_PER_SM = 2  # split-KV programs per SM the split count aims at (dev/engine/attn_sweep.py)
MIN_ROWS = 16  # tl.dot needs >= 16 rows: the rep query heads are padded to this
# num_warps of the fused split kernel (Triton): SPLIT_WARPS_ONE_TILE when each split is one
# tile (the tile loaded before the PDL wait) and the grid has at most one program per SM,
# else SPLIT_WARPS. Session 13 (H100, Qwen3-8B batch-1 step at 640 positions: 128 one-tile
# programs; W4A16 + NVFP4 head, gen 128, two alternating runs): 8 warps 2.1205 / 2.1297 ms
# per step against 2.2072 / 2.2008 with 4. With 8 warps a program holds ~218 registers per
# thread, most of an SM's (dev/engine/triton_regs.py), so a larger grid would run in waves;
# that case, and the multi-tile loop with 8 warps, were not timed and keep 4.
SPLIT_WARPS_ONE_TILE = 8
SPLIT_WARPS = 4


def available(q: Tensor) -> bool:
    """Whether :func:`decode_attention` serves ``q`` ``[B, H_kv, rep, D]`` (CUDA, bf16/fp16,
    power-of-two head_dim 16..256, Triton importable)."""
    if not q.is_cuda or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    d = q.shape[-1]
    return _HAS_TRITON and 16 <= d <= 256 and d & (d - 1) == 0


def split_warps(programs: int, one_tile: bool, sm_count: int) -> int:
    """num_warps of the fused split kernel for a grid of ``programs`` (see
    :data:`SPLIT_WARPS_ONE_TILE`)."""
    return SPLIT_WARPS_ONE_TILE if one_tile and programs <= sm_count else SPLIT_WARPS


def num_splits(rows: int, attn_len: int, sm_count: int) -> tuple[int, int]:
    """``(splits, chunk)``: about ``PROGRAMS_PER_SM * sm_count`` programs in all; ``chunk``
    keys per split, a multiple of :data:`BLOCK_N`; ``splits * chunk >= attn_len``."""
    tiles = -(-attn_len // BLOCK_N)
    want = max(1, min(tiles, -(-PROGRAMS_PER_SM * sm_count // max(rows, 1))))
    chunk = -(-tiles // want) * BLOCK_N
    return -(-attn_len // chunk), chunk


def decode_attention_ref(q: Tensor, k: Tensor, v: Tensor, pos: Tensor) -> Tensor:
    """float64 reference: ``q`` ``[B, H_kv, rep, D]``, ``k``/``v`` ``[B, H_kv, S, D]``, ``pos``
    int64 ``[B]`` (keys ``0..pos[b]`` attended) -> ``[B, H_kv, rep, D]`` in ``q.dtype``."""
    qd, kd, vd = q.double(), k.double(), v.double()
    s = qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1])
    keys = torch.arange(k.shape[2], device=q.device)
    s = s.masked_fill((keys[None, :] > pos[:, None])[:, None, None, :], float("-inf"))
    return (torch.softmax(s, dim=-1) @ vd).to(q.dtype)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, pos: Tensor) -> Tensor:
    """Attention of one query token per row.

    Args:
        q: ``[B, H_kv, rep, D]`` bf16/fp16 (query head ``h * rep + r`` reads KV head ``h``);
            the last dim contiguous.
        k, v: ``[B, H_kv, S, D]`` (views of the KV cache are fine; last dim contiguous),
            same dtype; positions ``>= S`` are never read.
        pos: int64 ``[B]``, ``pos[b] >= 0``: row ``b`` attends keys ``0..min(pos[b], S - 1)``
            (the engine's mask semantics: an idle slot may run past ``S``).
    Returns:
        ``[B, H_kv, rep, D]`` in ``q.dtype``.
    """
    return torch.ops.resetfp4_engine.decode_attention(q, k, v, pos)


@torch.library.custom_op("resetfp4_engine::decode_attention", mutates_args=())
def _decode_attention_op(q: Tensor, k: Tensor, v: Tensor, pos: Tensor) -> Tensor:
    b, h_kv, rep, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (b, h_kv) or k.shape[3] != d:
        raise ValueError(f"decode_attention: q {tuple(q.shape)} needs k, v [B, H_kv, S, D]; "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("decode_attention: the last dim of q, k and v must be contiguous")
    if pos.shape != (b,) or pos.dtype != torch.int64:
        raise ValueError(f"decode_attention: pos must be int64 [{b}], got {pos.dtype} {tuple(pos.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"decode_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (k.device == v.device == pos.device == q.device):
        raise ValueError(f"decode_attention: q, k, v, pos must be on one device, got {q.device}, "
                         f"{k.device}, {v.device}, {pos.device}")
    # The kernel reads pos[b] at pos_ptr + b: a broadcast view (e.g. arange(1).expand(B, 1)[:, 0],
    # stride 0) must become a real [B] tensor (a no-op for the engine's contiguous positions).
    pos = pos.contiguous()
    from resetfp4.engine import attention_kernels as ak

    splits, chunk, rows, acc, ml, out = _workspace(q, b, h_kv, rep, d, k.shape[2], _sm_count(q))
    ak.launch(q, k, v, pos, acc, ml, out, splits, chunk, rows, BLOCK_N, 1.0 / math.sqrt(d))
    return out


def _sm_count(q: Tensor) -> int:
    """SMs of ``q``'s GPU (132, an H100's, for a CPU tensor: split sizing only)."""
    return torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 132


def _workspace(q: Tensor, b: int, h_kv: int, rep: int, d: int, attn_len: int, sms: int):
    """Split sizing for ``sms`` SMs and buffers of both ops: ``(splits, chunk, rows, acc, ml,
    out)`` with the fp32 per-split partials ``acc`` ``[B*H_kv, splits, rows, D]``, ``ml`` (row
    max, row sum) ``[B*H_kv, splits, 2, rows]`` and the output ``[B, H_kv, rep, D]`` in
    ``q.dtype``."""
    splits, chunk = num_splits(b * h_kv, attn_len, sms)
    rows = max(MIN_ROWS, 1 << (rep - 1).bit_length())
    acc = torch.empty(b * h_kv, splits, rows, d, dtype=torch.float32, device=q.device)
    ml = torch.empty(b * h_kv, splits, 2, rows, dtype=torch.float32, device=q.device)
    out = torch.empty(b, h_kv, rep, d, dtype=q.dtype, device=q.device)
    return splits, chunk, rows, acc, ml, out


@_decode_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, pos: Tensor) -> Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def fused_available(q: Tensor, head_dim: int) -> bool:
    """Whether :func:`decode_attention_fused` serves raw projections like ``q`` ``[B, H*D]``."""
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and _HAS_TRITON
            and 16 <= head_dim <= 256 and head_dim & (head_dim - 1) == 0)


def prep_heads_ref(raw: Tensor, heads: int, w: Tensor | None, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """The eager model's head preparation: ``raw`` ``[B, heads*D]`` -> ``[B, heads, D]``,
    per-head RMSNorm with weight ``w`` (if given), then rotate-half RoPE with ``cos`` /
    signed ``sin`` ``[B, D]`` (same ops, same dtype roundings as ``model.Attention``)."""
    b = raw.shape[0]
    x = raw.reshape(b, heads, -1)
    if w is not None:
        x = w * torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)
    half = x.shape[-1] // 2
    return x * cos[:, None] + torch.cat((x[..., half:], x[..., :half]), dim=-1) * sin[:, None]


def decode_attention_fused_ref(q: Tensor, k: Tensor, v: Tensor, q_w: Tensor | None, k_w: Tensor | None,
                               eps: float, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor,
                               pos: Tensor, attn_len: int, out_scale: Tensor | None = None) -> Tensor:
    """Reference of :func:`decode_attention_fused` (eager head preparation, cache write,
    float64 attention, then ``act_quant.fake_quant_ref`` with ``out_scale``); mutates the
    caches the same way."""
    b, h_kv, d = q.shape[0], k_cache.shape[1], k_cache.shape[3]
    qh = prep_heads_ref(q, q.shape[1] // d, q_w, eps, cos, sin)
    kh = prep_heads_ref(k, h_kv, k_w, eps, cos, sin)
    vh = v.reshape(b, h_kv, d)
    for r in range(b):
        p = int(pos[r])
        if p < k_cache.shape[2]:
            k_cache[r, :, p] = kh[r].to(k_cache.dtype)
            v_cache[r, :, p] = vh[r].to(v_cache.dtype)
    q4 = qh.reshape(b, h_kv, -1, d)
    o = decode_attention_ref(q4, k_cache[:b, :, :attn_len], v_cache[:b, :, :attn_len], pos)
    if out_scale is not None:
        from resetfp4.engine.act_quant import fake_quant_ref

        o = fake_quant_ref(o, out_scale)
    return o


def decode_attention_fused(q: Tensor, k: Tensor, v: Tensor, q_w: Tensor | None, k_w: Tensor | None,
                           eps: float, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor,
                           pos: Tensor, attn_len: int, out_scale: Tensor | None = None) -> Tensor:
    """Decode attention from the raw projections of one token per row.

    Args:
        q: ``[B, H*D]`` query projection (rows may be strided, e.g. a slice of the fused
            qkv output; the last dim contiguous); ``k``, ``v``: ``[B, H_kv*D]`` likewise.
        q_w, k_w: the per-head RMSNorm weights ``[D]`` (Qwen3) or both ``None``.
        eps: that norm's epsilon.
        cos, sin: ``[B, D]`` RoPE rows at each row's position (``sin`` signed, see
            ``model.rope_tables``), activation dtype.
        k_cache, v_cache: ``[max_batch, H_kv, max_seq, D]``; rows ``0..B-1`` are used. The
            new key/value of row ``b`` is written at ``pos[b]`` (when ``< max_seq``).
        pos: int64 ``[B]``, ``pos[b] >= 0``; row ``b`` attends keys ``0..min(pos[b], attn_len - 1)``.
        attn_len: cache positions attended (the decode step's KV bucket).
        out_scale: fp32 [1], the W4A4 o_proj's ``input_scale``: the output is then its
            NVFP4 round trip without the global scale (``act_quant``), what that GEMV reads.
    Returns:
        ``[B, H_kv, rep, D]`` in the activation dtype, as :func:`decode_attention`.

    On an NVIDIA GPU of compute capability 9.0+ the kernels are launched with programmatic
    dependent launch, and a one-tile split (Triton) or the first one or two tiles of a split
    (the CUDA kernel) load their cached keys/values before waiting for the kernel before it.
    So the caches must not be written by a kernel that runs just before this one *and*
    signals its dependents early (``griddepcontrol.launch_dependents``) before it writes
    them; plain launches (every torch op) finish first and are safe.
    """
    return torch.ops.resetfp4_engine.decode_attention_fused(
        q, k, v, q_w, k_w, eps, cos, sin, k_cache, v_cache, pos, attn_len, out_scale)


@torch.library.custom_op("resetfp4_engine::decode_attention_fused", mutates_args=("k_cache", "v_cache"))
def _decode_attention_fused_op(q: Tensor, k: Tensor, v: Tensor, q_w: Tensor | None, k_w: Tensor | None,
                               eps: float, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor,
                               pos: Tensor, attn_len: int, out_scale: Tensor | None = None) -> Tensor:
    b = q.shape[0]
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"decode_attention_fused: k_cache, v_cache must be one shape "
                         f"[max_batch, H_kv, max_seq, D], got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    _, h_kv, max_seq, d = k_cache.shape
    if q.dim() != 2 or k.shape != (b, h_kv * d) or v.shape != (b, h_kv * d) or q.shape[1] % (h_kv * d):
        raise ValueError(f"decode_attention_fused: q [B, H*D] with H a multiple of H_kv={h_kv} and "
                         f"k, v [B, {h_kv * d}] needed; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if not 1 <= b <= k_cache.shape[0] or not 1 <= attn_len <= max_seq:
        raise ValueError(f"decode_attention_fused: batch {b} must fit the cache's {k_cache.shape[0]} rows "
                         f"and attn_len {attn_len} its {max_seq} positions")
    if any(t.stride(-1) != 1 for t in (q, k, v, cos, sin, k_cache, v_cache)):
        raise ValueError("decode_attention_fused: the last dim of every tensor must be contiguous")
    if cos.shape != (b, d) or sin.shape != (b, d):
        raise ValueError(f"decode_attention_fused: cos, sin must be [{b}, {d}], got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}")
    if (q_w is None) != (k_w is None) or (q_w is not None and (q_w.shape != (d,) or k_w.shape != (d,))):
        raise ValueError(f"decode_attention_fused: q_w and k_w must both be [{d}] or both None")
    tensors = [q, k, v, cos, sin, k_cache, v_cache, pos] + ([q_w, k_w] if q_w is not None else [])
    if len({t.device for t in tensors}) != 1:
        raise ValueError("decode_attention_fused: every tensor must be on one device, got "
                         f"{sorted({str(t.device) for t in tensors})}")
    dts = {t.dtype for t in (q, k, v, cos, sin, k_cache, v_cache) + ((q_w, k_w) if q_w is not None else ())}
    if len(dts) != 1:
        raise ValueError(f"decode_attention_fused: q, k, v, cos, sin, the caches and norm weights must "
                         f"share a dtype, "
                         f"got {sorted(str(t) for t in dts)}")
    if pos.shape != (b,) or pos.dtype != torch.int64:
        raise ValueError(
            f"decode_attention_fused: pos must be int64 [{b}], got {pos.dtype} {tuple(pos.shape)}")
    pos = pos.contiguous()
    if out_scale is not None and (out_scale.dtype != torch.float32 or out_scale.numel() != 1
                                  or out_scale.device != q.device or d % 16):
        raise ValueError(f"decode_attention_fused: out_scale must be one fp32 value on {q.device} "
                         f"(and head_dim a multiple of 16), got {out_scale.dtype} {tuple(out_scale.shape)}")
    q_w = q_w.contiguous() if q_w is not None else None
    k_w = k_w.contiguous() if k_w is not None else None
    rep = q.shape[1] // (h_kv * d)
    sms = _sm_count(q)
    if b * h_kv >= CUDA_MIN_ROWS and cuda_serves(q, k_cache, v_cache, rep):
        plan = cuda_plan(b * h_kv, attn_len, sms)
        # One-CTA "clusters" (very large batches) were never measured or tested on a GPU:
        # they keep the Triton kernels.
        if plan[0] >= 2:
            return _cuda_fused(q, k, v, q_w, k_w, eps, cos, sin, k_cache, v_cache, pos, attn_len,
                               out_scale.reshape(1) if out_scale is not None else None, rep, plan)
    from resetfp4.engine import attention_kernels as ak

    splits, chunk, rows, acc, ml, out = _workspace(q, b, h_kv, rep, d, attn_len, sms)
    ak.launch_fused(q, k, v, q_w, k_w, float(eps), cos, sin, k_cache, v_cache, pos, attn_len,
                    acc, ml, out, splits, chunk, rows, BLOCK_N, 1.0 / math.sqrt(d),
                    out_scale.reshape(1) if out_scale is not None else None,
                    split_warps=split_warps(b * h_kv * splits, chunk == BLOCK_N, sms))
    return out


def cuda_plan(rows: int, attn_len: int, sm_count: int) -> tuple[int, int, int]:
    """``(splits, chunk, pre)`` of the CUDA kernel: about ``PROGRAMS_PER_SM * sm_count`` CTAs
    (at most :data:`CUDA_MAX_SPLITS` per cluster), ``chunk`` keys per CTA (a multiple of
    :data:`CUDA_TILE`), ``pre`` tiles requested before the PDL wait."""
    tiles = -(-attn_len // CUDA_TILE)
    want = max(1, min(tiles, CUDA_MAX_SPLITS, -(-PROGRAMS_PER_SM * sm_count // max(rows, 1))))
    chunk = -(-tiles // want) * CUDA_TILE
    splits = -(-attn_len // chunk)
    pre = int(_PRE_ENV) if _PRE_ENV is not None else (2 if rows <= CUDA_PRE_ROWS else 1)
    return splits, chunk, max(0, min(pre, 2, chunk // CUDA_TILE))


def cuda_serves(q: Tensor, k_cache: Tensor, v_cache: Tensor, rep: int) -> bool:
    """Whether the one-kernel CUDA path serves this call: sm_90+, head_dim 64 or 128, at
    most 16 query heads per KV head, caches with contiguous rows, one stride layout for
    both, every row 16-byte aligned (cp.async: base pointers, batch and head strides), and
    the kernels built."""
    if not (CUDA_ATTENTION and q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 9):
        return False
    d = k_cache.shape[3]
    if d not in (64, 128) or not 1 <= rep <= 16 or k_cache.stride() != v_cache.stride():
        return False
    if (k_cache.stride(2) != d or k_cache.stride(0) % 8 or k_cache.stride(1) % 8  # 16-byte cp.async
            or k_cache.data_ptr() % 16 or v_cache.data_ptr() % 16):
        return False
    try:
        from resetfp4.kernels.build import load_extension
        return hasattr(load_extension(), "decode_attention")
    except (RuntimeError, OSError, ImportError):
        return False


def _cuda_fused(q, k, v, q_w, k_w, eps, cos, sin, k_cache, v_cache, pos, attn_len, out_scale, rep,
                plan) -> Tensor:
    from resetfp4.kernels.build import load_extension

    b, h_kv, d = q.shape[0], k_cache.shape[1], k_cache.shape[3]
    splits, chunk, pre = plan
    out = torch.empty(b, h_kv, rep, d, dtype=q.dtype, device=q.device)
    with torch.cuda.device(q.device):
        err = load_extension().decode_attention(
            q, k, v, q_w, k_w, cos, sin, k_cache, v_cache, pos, out, out_scale, float(eps),
            1.0 / math.sqrt(d), attn_len, splits, chunk, pre)
    if err:
        raise RuntimeError(f"{err}; set RESETFP4_ATTN_CUDA=0 to run decode attention on the Triton "
                           "kernels instead")
    return out


@_decode_attention_fused_op.register_fake
def _(q, k, v, q_w, k_w, eps, cos, sin, k_cache, v_cache, pos, attn_len, out_scale=None):
    b, h_kv, d = q.shape[0], k_cache.shape[1], k_cache.shape[3]
    return q.new_empty(b, h_kv, q.shape[1] // (h_kv * d), d)
