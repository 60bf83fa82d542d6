"""Where the engine meets the NVFP4 linear kernels (the only module that knows their API).

On CUDA, when :mod:`resetfp4.ops` provides ``nvfp4_linear`` (and optionally a weight
preparation/repacking step), it is used. Everywhere else (CPU, or kernels not built) the
exact reference semantics of :func:`resetfp4.kernels.reference.nvfp4_linear_ref` are used
with the dequantized fp32 weight cached once (the reference would dequantize it on every
call; the result is bit-identical). A fallback on CUDA is announced once on stderr.
"""

from __future__ import annotations

import importlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from resetfp4.engine.log import warn_once
from resetfp4.format.nvfp4 import NVFP4Tensor, quantize


@dataclass
class PreparedWeight:
    """An NVFP4 weight ready for the fastest available path (exactly one of the fields).

    ``kernel``: :class:`resetfp4.ops.PreparedNVFP4Weight` (repacked for the CUDA kernels;
    the plain NVFP4 tensor is not kept, :meth:`nvfp4` rebuilds it exactly);
    ``w`` + ``dense``: the NVFP4 tensor ``[N, K]`` and its fp32 dequantized copy for the
    reference path.
    """

    w: NVFP4Tensor | None = None
    kernel: Any = None
    dense: Tensor | None = None
    # Optional (kernel path): the weight dequantized once, in the activation dtype, for
    # inputs of more than MAX_SMALL_M rows (see cache_large_m).
    large_m: Tensor | None = None
    # A 1-byte tensor that names this weight inside the engine's custom op (see nvfp4_linear_op).
    key: Tensor = field(default=None)  # type: ignore[assignment]

    def nvfp4(self) -> NVFP4Tensor:
        """The weight as an :class:`NVFP4Tensor` (for export)."""
        return self.w if self.w is not None else self.kernel.to_nvfp4()

    @property
    def shape(self) -> tuple[int, int]:
        if self.w is not None:
            return tuple(self.w.shape)
        return (self.kernel.n, self.kernel.k)

    @property
    def nbytes(self) -> int:
        """Bytes a matmul reads: codes (K/2 per row) + fp8 block scales (K/16) + global scale."""
        n, k = self.shape
        return n * k // 2 + n * k // 16 + 4


def _ops() -> Any | None:
    try:
        ops = importlib.import_module("resetfp4.ops")
    except ImportError:
        return None
    return ops if hasattr(ops, "nvfp4_linear") else None


def kernels_available(device: torch.device) -> tuple[bool, str]:
    """Whether the CUDA NVFP4 kernels can serve ``device``; the reason when not."""
    if device.type != "cuda":
        return False, "not a CUDA device (the reference linears are used)"
    ops = _ops()
    if ops is None:
        return False, "resetfp4.ops.nvfp4_linear is not available (kernels not built?)"
    if not hasattr(ops, "prepare_weight"):
        return False, "resetfp4.ops.prepare_weight is missing"
    return True, ""


SMALL_M = 16  # rows the NVFP4 GEMV serves (resetfp4.kernels.nvfp4_gemv.MAX_SMALL_M)

_BY_KEY: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _register(pw: PreparedWeight, device: torch.device) -> PreparedWeight:
    pw.key = torch.zeros(1, dtype=torch.uint8, device=device)
    _BY_KEY[(device.type, pw.key.data_ptr())] = pw
    return pw


def prepare(w: NVFP4Tensor) -> PreparedWeight:
    """Prepare ``w`` (on its device) for :func:`nvfp4_linear`."""
    ok, why = kernels_available(w.device)
    if ok:
        return _register(PreparedWeight(kernel=_ops().prepare_weight(w)), w.device)
    if w.device.type == "cuda":
        warn_once(f"NVFP4 CUDA kernels unavailable ({why}); using the slow reference linears")
    return _register(PreparedWeight(w=w, dense=w.dequantize(torch.float32)), w.device)


def concat_rows(parts: list[PreparedWeight]) -> NVFP4Tensor | None:
    """The row-concatenation of NVFP4 weights ``[N_i, K]`` -> ``[sum N_i, K]``, exact, or
    ``None`` when their global scales differ (fusing them would need requantization)."""
    ws = [p.nvfp4() for p in parts]
    g0 = ws[0].global_scale.float().reshape(())
    if any(not torch.equal(w.global_scale.float().reshape(()), g0) for w in ws[1:]):
        return None
    packed = torch.cat([w.packed for w in ws])
    scales = torch.cat([w.block_scale for w in ws])
    return NVFP4Tensor(packed, scales, ws[0].global_scale)


@torch.library.custom_op("resetfp4_engine::nvfp4_linear", mutates_args=())
def nvfp4_linear_op(
    x: Tensor, key: Tensor, act: str, input_scale: Tensor | None, bias: Tensor | None, n: int
) -> Tensor:
    """:func:`nvfp4_linear` of the weight registered under ``key`` (its ``[1]`` uint8 key
    tensor), as one opaque op: torch.compile traces it without graph breaks (the kernels'
    Python wrapper reads data pointers) and reuses one compiled block for every layer.
    ``n`` = the weight's N (for the output shape). The W4A4 activation workspace is
    private to the weight, so the op is functional from the caller's view."""
    pw = _BY_KEY.get((key.device.type, key.data_ptr()))
    if pw is None:
        raise RuntimeError("NVFP4 weight key is not registered; prepare weights with linear_glue.prepare")
    return nvfp4_linear(x, pw, act=act, input_scale=input_scale, bias=bias)


