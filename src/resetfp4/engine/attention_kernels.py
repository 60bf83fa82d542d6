"""Triton kernels of :func:`resetfp4.engine.attention.decode_attention` (see that module).

``import triton`` happens only here.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _attn_split_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, acc_ptr, ml_ptr,
                  sqb, sqh, sqr, skb, skh, sks, svb, svh, svs,
                  H_KV, REP, SPLITS, chunk, SEQ, sm_scale,
                  ROWS: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, TILES: tl.constexpr):
    bh = tl.program_id(0)
    s = tl.program_id(1)
    b = (bh // H_KV).to(tl.int64)  # 64-bit offsets: a layer's cache may exceed 2^31 elements
    h = (bh % H_KV).to(tl.int64)
    last = tl.load(pos_ptr + b)  # attended keys: 0..last
    start = s * chunk
    end = tl.minimum(tl.minimum(start + chunk, last + 1), SEQ)  # never past the view
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_r[:, None] * sqr + offs_d[None, :],
                mask=offs_r[:, None] < REP, other=0.0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    # Masked scores are -1e30, not -inf: a tile with no attended key (past `last`) then
    # gives finite garbage in l_i that the next real tile's alpha = exp(-1e30 - m) = 0
    # wipes; a split with no attended key at all keeps m_i = -1e30 and gets weight 0 in
    # the combine. Masked loads read no memory, so tiles past `last` cost no bandwidth.
    m_i = tl.full([ROWS], -1e30, tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, D], tl.float32)
    for t in range(0, TILES):  # TILES = chunk / BLOCK_N (constexpr: one compile per bucket)
        keys = start + t * BLOCK_N + offs_n
        kmask = keys < end
        k = tl.load(k_base + keys[:, None] * sks + offs_d[None, :], mask=kmask[:, None], other=0.0)
        sc = tl.dot(q, tl.trans(k)) * sm_scale
        sc = tl.where(kmask[None, :], sc, -1e30)
        m_new = tl.maximum(m_i, tl.max(sc, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(sc - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + keys[:, None] * svs + offs_d[None, :], mask=kmask[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    part = bh * SPLITS + s
    tl.store(acc_ptr + part * ROWS * D + offs_r[:, None] * D + offs_d[None, :], acc)
    tl.store(ml_ptr + part * 2 * ROWS + offs_r, m_i)  # -1e30 for a split past `last`
    tl.store(ml_ptr + part * 2 * ROWS + ROWS + offs_r, l_i)


@triton.jit
def _attn_combine_kernel(acc_ptr, ml_ptr, out_ptr, sob, soh, sor, H_KV, REP,
                    SPLITS: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // H_KV
    h = bh % H_KV
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, D)
    m = tl.full([ROWS], -1e30, tl.float32)
    for s in range(0, SPLITS):  # split 0 always holds key 0, so m ends a real score
        m = tl.maximum(m, tl.load(ml_ptr + (bh * SPLITS + s) * 2 * ROWS + offs_r))
    num = tl.zeros([ROWS, D], tl.float32)
    den = tl.zeros([ROWS], tl.float32)
    for s in range(0, SPLITS):
        part = bh * SPLITS + s
        w = tl.exp(tl.load(ml_ptr + part * 2 * ROWS + offs_r) - m)  # 0 for an empty split
        den += w * tl.load(ml_ptr + part * 2 * ROWS + ROWS + offs_r)
        num += w[:, None] * tl.load(acc_ptr + part * ROWS * D + offs_r[:, None] * D + offs_d[None, :])
    o = num / den[:, None]
    tl.store(out_ptr + b * sob + h * soh + offs_r[:, None] * sor + offs_d[None, :],
             o.to(out_ptr.dtype.element_ty), mask=offs_r[:, None] < REP)


def launch(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, acc: Tensor, ml: Tensor, out: Tensor,
           splits: int, chunk: int, rows: int, block_n: int, sm_scale: float) -> None:
    """Both kernels; shapes as in :func:`resetfp4.engine.attention.decode_attention`."""
    b, h_kv, rep, d = q.shape
    _attn_split_kernel[(b * h_kv, splits)](
        q, k, v, pos, acc, ml,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        h_kv, rep, splits, chunk, k.shape[2], sm_scale,
        ROWS=rows, D=d, BLOCK_N=block_n, TILES=chunk // block_n, num_warps=4,
    )
    _attn_combine_kernel[(b * h_kv,)](
        acc, ml, out, out.stride(0), out.stride(1), out.stride(2), h_kv, rep, splits,
        ROWS=rows, D=d, num_warps=4,
    )
