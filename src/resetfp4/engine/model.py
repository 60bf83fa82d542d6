"""One-file decoder (Llama / Qwen2 / Qwen3) with a static KV cache, in the manner of gpt-fast.

Module names mirror HF (``model.layers.N.self_attn.q_proj`` ...), so HF, GGUF and
ModelOpt state dicts load by name. Shapes are static: the cache holds
``[max_batch, n_kv_heads, max_seq_len, head_dim]`` per layer, every forward writes its
keys/values at explicit per-row positions and attends through a position mask, so one
batch can mix prompt lengths and a decode step can be captured in a CUDA graph.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resetfp4.engine import act_quant, attention, linear_glue
from resetfp4.engine.config import ModelArgs
from resetfp4.format.nvfp4 import NVFP4Tensor
from resetfp4.kernels.nvfp4_gemv import deinterleave_cols, interleave_gate_up, interleave_rows


class RMSNorm(nn.Module):
    """HF RMSNorm: normalise in fp32, cast back, then scale (same op order as HF).

    ``F.rms_norm`` computes ``h * rsqrt(mean(h^2) + eps)`` like HF's expression, in one
    fused kernel on recent CUDA builds (fewer tiny kernels per decode step)."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype, device: torch.device | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * h.to(x.dtype)


class Linear(nn.Module):
    """``y = x @ W.T (+ b)``; ``W`` is dense (fp32/bf16) or NVFP4 (W4A16 or W4A4).

    Args of :meth:`forward`: ``x`` ``[..., K]`` in the activation dtype; returns
    ``[..., N]`` in the same dtype. NVFP4 dispatch lives in :mod:`linear_glue` (kernels on
    CUDA when present, the exact reference linears otherwise).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        dtype: torch.dtype,
        device: torch.device | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=dtype, device=device), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False)
            if bias
            else None
        )
        self.qweight: linear_glue.PreparedWeight | None = None
        # Plain flags/buffers (not the PreparedWeight object) are what forward reads, so
        # torch.compile sees the same guards in every layer and compiles one block once.
        self.nvfp4 = False
        self.act = "bf16"
        self.rows_interleaved = False  # gate/up fused for the SwiGLU GEMV (see fuse_linears)
        self.register_buffer("qkey", None, persistent=False)
        self.register_buffer("input_scale", None, persistent=False)

    def set_nvfp4(self, w: NVFP4Tensor, act: str, input_scale: Tensor | None) -> None:
        """Switch to NVFP4: ``w`` ``[N, K]``; ``act`` "bf16" (W4A16) or "fp4" (W4A4, needs input_scale)."""
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"NVFP4 weight has shape {tuple(w.shape)}, expected {(self.out_features, self.in_features)}"
            )
        if act == "fp4" and input_scale is None:
            raise ValueError("W4A4 needs a calibrated input_scale per linear (see resetfp4 quantize)")
        self.weight = None  # type: ignore[assignment]
        self.qweight = linear_glue.prepare(w)
        self.qkey = self.qweight.key
        self.nvfp4 = True
        self.act = act
        self.input_scale = input_scale

    def forward(self, x: Tensor) -> Tensor:
        if not self.nvfp4:
            return F.linear(x, self.weight, self.bias)
        return linear_glue.nvfp4_linear_op(
            x, self.qkey, self.act, self.input_scale, self.bias, self.out_features
        )

    def swiglu(self, x: Tensor, prequant: bool, out_scale: Tensor | None) -> Tensor:
        """``silu(gate) * up`` of this gate/up linear (NVFP4, rows interleaved: see
        :func:`fuse_linears`), one kernel on CUDA (``linear_glue.swiglu``). ``prequant``: x
        holds activations quantized with this linear's ``input_scale`` (as
        :meth:`forward_prequant`); ``out_scale``: return the NVFP4 round trip of the result
        with that global scale (the down projection's ``input_scale``), else unquantized."""
        if self.act == "fp4" and not prequant:
            raise ValueError("a W4A4 gate/up linear takes activations quantized with its input_scale "
                             "(prequant=True, e.g. from act_quant.add_rmsnorm_quant)")
        if not self.rows_interleaved:
            raise ValueError("Linear.swiglu needs the gate/up rows interleaved "
                             "(fuse_linears(..., swiglu=True))")
        return linear_glue.nvfp4_swiglu_op(
            x, self.qkey, "fp4_pre" if prequant else "bf16", self.input_scale, out_scale, self.bias,
            self.out_features // 2)

    def forward_prequant(self, xq: Tensor) -> Tensor:
        """W4A4 on activations its producer already quantized with this linear's
        ``input_scale`` (:mod:`resetfp4.engine.act_quant`): same result as :meth:`forward`
        on the unquantized activations, one quantizer launch fewer."""
        return linear_glue.nvfp4_linear_op(
            xq, self.qkey, "fp4_pre", self.input_scale, self.bias, self.out_features
        )


# Rows up to which Transformer.epilogue_deferred runs the final norm on the act_quant
# producer (NVFP4 head). H100, Qwen3-8B W4A16 + NVFP4 head, gen 128, one run each on one
# machine: batch 1 2.2197 / 2.2200 -> 2.2057 ms per step; batch 8 2.5941 -> 2.6110 (slower:
# the head GEMV's early CTAs then compete with the last down projection). Batch 1 only.
EPILOGUE_PRODUCER_MAX_ROWS = 1

# RESETFP4_SWIGLU_GEMV=0 keeps NVFP4 gate/up fused in plain row order (SiLU-mul in its own
# kernel): an A/B switch, read when the projections are fused.
_SWIGLU_GEMV = os.environ.get("RESETFP4_SWIGLU_GEMV", "1") != "0"


def fuse_linears(parts: list[Linear], swiglu: bool = False) -> Linear | None:
    """One Linear computing every part's output at once, or ``None`` when the parts cannot
    be fused exactly. Its output is ``cat([p(x) for p in parts], -1)``, except for
    interleaved gate/up (below).

    ``swiglu`` (the gate and up projections, in that order): NVFP4 parts with
    ``I % 16 == 0`` rows each are fused with their rows interleaved per 16
    (``interleave_gate_up``), so that one GEMV can apply SiLU-mul in its epilogue
    (:meth:`Linear.swiglu`); the fused Linear has ``rows_interleaved`` set and its plain
    output must be split with ``deinterleave_cols``, not ``chunk``.

    Dense parts: the fused weight is the row-concatenation and each part's weight becomes
    a view of it (no extra memory; one GEMM instead of ``len(parts)``). NVFP4 parts fuse
    only when their global scales (and W4A4 input scales) are bitwise equal, so the fused
    codes and block scales are exactly the parts' own (no requantization); they keep their
    own prepared copies too (for export), which costs their bytes twice in memory.
    """
    p0 = parts[0]
    n = sum(p.out_features for p in parts)
    bias = (p.bias is not None for p in parts)
    if len(set(bias)) != 1 or len({p.nvfp4 for p in parts}) != 1:
        return None
    dev = p0.qkey.device if p0.nvfp4 else p0.weight.device
    dtype = p0.bias.dtype if p0.bias is not None else (torch.bfloat16 if p0.nvfp4 else p0.weight.dtype)
    with torch.device("meta"):
        fused = Linear(p0.in_features, n, p0.bias is not None, dtype)
    if p0.bias is not None:
        fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
    if not p0.nvfp4:
        fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        for p, w in zip(parts, fused.weight.split([p.out_features for p in parts]), strict=True):
            p.weight = nn.Parameter(w, requires_grad=False)
        if p0.bias is not None:
            for p, b in zip(parts, fused.bias.split([p.out_features for p in parts]), strict=True):
                p.bias = nn.Parameter(b, requires_grad=False)
        return fused
    interleave = (swiglu and _SWIGLU_GEMV and len(parts) == 2 and p0.out_features % 16 == 0
                  and parts[1].out_features == p0.out_features)
    if interleave:
        try:
            w = interleave_gate_up(parts[0].qweight.nvfp4(), parts[1].qweight.nvfp4())
        except ValueError:  # different global scales
            w = None
        if p0.bias is not None:
            fused.bias = nn.Parameter(interleave_rows(parts[0].bias, parts[1].bias), requires_grad=False)
    else:
        w = linear_glue.concat_rows([p.qweight for p in parts])
    scales = [p.input_scale for p in parts]
    same_act = len({p.act for p in parts}) == 1
    if w is None or not same_act or (p0.act == "fp4" and not all(torch.equal(scales[0], s) for s in scales)):
        return None
    fused.set_nvfp4(w.to(dev), p0.act, scales[0])
    fused.rows_interleaved = interleave
    return fused


def rope_tables(args: ModelArgs, max_seq_len: int, device: torch.device | None) -> tuple[Tensor, Tensor]:
    """fp32 ``cos, sin_signed`` ``[max_seq_len, head_dim]`` for rotate-half RoPE (HF convention).

    ``sin_signed`` carries rotate-half's sign: ``[-sin(f), sin(f)]`` over the two halves."""
    hd = args.head_dim
    inv_freq = 1.0 / (
        args.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device=device).float() / hd)
    )
    t = torch.arange(max_seq_len, dtype=torch.int64, device=device).float()
    freqs = t[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    half = hd // 2
    return emb.cos(), torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x`` ``[B, H, L, hd]``; ``cos/sin`` ``[B, 1, L, hd]`` in ``x.dtype``, ``sin`` signed.

    Bitwise equal to HF's ``x * cos + rotate_half(x) * sin``: ``cat(-x2, x1) * sin`` and
    ``cat(x2, x1) * cat(-sin1, sin2)`` differ only in where the exact negation happens."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((x[..., half:], x[..., :half]), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, dtype: torch.dtype, device: torch.device | None):
        super().__init__()
        hd, h, kv = args.head_dim, args.n_heads, args.n_kv_heads
        self.n_heads, self.n_kv, self.hd = h, kv, hd
        self.q_proj = Linear(args.dim, h * hd, args.qkv_bias, dtype, device)
        self.k_proj = Linear(args.dim, kv * hd, args.qkv_bias, dtype, device)
        self.v_proj = Linear(args.dim, kv * hd, args.qkv_bias, dtype, device)
        self.o_proj = Linear(h * hd, args.dim, False, dtype, device)
        if args.qk_norm:
            self.q_norm = RMSNorm(hd, args.norm_eps, dtype, device)
            self.k_norm = RMSNorm(hd, args.norm_eps, dtype, device)
        else:
            self.q_norm = self.k_norm = None
        self.qkv_fused: Linear | None = None  # set by Transformer.fuse_projections
        self.register_buffer("k_cache", None, persistent=False)
        self.register_buffer("v_cache", None, persistent=False)

    def fused_attention(self, x: Tensor) -> bool:
        """Whether decode steps run ``attention.decode_attention_fused`` (CUDA, and one
        epsilon for the q and k norms: the kernel takes one)."""
        return attention.fused_available(x, self.hd) and (
            self.q_norm is None or self.q_norm.eps == self.k_norm.eps)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor,
        attn_len: int,
        row0: int = 0,
        rows: Tensor | None = None,
    ) -> Tensor:
        """``x`` ``[B, L, D]``; ``pos`` int64 ``[B, L]``; ``mask`` additive ``[B, 1, L, attn_len]``
        in ``x.dtype`` (0 = attend, -inf = masked);
        the batch uses cache rows ``[row0, row0 + B)``, or ``rows`` (int64 ``[B]``, any
        distinct cache-row indices, e.g. the freed slots of a continuous batch) when given."""
        b, L, _ = x.shape
        nq, nkv = self.n_heads * self.hd, self.n_kv * self.hd
        if L == 1 and row0 == 0 and rows is None and self.fused_attention(x):
            # Decode on CUDA: one kernel normalises and rotates the heads, writes the new
            # key/value into the cache and attends (attention.decode_attention_fused).
            if self.qkv_fused is not None:
                q, k, v = self.qkv_fused(x).view(b, -1).split([nq, nkv, nkv], dim=-1)
            else:
                q, k, v = (p(x).view(b, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
            norm = self.q_norm is not None
            o = attention.decode_attention_fused(
                q, k, v, self.q_norm.weight if norm else None, self.k_norm.weight if norm else None,
                self.q_norm.eps if norm else 0.0, cos.reshape(b, self.hd), sin.reshape(b, self.hd),
                self.k_cache, self.v_cache, pos[:, 0], attn_len)
            return self.o_proj(o.reshape(b, 1, nq))
        if self.qkv_fused is not None:
            q, k, v = self.qkv_fused(x).split([nq, nkv, nkv], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(b, L, self.n_heads, self.hd)
        k = k.view(b, L, self.n_kv, self.hd)
        v = v.view(b, L, self.n_kv, self.hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        idx = torch.arange(row0, row0 + b, device=x.device) if rows is None else rows
        # Advanced indices (rows, pos) around a slice: the indexed view is [B, L, H_kv, hd].
        self.k_cache[idx[:, None], :, pos] = k.transpose(1, 2).to(self.k_cache.dtype)
        self.v_cache[idx[:, None], :, pos] = v.transpose(1, 2).to(self.v_cache.dtype)
        if rows is None:
            keys = self.k_cache[row0 : row0 + b, :, :attn_len]
            vals = self.v_cache[row0 : row0 + b, :, :attn_len]
        else:  # a gathered copy (prefill only: never inside a captured decode step)
            keys = self.k_cache[rows, :, :attn_len]
            vals = self.v_cache[rows, :, :attn_len]
        rep = self.n_heads // self.n_kv
        if L == 1:
            # Decode: the rep query heads sharing a KV head become rep query rows of it.
            q4 = q.reshape(b, self.n_kv, rep, self.hd)
            if attention.available(q4):  # CUDA: split-KV kernel (keys 0..pos, = the mask)
                o = attention.decode_attention(q4, keys, vals, pos[:, 0])
            else:
                o = F.scaled_dot_product_attention(q4, keys, vals, attn_mask=mask)
            o = o.reshape(b, self.n_heads, 1, self.hd)
        else:
            if rep > 1:
                keys, vals = keys.repeat_interleave(rep, dim=1), vals.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        return self.o_proj(o.transpose(1, 2).reshape(b, L, self.n_heads * self.hd))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs, dtype: torch.dtype, device: torch.device | None):
        super().__init__()
        self.gate_proj = Linear(args.dim, args.intermediate_size, False, dtype, device)
        self.up_proj = Linear(args.dim, args.intermediate_size, False, dtype, device)
        self.down_proj = Linear(args.intermediate_size, args.dim, False, dtype, device)
        self.gate_up_fused: Linear | None = None  # set by Transformer.fuse_projections

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up_fused is not None:
            gu = self.gate_up_fused(x)
            g, u = deinterleave_cols(gu) if self.gate_up_fused.rows_interleaved else gu.chunk(2, dim=-1)
            return self.down_proj(F.silu(g) * u)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs, dtype: torch.dtype, device: torch.device | None):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps, dtype, device)
        self.self_attn = Attention(args, dtype, device)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps, dtype, device)
        self.mlp = MLP(args, dtype, device)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor,
        attn_len: int,
        row0: int = 0,
        rows: Tensor | None = None,
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), pos, cos, sin, mask, attn_len, row0, rows)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_deferred(
        self, h: Tensor, d: Tensor, pos: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, attn_len: int
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` of ``x = h + d`` with its last residual add left to the caller:
        returns ``(h', d')`` with ``h' + d'`` equal to ``forward(h + d)`` (the same bf16 adds
        in the same order; bitwise in eager mode off the producer path). The compiled
        decode step chains blocks this way, so each block's final add is fused into the
        next block's first RMSNorm kernel (a compiled region ends at the block, and Inductor
        cannot fuse across it). On CUDA with NVFP4 linears the block runs the act_quant
        producers instead (:meth:`_deferred_fused`): the same ops, with their own fp32
        summation order in RMSNorm and SiLU's exp, as Inductor's kernels have theirs."""
        act = self._fused_producers(h)
        if act is not None:
            return self._deferred_fused(h, d, pos, cos, sin, attn_len, quant=act == "fp4")
        x = h + d
        x = x + self.self_attn(self.input_layernorm(x), pos, cos, sin, mask, attn_len, 0)
        return x, self.mlp(self.post_attention_layernorm(x))

    def _fused_producers(self, h: Tensor) -> str | None:
        """The linears' act ("fp4" or "bf16") when this decode step (one token per row, on
        CUDA, every linear of the block NVFP4 with one act, on fused projections) runs the
        act_quant producers instead of Inductor's norm / SiLU kernels; else None."""
        at, mlp = self.self_attn, self.mlp
        lins = (at.qkv_fused, at.o_proj, mlp.gate_up_fused, mlp.down_proj)
        if not (h.shape[1] == 1 and act_quant.available(h) and at.fused_attention(h)
                and all(p is not None and p.nvfp4 for p in lins)):
            return None
        acts = {p.act for p in lins}
        act = acts.pop() if len(acts) == 1 else None
        if act == "fp4" and at.hd % 16 == 0:
            return act
        return act if act == "bf16" and act_quant.TRITON_PRODUCERS_W4A16 else None

    def _deferred_fused(
        self, h: Tensor, d: Tensor, pos: Tensor, cos: Tensor, sin: Tensor, attn_len: int, quant: bool
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward_deferred` on the act_quant producers. W4A4 (``quant``): the
        residual-add + RMSNorm kernels, the attention combine and the SiLU-mul kernel emit
        the NVFP4 activations of the next linear themselves (4 quantizer launches fewer
        per block; same codes). W4A16: the same kernels unquantized; on sm_90 each lets the
        GEMV after it start streaming weights while it runs (Inductor's kernels cannot)."""
        b, dim = h.shape[0], h.shape[-1]
        at, mlp = self.self_attn, self.mlp
        n1, n2 = self.input_layernorm, self.post_attention_layernorm
        nq, nkv = at.n_heads * at.hd, at.n_kv * at.hd

        def scale(lin: Linear) -> Tensor | None:
            return lin.input_scale.reshape(1).float() if quant else None

        def linear(lin: Linear, xq: Tensor) -> Tensor:
            return lin.forward_prequant(xq) if quant else lin(xq)

        x, xq = act_quant.add_rmsnorm_quant(h.view(b, dim), d.view(b, dim), n1.weight, n1.eps,
                                            scale(at.qkv_fused))
        q, k, v = linear(at.qkv_fused, xq).split([nq, nkv, nkv], dim=-1)
        norm = at.q_norm is not None
        o = attention.decode_attention_fused(
            q, k, v, at.q_norm.weight if norm else None, at.k_norm.weight if norm else None,
            at.q_norm.eps if norm else 0.0, cos.reshape(b, at.hd), sin.reshape(b, at.hd),
            at.k_cache, at.v_cache, pos[:, 0], attn_len, out_scale=scale(at.o_proj))
        o = linear(at.o_proj, o.reshape(b, nq))
        x, xq = act_quant.add_rmsnorm_quant(x, o, n2.weight, n2.eps, scale(mlp.gate_up_fused))
        if mlp.gate_up_fused.rows_interleaved:  # SiLU-mul (and quantization) in the GEMV epilogue
            xq = mlp.gate_up_fused.swiglu(xq, quant, scale(mlp.down_proj))
        else:
            xq = act_quant.silu_mul_quant(linear(mlp.gate_up_fused, xq), scale(mlp.down_proj))
        return x.view(b, 1, dim), linear(mlp.down_proj, xq).view(b, 1, dim)


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs, dtype: torch.dtype, device: torch.device | None):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim, dtype=dtype, device=device)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(args, dtype, device) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps, dtype, device)