@nvfp4_linear_op.register_fake
def _(x: Tensor, key: Tensor, act: str, input_scale: Tensor | None, bias: Tensor | None, n: int) -> Tensor:
    return x.new_empty(*x.shape[:-1], n)


def nvfp4_linear(
    x: Tensor, pw: PreparedWeight, *, act: str, input_scale: Tensor | None, bias: Tensor | None
) -> Tensor:
    """``x`` ``[..., K]`` (bf16/fp32) times NVFP4 ``[N, K]`` -> ``[..., N]`` in ``x.dtype``.

    ``act``: ``"bf16"`` (W4A16, activations as given), ``"fp4"`` (W4A4: activations
    quantized to NVFP4 with the static ``input_scale``) or ``"fp4_pre"`` (W4A4 whose
    producer already quantized ``x``: ``x`` holds ``e2m1(code) * block_scale`` values,
    see :mod:`resetfp4.engine.act_quant`, and ``input_scale`` is their global scale).
    """
    if act == "fp4_pre":
        return _prequantized(x, pw, input_scale, bias)
    if pw.kernel is not None:
        # The kernels take a contiguous [M, K] x and a bias of x's dtype.
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        b = bias.to(x.dtype) if bias is not None else None
        if pw.large_m is not None and x2.shape[0] > SMALL_M and pw.large_m.dtype == x.dtype:
            y = _large_m_cached(x2, pw, act, input_scale, b)
        else:
            y = _ops().nvfp4_linear(x2, pw.kernel, act=act, input_scale=input_scale, bias=b)
        return y.reshape(*x.shape[:-1], y.shape[-1])
    if act == "fp4":
        xf = quantize(x, global_scale=input_scale).dequantize(torch.float32)
    elif act == "bf16":
        xf = x.float()
    else:
        raise ValueError(f"act must be 'bf16' (W4A16) or 'fp4' (W4A4), got {act!r}")
    y = xf @ pw.dense.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@torch.library.custom_op("resetfp4_engine::nvfp4_swiglu", mutates_args=())
def nvfp4_swiglu_op(
    x: Tensor, key: Tensor, act: str, input_scale: Tensor | None, out_scale: Tensor | None,
    bias: Tensor | None, inter: int
) -> Tensor:
    """:func:`swiglu` of the gate/up weight registered under ``key`` (as :func:`nvfp4_linear_op`)."""
    pw = _BY_KEY.get((key.device.type, key.data_ptr()))
    if pw is None:
        raise RuntimeError("NVFP4 weight key is not registered; prepare weights with linear_glue.prepare")
    return swiglu(x, pw, act=act, input_scale=input_scale, out_scale=out_scale, bias=bias)


@nvfp4_swiglu_op.register_fake
def _(x: Tensor, key: Tensor, act: str, input_scale: Tensor | None, out_scale: Tensor | None,
      bias: Tensor | None, inter: int) -> Tensor:
    return x.new_empty(*x.shape[:-1], inter)


