"""Triton kernels of :func:`resetfp4.engine.attention.decode_attention` (see that module).

``import triton`` happens only here.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from resetfp4.engine.act_quant_kernels import fake_quant_blocks, launch_opts, pdl_start, pdl_trigger, pdl_wait


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
    real = offs_r < REP  # the padding rows (tl.dot needs 16) are neither stored nor combined
    tl.store(acc_ptr + part * ROWS * D + offs_r[:, None] * D + offs_d[None, :], acc,
             mask=real[:, None])
    tl.store(ml_ptr + part * 2 * ROWS + offs_r, m_i, mask=real)  # -1e30: split past `last`
    tl.store(ml_ptr + part * 2 * ROWS + ROWS + offs_r, l_i, mask=real)


@triton.jit
def _attn_combine_kernel(acc_ptr, ml_ptr, out_ptr, sob, soh, sor, H_KV, SPLITS, gs_ptr,
                         SP: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr,
                         QUANT: tl.constexpr = False, PDL: tl.constexpr = False):
    # One program per (row b, KV head h, query row r): all SPLITS partials in one 2-D load
    # (SP = next power of two >= SPLITS; the extra lanes are masked and weigh 0).
    pdl_start(PDL)  # the next kernel (o_proj's NVFP4 GEMV) may start streaming its weights
    bh = tl.program_id(0)
    r = tl.program_id(1)
    b = bh // H_KV
    h = bh % H_KV
    offs_s = tl.arange(0, SP)
    offs_d = tl.arange(0, D)
    smask = offs_s < SPLITS
    part = bh * SPLITS + offs_s
    m_s = tl.load(ml_ptr + part * 2 * ROWS + r, mask=smask, other=-1e30)
    l_s = tl.load(ml_ptr + part * 2 * ROWS + ROWS + r, mask=smask, other=0.0)
    m = tl.max(m_s, 0)  # split 0 always holds key 0, so m is a real score
    w = tl.exp(m_s - m)  # 0 for an empty split (-1e30) and for the masked lanes
    den = tl.sum(w * l_s, 0)
    a = tl.load(acc_ptr + (part[:, None] * ROWS + r) * D + offs_d[None, :],
                mask=smask[:, None], other=0.0)
    o = (tl.sum(w[:, None] * a, 0) / den).to(out_ptr.dtype.element_ty)
    if QUANT:  # W4A4 o_proj: its input's NVFP4 round trip (blocks of 16 within the head)
        o = tl.reshape(fake_quant_blocks(tl.reshape(o.to(tl.float32), (1, D)), tl.load(gs_ptr), 1, D),
                       (D,)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + b * sob + h * soh + r * sor + offs_d, o)


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
    _attn_combine_kernel[(b * h_kv, rep)](
        acc, ml, out, out.stride(0), out.stride(1), out.stride(2), h_kv, splits, acc,
        SP=triton.next_power_of_2(splits), ROWS=rows, D=d, num_warps=4,
    )


@triton.jit
def _prep_heads(raw_ptr, w_ptr, cos_ptr, sin_ptr, offs_r, offs_d, rmask, eps,
                D: tl.constexpr, HAS_NORM: tl.constexpr):
    """Rows ``offs_r`` of a raw projection (``raw_ptr`` at the row's first head): per-head
    RMSNorm (``HAS_NORM``) then rotate-half RoPE, rounding to the activation dtype after
    each op exactly where the eager model does (``attention.prep_heads_ref``)."""
    dt = raw_ptr.dtype.element_ty
    half: tl.constexpr = D // 2
    offs_p = (offs_d + half) % D  # rotate-half partner of each dim
    ptr = raw_ptr + offs_r[:, None] * D
    x = tl.load(ptr + offs_d[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    xp = tl.load(ptr + offs_p[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    if HAS_NORM:
        r = 1.0 / tl.sqrt_rn(tl.sum(x * x, 1) / D + eps)  # fp32, as F.rms_norm
        w = tl.load(w_ptr + offs_d).to(tl.float32)
        wp = tl.load(w_ptr + offs_p).to(tl.float32)
        x = (w[None, :] * (x * r[:, None]).to(dt).to(tl.float32)).to(dt).to(tl.float32)
        xp = (wp[None, :] * (xp * r[:, None]).to(dt).to(tl.float32)).to(dt).to(tl.float32)
    c = tl.load(cos_ptr + offs_d).to(tl.float32)
    s = tl.load(sin_ptr + offs_d).to(tl.float32)  # signed: [-sin, sin] over the halves
    a = (x * c[None, :]).to(dt).to(tl.float32)
    b = (xp * s[None, :]).to(dt).to(tl.float32)
    return (a + b).to(dt)


@triton.jit
def _attn_fused_split_kernel(qr_ptr, kr_ptr, vr_ptr, sq, sk, sv, qw_ptr, kw_ptr, eps,
                             cos_ptr, sin_ptr, scs, sss, kc_ptr, vc_ptr, skb, skh, sks, svb, svh, svs,
                             pos_ptr, acc_ptr, ml_ptr, H_KV, REP, SPLITS, chunk, SEQ, CACHE_LEN,
                             sm_scale, ROWS: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                             TILES: tl.constexpr, HAS_NORM: tl.constexpr, PDL: tl.constexpr = False):
    """``_attn_split_kernel`` with the head preparation folded in: the query heads of KV
    head ``h`` and this token's key are normed and rotated here from the raw projections,
    and the split that owns position ``pos[b]`` writes the new key/value into the cache.
    No program reads that position back in this launch: the cache loop stops before
    ``pos[b]`` and the owner adds the new key from registers (one more online-softmax
    step), so there is no read-after-write hazard on the cache within the kernel.

    With PDL the kernel is launched while the q/k/v projection still runs. When a split is
    one tile (``TILES == 1``), each program loads that tile of cached keys and values before
    waiting for the projection: every position of its range inside the attended view,
    whatever ``pos[b]`` is. That is safe: only this kernel
    writes the layer's cache within a step, and earlier steps (or the prefill) finished
    before this step's first kernel, a plain launch, started; ``pos`` and everything else
    this step's kernels write is read only after the wait. Positions at or past ``pos[b]``
    (stale, or never written) are masked out of the scores and zeroed in the values once
    ``pos[b]`` is known, so non-finite garbage there cannot leak in. Longer splits keep the
    pos-masked, Triton-pipelined loop."""
    pdl_trigger(PDL)
    bh = tl.program_id(0)
    s = tl.program_id(1)
    b = (bh // H_KV).to(tl.int64)
    h = (bh % H_KV).to(tl.int64)
    start = s * chunk
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    k_base = kc_ptr + b * skb + h * skh
    v_base = vc_ptr + b * svb + h * svh
    if TILES == 1:  # one tile per split (Qwen3-8B on 132 SMs: batch 1 up to 2,112 positions)
        keys = start + offs_n
        view = keys < tl.minimum(start + chunk, SEQ)
        k1 = tl.load(k_base + keys[:, None] * sks + offs_d[None, :], mask=view[:, None], other=0.0)
        v1 = tl.load(v_base + keys[:, None] * svs + offs_d[None, :], mask=view[:, None], other=0.0)
    pdl_wait(PDL)  # q/k/v (the projection), pos, cos/sin: only after the previous kernel
    last = tl.load(pos_ptr + b)
    end = tl.minimum(tl.minimum(start + chunk, last), SEQ)  # cached keys; pos[b] itself: below
    q = _prep_heads(qr_ptr + b * sq + h * REP * D, qw_ptr, cos_ptr + b * scs, sin_ptr + b * sss,
                    offs_r, offs_d, offs_r < REP, eps, D, HAS_NORM)
    # The new key/value: written by the split whose range holds pos[b] (split 0 for an idle
    # slot past the attended view; nobody past the cache).
    owner = tl.where(last < SEQ, last // chunk, 0)
    own = (s == owner) & (last >= 0) & (last < CACHE_LEN)
    one = tl.arange(0, 1)
    kn = _prep_heads(kr_ptr + b * sk + h * D, kw_ptr, cos_ptr + b * scs, sin_ptr + b * sss,
                     one, offs_d, one < 1, eps, D, HAS_NORM)
    vn = tl.load(vr_ptr + b * sv + h * D + one[:, None] * D + offs_d[None, :])
    wmask = own & (offs_d[None, :] < D)
    tl.store(kc_ptr + b * skb + h * skh + last * sks + one[:, None] * 0 + offs_d[None, :],
             kn.to(kc_ptr.dtype.element_ty), mask=wmask)
    tl.store(vc_ptr + b * svb + h * svh + last * svs + one[:, None] * 0 + offs_d[None, :],
             vn.to(vc_ptr.dtype.element_ty), mask=wmask)
    # The cached keys: the loop and the partial stores are _attn_split_kernel's, written out
    # again on purpose. A shared @triton.jit helper compiled to different PTX for this
    # measured kernel (sm_90, Triton 3.7: 13 more lines); keep both in step when editing.
    if TILES == 1:  # the tile loaded before the wait: positions past pos[b] masked / zeroed
        kmask = keys < end
        sc = tl.dot(q, tl.trans(k1)) * sm_scale
        sc = tl.where(kmask[None, :], sc, -1e30)
        m_i = tl.max(sc, 1)
        p = tl.exp(sc - m_i[:, None])
        l_i = tl.sum(p, 1)
        v = tl.where(kmask[:, None], v1, 0.0)
        acc = tl.dot(p.to(v.dtype), v).to(tl.float32)
    else:  # loads masked by pos, software-pipelined by Triton (a first tile loaded before the
        # wait and carried into this loop measured 5% slower attention at batch 8)
        m_i = tl.full([ROWS], -1e30, tl.float32)
        l_i = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, D], tl.float32)
        for t in range(0, TILES):
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
    # The new key/value (the owner, when pos[b] is attended): one online-softmax step from
    # registers, with the values the cache now holds (k in the cache dtype, p rounded to
    # the value dtype before p * v, as in the loop).
    attend = own & (last < SEQ)
    kf = tl.reshape(kn.to(kc_ptr.dtype.element_ty), (D,)).to(tl.float32)
    vf = tl.reshape(vn.to(vc_ptr.dtype.element_ty), (D,))
    sn = tl.sum(q.to(tl.float32) * kf[None, :], 1) * sm_scale
    m_new = tl.where(attend, tl.maximum(m_i, sn), m_i)
    alpha = tl.exp(m_i - m_new)
    pn = tl.exp(tl.where(attend, sn - m_new, -1e30))  # 0 when not attended
    l_i = l_i * alpha + pn
    acc = acc * alpha[:, None] + pn.to(vf.dtype).to(tl.float32)[:, None] * vf.to(tl.float32)[None, :]
    m_i = m_new
    part = bh * SPLITS + s
    real = offs_r < REP
    tl.store(acc_ptr + part * ROWS * D + offs_r[:, None] * D + offs_d[None, :], acc,
             mask=real[:, None])
    tl.store(ml_ptr + part * 2 * ROWS + offs_r, m_i, mask=real)
    tl.store(ml_ptr + part * 2 * ROWS + ROWS + offs_r, l_i, mask=real)


SPLIT_STAGES: int | None = None  # num_stages of the fused split kernel (None: Triton's default)
COMBINE_WARPS = 4  # num_warps of the combine kernel after the fused split kernel (1 and 2 measured slower)


def launch_fused(q: Tensor, k: Tensor, v: Tensor, q_w: Tensor | None, k_w: Tensor | None, eps: float,
                 cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor, attn_len: int,
                 acc: Tensor, ml: Tensor, out: Tensor, splits: int, chunk: int, rows: int, block_n: int,
                 sm_scale: float, out_scale: Tensor | None = None, split_warps: int = 4) -> None:
    """Both kernels of :func:`resetfp4.engine.attention.decode_attention_fused`; with
    ``out_scale`` (fp32 [1]) the output is NVFP4-round-tripped (``act_quant``); the split
    kernel runs ``split_warps`` warps (:func:`resetfp4.engine.attention.split_warps`)."""
    b, h_kv, rep, d = out.shape
    has_norm = q_w is not None
    _attn_fused_split_kernel[(b * h_kv, splits)](
        q, k, v, q.stride(0), k.stride(0), v.stride(0),
        q_w if has_norm else q, k_w if has_norm else k, eps,
        cos, sin, cos.stride(0), sin.stride(0), k_cache, v_cache,
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        pos, acc, ml, h_kv, rep, splits, chunk, attn_len, k_cache.shape[2], sm_scale,
        ROWS=rows, D=d, BLOCK_N=block_n, TILES=chunk // block_n, HAS_NORM=has_norm,
        num_warps=split_warps,
        **({"num_stages": SPLIT_STAGES} if SPLIT_STAGES is not None else {}), **launch_opts(q),
    )
    _attn_combine_kernel[(b * h_kv, rep)](
        acc, ml, out, out.stride(0), out.stride(1), out.stride(2), h_kv, splits,
        out_scale if out_scale is not None else acc,
        SP=triton.next_power_of_2(splits), ROWS=rows, D=d, QUANT=out_scale is not None,
        num_warps=COMBINE_WARPS, **launch_opts(q),
    )
