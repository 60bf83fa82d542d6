"""Triton kernels of :mod:`resetfp4.engine.act_quant` (see that module). ``import triton``
happens only here (and in ``attention_kernels``)."""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def pdl_trigger(PDL: tl.constexpr):
    """``griddepcontrol.launch_dependents`` (see :func:`pdl_start`)."""
    if PDL:
        tl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """``griddepcontrol.wait`` (see :func:`pdl_start`)."""
    if PDL:
        tl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def pdl_start(PDL: tl.constexpr):
    """First statement of a kernel launched with ``launch_pdl=PDL`` (:func:`launch_opts`):
    let the next kernel of the stream launch now (the NVFP4 GEMV streams its first weights
    before its own ``griddepcontrol.wait``; sm_90+ only, ``PDL`` is False elsewhere and
    under the interpreter), then wait until the previous grid has finished and its
    writes are visible (``griddepcontrol.wait``). The kernel touches no global memory
    before the wait, so it can start while the previous grid still runs (its launch and
    scheduling overlap that grid's tail) without any race; the previous grid finishing
    implies its own predecessor finished, so the ordering is transitive along the stream."""
    pdl_trigger(PDL)
    pdl_wait(PDL)


@triton.jit
def _e4m3_rne(v):
    """fp32 ``v`` in ``[0, 448]`` rounded to the nearest FP8 E4M3 value (ties to even), as
    fp32: 3 mantissa bits at and above 2^-6, multiples of 2^-9 below (the subnormals)."""
    bits = v.to(tl.int32, bitcast=True)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -0x100000).to(tl.float32, bitcast=True)
    # v * 512 < 8 is exact; adding 1.5 * 2^23 rounds it to an integer, ties to even.
    sub = ((v * 512.0 + 12582912.0) - 12582912.0) * 0.001953125
    return tl.where(v >= 0.015625, normal, sub)


