"""NVFP4 linear on CUDA: load-time repack, torch custom ops, small-M / large-M dispatch.

Layout produced by :func:`repack` (documented in full in ``csrc/nvfp4_common.cuh``): a
*unit* is 64 rows x 16 K (one e4m3 scale per row); units ``u = ng * KS + st`` with
``NG = ceil(N / 64)``, ``KS = K / 16`` are stored one after the other, so any range of units
is one contiguous byte range.

* ``codes`` uint8 ``[NG * KS, 512]``: 32 lanes x 4 words; lane ``l`` (``g = l // 4``,
  ``t = l % 4``), word ``j`` holds the ``mma.m16n8k16`` A fragment of rows
  ``64*ng + 16*j + {g, g+8}``: register ``r`` = row ``16*j + g + 8*(r & 1)``,
  ``k = 16*st + 2*t + 8*(r >> 1) + h`` (``h`` = half), with the code bits at the positions
  of :data:`CODE_BITS` (chosen so that the kernel decodes a register with 1-4 ALU ops).
* ``scales`` uint8 (e4m3 bits) ``[NG * KS, 64]``: byte ``8*g + 2*j + hi`` = scale of row
  ``64*ng + 16*j + g + 8*hi``, block ``st``.

Padded rows have code 0 and scale 0. Same bytes as the input (0.5625 B per weight plus
< 64 padded rows), so the kernel reads each weight byte exactly once.
"""

from __future__ import annotations

import math
import os

import torch

from resetfp4.format.nvfp4 import NVFP4Tensor, unpack_codes

ROWS_PER_GROUP = 64
MAX_SMALL_M = 16
# The GEMV kernel fits 2 CTAs (288 threads, <= 103 KB smem) per SM; RESETFP4_CTAS_PER_SM=1
# (read at import) is for A/B timing only.
CTAS_PER_SM = 1 if os.environ.get("RESETFP4_CTAS_PER_SM", "") == "1" else 2
_DTYPES = (torch.bfloat16, torch.float16)
# Bit positions (m, e0, e1, sign) of register r's low-half code in a 32-bit word; the
# high-half code sits 16 bits higher (mod 32). Mirrors decode_word in nvfp4_common.cuh.
CODE_BITS = ((0, 1, 2, 9), (6, 7, 8, 15), (10, 11, 12, 19), (4, 5, 14, 13))


def _fragments(codes: torch.Tensor, ng: int, ks: int) -> torch.Tensor:
    """codes [64*ng, 16*ks] -> [ng, ks, g, t, j, r, h] (A-fragment order)."""
    c = codes.view(ng, 4, 2, 8, ks, 2, 4, 2)  # ng, j, rlo, g, st, rhi, t, h
    c = c.permute(0, 4, 3, 6, 1, 5, 2, 7)     # ng, st, g, t, j, rhi, rlo, h
    return c.reshape(ng, ks, 8, 4, 4, 4, 2)    # r = 2*rhi + rlo