FUSED = {"qkv_fused": ("q_proj", "k_proj", "v_proj"), "gate_up_fused": ("gate_proj", "up_proj")}


def is_fused_name(name: str) -> bool:
    """True for the decode-time fused linears (not checkpoint tensors: never loaded/exported)."""
    return name.rpartition(".")[2] in FUSED


class Transformer(nn.Module):
    """The causal LM. Call :meth:`setup_cache` once, then :meth:`forward`."""

    def __init__(
        self, args: ModelArgs, dtype: torch.dtype = torch.bfloat16, device: torch.device | None = None
    ):
        super().__init__()
        self.args, self.dtype = args, dtype
        self.model = Decoder(args, dtype, device)
        self.lm_head = Linear(args.dim, args.vocab_size, False, dtype, device)
        self.max_batch = self.max_seq_len = 0
        self.register_buffer("cos", None, persistent=False)
        self.register_buffer("sin", None, persistent=False)

    def linear_names(self) -> dict[str, tuple[int, int]]:
        """``{prefix: (N, K)}`` of every transformer-block linear (what NVFP4 quantizes)."""
        return {
            n: (m.out_features, m.in_features)
            for n, m in self.named_modules()
            if isinstance(m, Linear) and n != "lm_head" and not is_fused_name(n)
        }

    def _fusion_sites(self):
        for blk in self.model.layers:
            yield blk.self_attn, "qkv_fused"
            yield blk.mlp, "gate_up_fused"

    def fuse_projections(self) -> int:
        """Fuse q/k/v and gate/up of every block into one linear each (see :func:`fuse_linears`);
        idempotent. Returns how many fused linears exist afterwards."""
        n = 0
        for mod, name in self._fusion_sites():
            if getattr(mod, name) is None:
                setattr(mod, name, fuse_linears([getattr(mod, p) for p in FUSED[name]],
                                                swiglu=name == "gate_up_fused"))
            n += getattr(mod, name) is not None
        return n

    def unfuse_projections(self) -> None:
        """Drop the fused linears (before quantizing, calibrating or exporting the parts)."""
        for mod, name in self._fusion_sites():
            if getattr(mod, name) is not None:
                dense = not getattr(mod, name).nvfp4
                setattr(mod, name, None)
                if dense:  # the parts are views of the fused weight: give them their own storage
                    for p in FUSED[name]:
                        lin = getattr(mod, p)
                        lin.weight = nn.Parameter(lin.weight.clone(), requires_grad=False)
                        if lin.bias is not None:
                            lin.bias = nn.Parameter(lin.bias.clone(), requires_grad=False)

    def decode_linears(self) -> list[Linear]:
        """The linears a forward actually runs (fused ones instead of their parts)."""
        out: list[Linear] = []
        for mod, name in self._fusion_sites():
            fused = getattr(mod, name)
            out += [fused] if fused is not None else [getattr(mod, p) for p in FUSED[name]]
        out += [blk.self_attn.o_proj for blk in self.model.layers]
        out += [blk.mlp.down_proj for blk in self.model.layers]
        return out + [self.lm_head]

    def setup_cache(self, max_batch: int, max_seq_len: int) -> None:
        """Allocate the static KV cache (activation dtype) and the RoPE tables."""
        dev = self.model.embed_tokens.weight.device
        a = self.args
        shape = (max_batch, a.n_kv_heads, max_seq_len, a.head_dim)
        for blk in self.model.layers:
            blk.self_attn.k_cache = torch.zeros(shape, dtype=self.dtype, device=dev)
            blk.self_attn.v_cache = torch.zeros(shape, dtype=self.dtype, device=dev)
        self.cos, self.sin = rope_tables(a, max_seq_len, dev)
        self.max_batch, self.max_seq_len = max_batch, max_seq_len

    def prologue(self, tokens: Tensor, pos: Tensor, attn_len: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Embeddings ``x`` ``[B, L, D]``, RoPE ``cos, sin`` ``[B, 1, L, hd]`` and the additive
        mask ``[B, 1, L, attn_len]`` (all in the activation dtype) for :meth:`forward`."""
        x = self.model.embed_tokens(tokens)
        cos = self.cos[pos].to(x.dtype).unsqueeze(1)
        sin = self.sin[pos].to(x.dtype).unsqueeze(1)
        keys = torch.arange(attn_len, device=tokens.device)
        # Additive mask built once per forward (SDPA would convert a bool mask in every layer).
        allowed = (keys[None, None, :] <= pos[:, :, None]).unsqueeze(1)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(
            ~allowed, float("-inf")
        )
        return x, cos, sin, mask

    def epilogue(self, x: Tensor) -> Tensor:
        """Final norm + lm_head: ``x`` ``[..., D]`` -> fp32 logits ``[..., V]``."""
        return self.lm_head(self.model.norm(x)).float()

    def epilogue_deferred(self, h: Tensor, d: Tensor) -> Tensor:
        """:meth:`epilogue` of ``h + d`` (the last block's deferred residual add, see
        :meth:`Block.forward_deferred`). A decode step of at most
        :data:`EPILOGUE_PRODUCER_MAX_ROWS` rows (one token each, CUDA) with an NVFP4
        lm_head runs the add + final RMSNorm on the ``act_quant`` producer, as the blocks
        do: on sm_90 the head's GEMV, the largest of the step, then starts streaming its
        weights while the norm runs (Inductor's norm kernel does not let it). Its fp32
        summation order is the producer's, as in every block's norms."""
        head = self.lm_head
        if not (h.dim() == 3 and h.shape[1] == 1 and h.shape[0] <= EPILOGUE_PRODUCER_MAX_ROWS
                and head.nvfp4 and act_quant.available(h)
                and (head.act == "fp4" or act_quant.TRITON_PRODUCERS_W4A16)):
            return self.epilogue(h + d)
        b, dim = h.shape[0], h.shape[-1]
        quant = head.act == "fp4"  # set_nvfp4 guarantees a W4A4 head its input_scale
        gs = head.input_scale.reshape(1).float() if quant else None
        _, xn = act_quant.add_rmsnorm_quant(h.reshape(b, dim), d.reshape(b, dim), self.model.norm.weight,
                                            self.model.norm.eps, gs)
        y = head.forward_prequant(xn) if quant else head(xn)
        return y.view(b, 1, -1).float()

    def forward(
        self,
        tokens: Tensor,
        pos: Tensor,
        attn_len: int,
        last_idx: Tensor | None = None,
        row0: int = 0,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Logits for ``tokens`` int64 ``[B, L]`` at positions ``pos`` int64 ``[B, L]``.

        ``attn_len`` (static) bounds the cache positions attended to; a real row's ``pos``
        is ``< attn_len`` (an idle slot of a continuous batch may run past it: it then
        attends all ``attn_len`` positions and its output is discarded). With ``last_idx``
        int64 ``[B]`` only those columns go through the head: returns fp32 ``[B, V]``; else
        fp32 ``[B, L, V]``. Cache rows ``[row0, row0 + B)``,
        or the int64 ``[B]`` cache-row indices ``rows`` when given.
        """
        x = self.fill_cache(tokens, pos, attn_len, row0, rows)
        if last_idx is not None:
            x = x[torch.arange(x.shape[0], device=x.device), last_idx]
        return self.epilogue(x)

    def fill_cache(
        self, tokens: Tensor, pos: Tensor, attn_len: int, row0: int = 0, rows: Tensor | None = None
    ) -> Tensor:
        """Run the blocks only: write the keys/values of ``tokens`` int64 ``[B, L]`` at ``pos``
        int64 ``[B, L]`` into cache rows ``[row0, row0 + B)`` (or ``rows`` int64 ``[B]``) and
        return the last hidden states ``[B, L, D]`` (activation dtype, before the final norm).
        A prefill that needs no logits (the continuous batch's refill) stops here."""
        x, cos, sin, mask = self.prologue(tokens, pos, attn_len)
        for blk in self.model.layers:
            x = blk(x, pos, cos, sin, mask, attn_len, row0, rows)
        return x
