"""W4A4 decode: NVFP4 activation quantization fused into the kernel that produces the
activation, instead of one quantizer launch per linear.

A W4A4 linear reads its input as NVFP4 with a static ``input_scale``. Run on its own, the
quantizer (``resetfp4.kernels``) is one more launch per linear: 144 per Qwen3-8B decode
step, ~280 µs of a ~3.2 ms step on an H100 (session-4 profile, docs/bench_decode.md).
Here the producers quantize their own output:

* :func:`add_rmsnorm_quant`: residual add + RMSNorm + quantization (inputs of qkv and
  gate/up);
* :func:`silu_mul_quant`: SiLU(gate) * up + quantization (input of down);
* the attention combine kernel (``attention.decode_attention_fused(out_scale=...)``):
  input of o_proj.

Each returns ``xq = e2m1(code) * fp32(block_scale)`` in the activation dtype (exact there),
which is what the W4A4 GEMV reads; the global scale goes to the GEMV epilogue
(``linear_glue``, act ``"fp4_pre"``). The codes and block scales are those of
``resetfp4.nvfp4.quantize(y, global_scale=input_scale)`` for the producer's output ``y``
(bit-exact: :func:`fake_quant` is tested against it; all kernels share its Triton body).
``y`` itself is computed with the model's roundings (activation dtype after each op), up
to the RMSNorm's fp32 summation order and reciprocal square root and SiLU's exp, as
Inductor's kernels differ from eager. Triton flushes fp32 subnormals to zero in its
divisions: that changes nothing but the sign of a zero for amax or activations below
2^-126 (they quantize to zero either way).
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from resetfp4.format.nvfp4 import e2m1_decode, quantize, unpack_codes

_HAS_TRITON = importlib.util.find_spec("triton") is not None
# The W4A16 decode step runs these producers unquantized too (for the early GEMV start);
# RESETFP4_TRITON_PRODUCERS=0 keeps Inductor's kernels there (an A/B switch, read once).
TRITON_PRODUCERS_W4A16 = os.environ.get("RESETFP4_TRITON_PRODUCERS", "1") != "0"


def available(x: Tensor) -> bool:
    """Whether the fused producers serve activations like ``x`` (CUDA bf16/fp16, Triton)."""
    return x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and _HAS_TRITON


def fake_quant_ref(y: Tensor, gs: Tensor) -> Tensor:
    """Reference: ``e2m1(code) * block_scale`` of ``quantize(y, global_scale=gs)``, in
    ``y.dtype`` (the global scale left out, as the fused kernels return it)."""
    t = quantize(y, global_scale=gs)
    vals = e2m1_decode(unpack_codes(t.packed)) * t.block_scale.float().repeat_interleave(16, dim=-1)
    return vals.to(y.dtype)


def _check(name: str, t: Tensor, k: int | None = None) -> None:
    if t.dtype not in (torch.bfloat16, torch.float16) or t.dim() != 2 or t.stride(-1) != 1:
        raise ValueError(f"{name} must be a 2-D bf16/fp16 tensor [M, K] with a contiguous last dim, "
                         f"got {t.dtype} {tuple(t.shape)} strides {t.stride()}")
    if (k if k is not None else t.shape[1]) % 16:
        raise ValueError(f"{name}: the quantized width must be a multiple of 16 (NVFP4 blocks), "
                         f"got {k if k is not None else t.shape[1]}")


def _check_gs(gs: Tensor, device: torch.device) -> None:
    if gs.dtype != torch.float32 or gs.numel() != 1 or gs.device != device:
        raise ValueError(f"the input scale must be one fp32 value on {device}, got {gs.dtype} "
                         f"{tuple(gs.shape)} on {gs.device}")


@torch.library.custom_op("resetfp4_engine::fake_quant", mutates_args=())
def fake_quant(x: Tensor, gs: Tensor) -> Tensor:
    """``x`` ``[M, K]`` -> its NVFP4 round trip ``e2m1(code) * block_scale`` (``x.dtype``)."""
    _check("x", x)
    _check_gs(gs, x.device)
    from resetfp4.engine import act_quant_kernels as kq

    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    kq.launch_fake_quant(x, gs, out)
    return out


@fake_quant.register_fake
def _(x, gs):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("resetfp4_engine::add_rmsnorm_quant", mutates_args=())
def add_rmsnorm_quant(
    h: Tensor, d: Tensor, w: Tensor, eps: float, gs: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``x = h + d`` and the NVFP4 round trip of ``y = w * rms_norm(x)``: returns ``(x, xq)``.

    ``h``, ``d``: ``[M, K]`` contiguous, one dtype; ``w``: ``[K]``; ``gs``: fp32 [1] (the
    consuming linear's ``input_scale``), or None for ``xq = y`` unquantized (the W4A16
    decode step uses it too: on sm_90 these kernels let the NVFP4 GEMV that follows start
    streaming its weights early, see ``act_quant_kernels.pdl_start``)."""
    _check("h", h)
    if (d.shape != h.shape or d.dtype != h.dtype or d.device != h.device or not h.is_contiguous()
            or not d.is_contiguous()):
        raise ValueError(f"h and d must be contiguous and alike, got {h.dtype} {tuple(h.shape)} and "
                         f"{d.dtype} {tuple(d.shape)}")
    if w.shape != (h.shape[1],) or w.dtype != h.dtype or w.device != h.device:
        raise ValueError(f"the norm weight must be [{h.shape[1]}] {h.dtype} on {h.device}, got "
                         f"{tuple(w.shape)} {w.dtype} on {w.device}")
    if gs is not None:
        _check_gs(gs, h.device)
    from resetfp4.engine import act_quant_kernels as kq

    x, xq = torch.empty_like(h), torch.empty_like(h)
    kq.launch_add_rmsnorm_quant(h, d, w.contiguous(), float(eps), gs, x, xq)
    return x, xq