def repack(w: NVFP4Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 ``[N, K]`` -> (codes ``[NG*KS, 512]`` uint8, scales ``[NG*KS, 64]`` uint8)."""
    if len(w.shape) != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(w.shape)}")
    n, k = w.shape
    ng, ks = math.ceil(n / ROWS_PER_GROUP), k // 16
    codes = unpack_codes(w.packed)
    scales = w.block_scale.view(torch.uint8)
    pad = ng * ROWS_PER_GROUP - n
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad, k)])
        scales = torch.cat([scales, scales.new_zeros(pad, ks)])
    f = _fragments(codes, ng, ks)
    word = torch.zeros(f.shape[:5], dtype=torch.int64, device=f.device)
    for r, bits in enumerate(CODE_BITS):
        for h in range(2):
            for b, pos in enumerate(bits):
                word |= ((f[..., r, h] >> b) & 1).long() << ((pos + 16 * h) % 32)
    word = torch.where(word >= 2**31, word - 2**32, word)  # as signed 32-bit
    word = word.to(torch.int32).contiguous()  # [ng, ks, g, t, j] little-endian words
    packed = word.view(torch.uint8).reshape(ng * ks, 512)
    s = scales.view(ng, 4, 2, 8, ks).permute(0, 4, 3, 1, 2)  # ng, st, g, j, hi
    return packed, s.contiguous().reshape(ng * ks, 64)


def unrepack(codes: torch.Tensor, scales: torch.Tensor, n: int, k: int,
             global_scale: torch.Tensor) -> NVFP4Tensor:
    """Inverse of :func:`repack` (tests and the CPU fallback)."""
    ng, ks = math.ceil(n / ROWS_PER_GROUP), k // 16
    word = codes.reshape(ng, ks, 8, 4, 16).view(torch.int32).long() & 0xFFFFFFFF  # g, t, j
    f = torch.zeros(ng, ks, 8, 4, 4, 4, 2, dtype=torch.uint8, device=codes.device)
    for r, bits in enumerate(CODE_BITS):
        for h in range(2):
            for b, pos in enumerate(bits):
                f[..., r, h] |= (((word >> ((pos + 16 * h) % 32)) & 1) << b).to(torch.uint8)
    c = f.view(ng, ks, 8, 4, 4, 2, 2, 2)       # ng, st, g, t, j, rhi, rlo, h
    c = c.permute(0, 4, 6, 2, 1, 5, 3, 7)      # ng, j, rlo, g, st, rhi, t, h
    full = c.reshape(ng * ROWS_PER_GROUP, ks * 16)[:n]
    packed = full[:, 0::2] | (full[:, 1::2] << 4)
    s = scales.view(ng, ks, 8, 4, 2).permute(0, 3, 4, 2, 1)  # ng, j, hi, g, st
    s = s.reshape(ng * ROWS_PER_GROUP, ks)[:n]
    return NVFP4Tensor(packed.contiguous(), s.contiguous().view(torch.float8_e4m3fn),
                       global_scale.float().reshape(()).clone())


def choose_ctas(n: int, k: int, sm_count: int) -> int:
    """CTAs for the stream-K GEMV: 2 per SM, never more than there are 64x16 units."""
    units = math.ceil(n / ROWS_PER_GROUP) * (k // 16)
    return max(1, min(units, CTAS_PER_SM * sm_count))


def needs_exact_scales(w: NVFP4Tensor) -> bool:
    """True if some block scale is zero, subnormal or negative (one device sync).

    The kernel's fast scale decode (one integer multiply-add) is exact only for normal
    e4m3 values; otherwise it uses the general decode (two extra bf16 products per pair
    of scales).
    """
    b = w.block_scale.view(torch.uint8)
    return bool((((b & 0x78) == 0) | ((b & 0x80) != 0)).any())


def partial_slots(n: int, k: int, ctas: int) -> int:
    """Split-K partial slots the kernel may use: one per (CTA, row group) segment."""
    ng, units = math.ceil(n / ROWS_PER_GROUP), math.ceil(n / ROWS_PER_GROUP) * (k // 16)
    per = math.ceil(units / ctas)
    return math.ceil(units / per) + ng


def check_small_m(x: torch.Tensor) -> None:
    """The GEMV entry takes 1 <= M <= 16 rows of a 2-D x."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_SMALL_M:
        raise ValueError(f"the NVFP4 GEMV takes x [M, K] with 1 <= M <= {MAX_SMALL_M}, got shape "
                         f"{tuple(x.shape)}; use resetfp4.ops.nvfp4_linear for larger M")


def _check_quant_x(x: torch.Tensor, g_x: torch.Tensor | None, quant_x: bool,
                   xq: torch.Tensor | None, qsync: torch.Tensor | None) -> None:
    if not quant_x:
        return
    if g_x is None:
        raise ValueError("quant_x=True (fused W4A4) needs the static activation scale g_x "
                         "(fp32 [1]); pass it, or quantize x first and use quant_x=False")
    if (xq is None or xq.dtype != x.dtype or xq.dim() != 2 or xq.shape[0] < x.shape[0]
            or xq.shape[1] != x.shape[1] or not xq.is_contiguous()):
        raise ValueError(f"quant_x=True needs xq: a contiguous {x.dtype} [>= {x.shape[0]}, "
                         f"{x.shape[1]}] workspace (ActWorkspace.xq), got "
                         f"{None if xq is None else (xq.dtype, tuple(xq.shape))}")
    if qsync is None or qsync.dtype != torch.int64 or qsync.numel() != 2:
        raise ValueError("quant_x=True needs qsync: an int64 [2] tensor of zeros, kept across "
                         "calls (ActWorkspace.qsync)")


# ---- custom ops (registered lazily: the library needs no GPU to import) ----

def _ext():
    from resetfp4.kernels.build import load_extension
    return load_extension()


@torch.library.custom_op("resetfp4::nvfp4_gemv_out",
                         mutates_args=("y", "partial", "counter", "xq", "qsync"))
def nvfp4_gemv_out(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                   g_w: torch.Tensor, g_x: torch.Tensor | None, bias: torch.Tensor | None,
                   y: torch.Tensor, partial: torch.Tensor, counter: torch.Tensor,
                   xq: torch.Tensor | None, qsync: torch.Tensor | None, ctas: int,
                   exact: bool = True, quant_x: bool = False) -> None:
    """y[M, N] = (x[M, K] @ dequant(W)^T) * g_x + bias; M <= 16; allocates nothing.

    ``partial`` fp32 ``[partial_slots(N, K, ctas), 16, 64]`` and ``counter`` int32 ``[NG]``
    (zero at rest) are the split-K workspace of this weight. ``exact=False`` selects the
    faster scale decode, valid only when every block scale is a normal e4m3
    (:func:`needs_exact_scales`). ``quant_x=True`` is fused W4A4 with a static activation
    scale: the kernel quantizes x exactly as ``resetfp4.nvfp4.quantize(x, global_scale=g_x)``
    (``g_x`` fp32 ``[1]``) into ``xq`` (x.dtype ``[>= M, K]``) and multiplies by that;
    ``qsync`` int64 ``[2]`` (zeros when created, never reset) orders the CTAs
    (:class:`ActWorkspace` holds both; ``None`` otherwise). They have no default: torch 2.11
    drops defaulted trailing arguments before bumping the versions of mutated ones.
    """
    check_small_m(x)
    _check_quant_x(x, g_x, quant_x, xq, qsync)
    _ext().gemv(x, codes, scales, g_w, g_x, bias, y, partial, counter, ctas, exact, quant_x,
                xq, qsync)


@torch.library.custom_op("resetfp4::nvfp4_gemv",
                         mutates_args=("partial", "counter", "xq", "qsync"))
def nvfp4_gemv(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, g_w: torch.Tensor,
               g_x: torch.Tensor | None, bias: torch.Tensor | None, partial: torch.Tensor,
               counter: torch.Tensor, xq: torch.Tensor | None, qsync: torch.Tensor | None,
               ctas: int, n: int, exact: bool = True, quant_x: bool = False) -> torch.Tensor:
    """Functional form of :func:`nvfp4_gemv_out`: returns a new ``[M, n]`` in x.dtype."""
    check_small_m(x)
    _check_quant_x(x, g_x, quant_x, xq, qsync)
    y = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    _ext().gemv(x, codes, scales, g_w, g_x, bias, y, partial, counter, ctas, exact, quant_x,
                xq, qsync)
    return y


@nvfp4_gemv.register_fake
def _(x, codes, scales, g_w, g_x, bias, partial, counter, xq, qsync, ctas, n, exact=True,
      quant_x=False):
    return x.new_empty(x.shape[0], n)


@torch.library.custom_op("resetfp4::nvfp4_quant_act",
                         mutates_args=("sync", "gs_out", "xq", "codes", "scales"))
def nvfp4_quant_act(x: torch.Tensor, gs_static: torch.Tensor | None, sync: torch.Tensor,
                    gs_out: torch.Tensor, xq: torch.Tensor, codes: torch.Tensor,
                    scales: torch.Tensor) -> None:
    """Quantize x [M, K] like ``resetfp4.nvfp4.quantize`` (one launch, no host sync).

    Writes codes (uint8 [M, K/2]), scales (uint8 e4m3 bits [M, K/16]), the global scale
    (fp32 [1]) and ``xq = e2m1(code) * fp32(scale)`` (x.dtype [M, K], exact).
    """
    _ext().quant_act(x, gs_static, sync, gs_out, xq, codes, scales)


@torch.library.custom_op("resetfp4::nvfp4_dequant", mutates_args=("w",))
def nvfp4_dequant(codes: torch.Tensor, scales: torch.Tensor, g_w: torch.Tensor,
                  w: torch.Tensor) -> None:
    """w[N, K] = e2m1(code) * (fp32(scale) * g_w) in w.dtype (bit-exact dequantize)."""
    _ext().dequant(codes, scales, g_w, w)


class ActWorkspace:
    """Preallocated buffers for quantizing up to ``rows`` activation rows of width k."""

    def __init__(self, rows: int, k: int, dtype: torch.dtype, device: torch.device) -> None:
        self.gs = torch.ones(1, dtype=torch.float32, device=device)
        # grid-wide amax: {amax bits, arrived, left, unused}, zero at rest
        self.sync = torch.zeros(4, dtype=torch.int32, device=device)
        # fused static W4A4 GEMV: {CTA tickets, quantizer CTAs done}; only ever grows
        self.qsync = torch.zeros(2, dtype=torch.int64, device=device)
        self.xq = torch.empty(rows, k, dtype=dtype, device=device)
        self.codes = torch.empty(rows, k // 2, dtype=torch.uint8, device=device)
        self.scales = torch.empty(rows, k // 16, dtype=torch.uint8, device=device)

    def quantize(self, x: torch.Tensor, gs_static: torch.Tensor | None) -> torch.Tensor:
        m = x.shape[0]
        xq, codes, scales = self.xq[:m], self.codes[:m], self.scales[:m]
        nvfp4_quant_act(x, gs_static, self.sync, self.gs, xq, codes, scales)
        return xq


@nvfp4_gemv_out.register_fake
def _(x, codes, scales, g_w, g_x, bias, y, partial, counter, xq, qsync, ctas, exact=True,
      quant_x=False):
    return None


@nvfp4_quant_act.register_fake
def _(x, gs_static, sync, gs_out, xq, codes, scales):
    return None


@nvfp4_dequant.register_fake
def _(codes, scales, g_w, w):
    return None