@triton.jit
def fake_quant_blocks(y, gs, R: tl.constexpr, C: tl.constexpr):
    """NVFP4 round trip of fp32 ``y`` ``[R, C]`` (``C % 16 == 0``) with the fp32 global
    scale ``gs``, exactly as ``resetfp4.nvfp4.quantize(y, global_scale=gs)``: per block of
    16 along C, ``s = e4m3(amax / (6 gs))`` (1 for an all-zero block), codes = E2M1 of
    ``y / (s gs)`` with round-half-to-even, saturating at 6. Returns ``e2m1(code) * s``
    (fp32, exact in bf16/fp16: what the GEMV's W4A4 path reads, ``gs`` going to its
    epilogue). Round-to-nearest divisions, as the reference's true division (Triton
    flushes fp32 subnormals: only the sign of a zero can differ, see act_quant)."""
    yb = tl.reshape(y, (R, C // 16, 16))
    amax = tl.max(tl.abs(yb), axis=2)
    bs = tl.math.div_rn(amax, 6.0 * gs)
    bs = tl.where(bs == 0.0, 1.0, bs)
    bs = _e4m3_rne(tl.minimum(bs, 448.0))
    v = tl.math.div_rn(yb, (bs * gs)[:, :, None])
    a = tl.abs(v)
    mag = ((a > 0.25).to(tl.float32) + (a >= 0.75).to(tl.float32) + (a > 1.25).to(tl.float32)
           + (a >= 1.75).to(tl.float32) + (a > 2.5).to(tl.float32) + (a >= 3.5).to(tl.float32)
           + (a > 5.0).to(tl.float32))
    val = tl.where(mag < 4.0, mag * 0.5, tl.where(mag == 7.0, 6.0, mag - 2.0))
    val = tl.where(v < 0.0, -val, val)
    return tl.reshape(val * bs[:, :, None], (R, C))


@triton.jit
def _fake_quant_kernel(x_ptr, out_ptr, gs_ptr, K, sx, so, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = offs < K
    x = tl.load(x_ptr + row * sx + offs, mask=m, other=0.0).to(tl.float32)
    gs = tl.load(gs_ptr)
    q = fake_quant_blocks(tl.reshape(x, (1, BLOCK)), gs, 1, BLOCK)
    tl.store(out_ptr + row * so + offs, tl.reshape(q, (BLOCK,)).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _add_rmsnorm_quant_kernel(h_ptr, d_ptr, w_ptr, x_ptr, xq_ptr, gs_ptr, K, eps,
                              BLOCK: tl.constexpr, FULL: tl.constexpr, QUANT: tl.constexpr,
                              PDL: tl.constexpr):
    """Row ``r``, columns ``[c*BLOCK, c*BLOCK + BLOCK)``: ``x = h + d``; ``y = w * rms_norm(x)``
    (the model's roundings); ``xq`` = the NVFP4 round trip of ``y`` without the global
    scale (``QUANT``; else ``xq = y``). Every program of a row sums the squares of the
    whole row itself (``FULL`` = K rounded up to a power of two; the row is a few KB, read
    from L2), so the columns of one row spread over several SMs without a second pass."""
    pdl_start(PDL)
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    dt = x_ptr.dtype.element_ty
    # Every load first, in one round trip (the slice's loads do not wait for the row's sum).
    offs = c * BLOCK + tl.arange(0, BLOCK)
    m = offs < K
    h = tl.load(h_ptr + row * K + offs, mask=m, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + row * K + offs, mask=m, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    full = tl.arange(0, FULL)
    fm = full < K
    hf = tl.load(h_ptr + row * K + full, mask=fm, other=0.0).to(tl.float32)
    df = tl.load(d_ptr + row * K + full, mask=fm, other=0.0).to(tl.float32)
    xf = (hf + df).to(dt).to(tl.float32)
    r = 1.0 / tl.sqrt_rn(tl.sum(xf * xf, 0) / K + eps)
    x = (h + d).to(dt)
    tl.store(x_ptr + row * K + offs, x, mask=m)
    y = (w * (x.to(tl.float32) * r).to(dt).to(tl.float32)).to(dt).to(tl.float32)
    if QUANT:
        y = tl.reshape(fake_quant_blocks(tl.reshape(y, (1, BLOCK)), tl.load(gs_ptr), 1, BLOCK), (BLOCK,))
    tl.store(xq_ptr + row * K + offs, y.to(dt), mask=m)


@triton.jit
def _silu_mul_quant_kernel(gu_ptr, xq_ptr, gs_ptr, N, sg, BLOCK: tl.constexpr, QUANT: tl.constexpr,
                           PDL: tl.constexpr):
    """Row ``r``, columns ``[c*BLOCK, c*BLOCK + BLOCK)`` of ``gu = [gate | up]`` (``[M, 2N]``):
    ``y = silu(gate) * up`` with the model's roundings (silu rounded to the activation
    dtype, then the product), then (``QUANT``) the NVFP4 round trip without the global scale."""
    pdl_start(PDL)
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    dt = xq_ptr.dtype.element_ty
    offs = c * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    g = tl.load(gu_ptr + row * sg + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * sg + N + offs, mask=m, other=0.0).to(tl.float32)
    s = tl.math.div_rn(g, 1.0 + tl.exp(-g)).to(dt).to(tl.float32)
    y = (s * u).to(dt).to(tl.float32)
    if QUANT:
        y = tl.reshape(fake_quant_blocks(tl.reshape(y, (1, BLOCK)), tl.load(gs_ptr), 1, BLOCK), (BLOCK,))
    tl.store(xq_ptr + row * N + offs, y.to(dt), mask=m)


BLOCK = 512  # columns per program (a multiple of 16: quantization blocks never straddle two)
# num_warps of the two producers (module constants so that a decode-step A/B can set them:
# dev/engine/step_ms.py --set; see dev/engine/run_warps_sweep.sh). NORM_WARPS 8, not 4
# (session 15, H200, W4A16 + NVFP4 head, gen 128, alternating rounds): batch 8 2.1676 /
# 2.1687 / 2.1602 -> 2.1458 / 2.1457 / 2.1446 ms, batch 1 1.8575 / 1.8545 -> 1.8287 /
# 1.8297 ms per step (dev/engine/NOTES.md, session 15).
NORM_WARPS = 8
SILU_WARPS = 4


def launch_fake_quant(x: Tensor, gs: Tensor, out: Tensor) -> None:
    k = x.shape[1]
    _fake_quant_kernel[(x.shape[0],)](x, out, gs, k, x.stride(0), out.stride(0),
                                      BLOCK=max(16, triton.next_power_of_2(k)))


_PDL_OFF = os.environ.get("RESETFP4_NO_PDL") == "1"
_PDL_LAUNCH = os.environ.get("RESETFP4_TRITON_PDL_LAUNCH", "1") != "0"


@functools.cache
def _cc_major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def pdl(t: Tensor) -> bool:
    """Whether kernels on ``t``'s device may use programmatic dependent launch: an NVIDIA GPU
    of compute capability 9.0+ (not ROCm, whose MI300 also reports major 9), not the
    interpreter, not turned off by ``RESETFP4_NO_PDL=1`` (as for the CUDA kernels)."""
    return (t.is_cuda and torch.version.hip is None and not _PDL_OFF
            and os.environ.get("TRITON_INTERPRET") != "1"
            and _cc_major(t.device.index if t.device.index is not None else torch.cuda.current_device()) >= 9)


@functools.cache
def triton_launches_pdl() -> bool:
    """Whether this Triton accepts ``launch_pdl`` (added after Triton 3.3; older releases
    reject the keyword). Without it the kernels still trigger and wait, which is then
    harmless: a plainly launched kernel starts after its predecessor has finished."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})


def launch_opts(t: Tensor) -> dict:
    """Keyword arguments of a Triton launch on ``t``'s device for a kernel that starts with
    :func:`pdl_start`: with PDL (:func:`pdl`) it is launched with programmatic dependent
    launch (where Triton supports it) and signals its own dependents;
    ``RESETFP4_TRITON_PDL_LAUNCH=0`` keeps the trigger but launches the kernel plainly
    (session-5 behaviour, for an A/B). ``launch_pdl`` is passed only when True."""
    on = pdl(t)
    if on and _PDL_LAUNCH and triton_launches_pdl():
        return {"PDL": True, "launch_pdl": True}
    return {"PDL": on}


def launch_add_rmsnorm_quant(h: Tensor, d: Tensor, w: Tensor, eps: float, gs: Tensor | None, x: Tensor,
                             xq: Tensor) -> None:
    """``gs`` None: ``xq`` receives the normalized activations unquantized (W4A16)."""
    k = h.shape[1]
    _add_rmsnorm_quant_kernel[(h.shape[0], triton.cdiv(k, BLOCK))](
        h, d, w, x, xq, gs if gs is not None else w, k, eps, BLOCK=BLOCK,
        FULL=max(16, triton.next_power_of_2(k)), QUANT=gs is not None, num_warps=NORM_WARPS,
        **launch_opts(h))


def launch_silu_mul_quant(gu: Tensor, gs: Tensor | None, xq: Tensor) -> None:
    """``gs`` None: ``xq`` receives ``silu(gate) * up`` unquantized (W4A16)."""
    n = xq.shape[1]
    _silu_mul_quant_kernel[(gu.shape[0], triton.cdiv(n, BLOCK))](
        gu, xq, gs if gs is not None else gu, n, gu.stride(0), BLOCK=BLOCK, QUANT=gs is not None,
        num_warps=SILU_WARPS, **launch_opts(gu))