@add_rmsnorm_quant.register_fake
def _(h, d, w, eps, gs):
    return torch.empty_like(h), torch.empty_like(h)


def add_rmsnorm_quant_ref(h: Tensor, d: Tensor, w: Tensor, eps: float,
                          gs: Tensor | None) -> tuple[Tensor, Tensor]:
    """Eager reference (the model's ops, then :func:`fake_quant_ref` unless ``gs`` is None)."""
    x = h + d
    y = w * torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)
    return x, (fake_quant_ref(y, gs) if gs is not None else y)


@torch.library.custom_op("resetfp4_engine::silu_mul_quant", mutates_args=())
def silu_mul_quant(gu: Tensor, gs: Tensor | None) -> Tensor:
    """``gu`` ``[M, 2N]`` = ``[gate | up]`` -> NVFP4 round trip of ``silu(gate) * up`` ``[M, N]``
    (unquantized when ``gs`` is None, as :func:`add_rmsnorm_quant`)."""
    _check("gu", gu, gu.shape[1] // 2 if gu.dim() == 2 else None)
    if gu.shape[1] % 2:
        raise ValueError(f"gu must be [M, 2N] (gate then up), got {tuple(gu.shape)}")
    if gs is not None:
        _check_gs(gs, gu.device)
    from resetfp4.engine import act_quant_kernels as kq

    xq = torch.empty(gu.shape[0], gu.shape[1] // 2, dtype=gu.dtype, device=gu.device)
    kq.launch_silu_mul_quant(gu, gs, xq)
    return xq


@silu_mul_quant.register_fake
def _(gu, gs):
    return gu.new_empty(gu.shape[0], gu.shape[1] // 2)


def silu_mul_quant_ref(gu: Tensor, gs: Tensor | None) -> Tensor:
    g, u = gu.chunk(2, dim=-1)
    y = torch.nn.functional.silu(g) * u
    return fake_quant_ref(y, gs) if gs is not None else y