def swiglu(x: Tensor, pw: PreparedWeight, *, act: str, input_scale: Tensor | None,
           out_scale: Tensor | None, bias: Tensor | None) -> Tensor:
    """``silu(gate) * up`` ``[..., I]`` for a gate/up weight ``[2I, K]`` whose rows are
    interleaved per 16 (``resetfp4.kernels.nvfp4_gemv.interleave_gate_up``; ``bias`` the
    same way). ``act``: ``"bf16"`` or ``"fp4_pre"`` as in :func:`nvfp4_linear`.
    ``out_scale`` (fp32, the down projection's ``input_scale``) or None: ``h`` is returned
    as its NVFP4 round trip without the global scale (what act ``"fp4_pre"`` reads), or
    unquantized.

    On the kernels at most 16 rows run as one GEMV whose epilogue applies SiLU, the
    product and the quantization (no separate producer kernel). Otherwise the linear, then
    ``act_quant.silu_mul_quant`` (CUDA) or the eager ops with the same roundings.
    """
    if act not in ("bf16", "fp4_pre"):
        raise ValueError(f"swiglu takes act 'bf16' or 'fp4_pre', got {act!r}")
    if act == "fp4_pre" and input_scale is None:
        raise ValueError("act 'fp4_pre' needs the input_scale the activations were quantized with")
    n = pw.shape[0]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    k = pw.kernel
    if k is not None and x2.shape[0] <= SMALL_M and k.swiglu_tiles is not None:
        if x2.data_ptr() % 16:
            x2 = x2.clone()
        dev = x2.device
        g_x = input_scale.to(device=dev, dtype=torch.float32).reshape(1) if act == "fp4_pre" else None
        g_q = out_scale.to(device=dev, dtype=torch.float32).reshape(1) if out_scale is not None else None
        b = bias.to(x.dtype) if bias is not None else None
        r = k.swiglu_tiles[8 if x2.shape[0] <= 8 else 16]
        h = _kg().nvfp4_gemv_swiglu(x2, k.packed, k.global_scale, g_x, g_q, b, r, n // 2, k.exact_scales)
        return h.reshape(*x.shape[:-1], n // 2)
    from resetfp4.engine import act_quant
    from resetfp4.kernels.nvfp4_gemv import deinterleave_cols, swiglu_ref

    gu = nvfp4_linear(x2, pw, act=act, input_scale=input_scale, bias=bias)
    if act_quant.available(gu):  # the Triton SiLU-mul producer (no host sync in a graph)
        h = act_quant.silu_mul_quant(torch.cat(deinterleave_cols(gu), dim=-1), out_scale)
    else:
        h = swiglu_ref(gu, out_scale)
    return h.reshape(*x.shape[:-1], n // 2)


def _kg() -> Any:
    return importlib.import_module("resetfp4.kernels.nvfp4_gemv")


def cache_large_m(pw: PreparedWeight, dtype: torch.dtype) -> int:
    """Keep ``pw`` dequantized once in ``dtype`` for inputs of more than ``MAX_SMALL_M`` rows
    (prefill, large-batch decode); returns the bytes added (0 on the reference path).

    The kernels' large-M path dequantizes the whole weight on every call and then runs
    cuBLAS; with the cache only the cuBLAS GEMM remains, with the same dequantized values
    (the same dequantize kernel), so results are unchanged. It costs 2 bytes per weight
    (3.6x the NVFP4 bytes): meant for evaluation at large batch, where the GEMMs are
    compute-bound and the decode step would otherwise re-dequantize every weight.
    """
    if pw.kernel is None:
        return 0
    if pw.large_m is None or pw.large_m.dtype != dtype:
        k = pw.kernel
        pw.large_m = torch.empty(k.n, k.k, dtype=dtype, device=k.packed.device)
        _kg().nvfp4_dequant(k.packed, k.global_scale, pw.large_m)
    return pw.large_m.numel() * pw.large_m.element_size()


def _large_m_cached(x: Tensor, pw: PreparedWeight, act: str, input_scale: Tensor | None,
                    bias: Tensor | None) -> Tensor:
    """What ``resetfp4.ops.nvfp4_linear`` computes for > MAX_SMALL_M rows, with the
    dequantized weight taken from the cache (``x`` ``[M, K]`` contiguous)."""
    if act == "fp4":
        if input_scale is None:
            raise ValueError("W4A4 needs the static input_scale of the linear")
        kg = _kg()
        if x.data_ptr() % 16:  # the quantizer reads 16-byte vectors
            x = x.clone()
        ws = kg.ActWorkspace(x.shape[0], x.shape[1], x.dtype, x.device)
        gs = input_scale.to(device=x.device, dtype=torch.float32).reshape(1)
        xq = ws.quantize(x, gs)
        x = (xq.float() * ws.gs).to(x.dtype)
    elif act != "bf16":
        raise ValueError(f"act must be 'bf16' (W4A16) or 'fp4' (W4A4), got {act!r}")
    return torch.nn.functional.linear(x, pw.large_m, bias)


def _prequantized(x: Tensor, pw: PreparedWeight, input_scale: Tensor | None, bias: Tensor | None) -> Tensor:
    """W4A4 on an already quantized ``x`` (act ``"fp4_pre"``): the GEMV with the activation
    global scale in its epilogue (what the ``"fp4"`` path runs after its own quantizer),
    or, above the GEMV's rows, ``x * input_scale`` through the large-M / reference path."""
    if input_scale is None:
        raise ValueError("act 'fp4_pre' needs the input_scale the activations were quantized with")
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    b = bias.to(x.dtype) if bias is not None else None
    gs = input_scale.to(device=x.device, dtype=torch.float32).reshape(1)
    if pw.kernel is not None and x2.shape[0] <= SMALL_M:
        k = pw.kernel
        if x2.data_ptr() % 16:
            x2 = x2.clone()
        s, r = k.plans[8 if x2.shape[0] <= 8 else 16]
        y = _kg().nvfp4_gemv(x2, k.packed, k.global_scale, gs, b, s, r, k.n, k.exact_scales)
    elif pw.kernel is not None:  # > SMALL_M rows: as the "fp4" large-M path
        xs = (x2.float() * gs).to(x.dtype)
        if pw.large_m is not None and pw.large_m.dtype == x.dtype:
            y = torch.nn.functional.linear(xs, pw.large_m, b)
        else:
            y = nvfp4_linear(xs, pw, act="bf16", input_scale=None, bias=bias)
    else:  # reference linears, fp32: (e2m1 s) gs where "fp4" has e2m1 (s gs), one rounding apart
        y = (x2.float() * gs) @ pw.dense.T
        y = (y + bias.float() if bias is not None else y).to(x.dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])
