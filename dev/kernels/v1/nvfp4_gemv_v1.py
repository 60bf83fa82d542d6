"""NVFP4 linear on CUDA: load-time repack, torch custom ops, small-M / large-M dispatch.

Layout produced by :func:`repack` (documented in full in ``csrc/nvfp4_gemv.cu``):

* ``codes`` uint8 ``[NG, KS, 32, 16]`` with ``NG = ceil(N / 64)``, ``KS = K / 16``: for each
  group of 64 rows and each 16-wide K step, 32 lanes x 16 bytes, lane ``l`` holding the
  ``mma.m16n8k16`` B fragments (rows ``64*ng + 8*j + l//4``, ``k = 2*(l%4) + {0,1,8,9}``)
  of the group's 8 row-tiles ``j``. Padded rows have code 0.
* ``scales`` uint8 (e4m3 bits) ``[NG, KS, 8, 8]``: ``[ng, st, g, j]`` = scale of row
  ``64*ng + 8*j + g``, block ``st``. Padded rows have scale 0.

Same bytes as the input (0.5625 B per weight plus < 64 padded rows), so the kernel reads
each weight byte exactly once with 16-byte coalesced loads.
"""

from __future__ import annotations

import math

import torch

from resetfp4.format.nvfp4 import NVFP4Tensor, unpack_codes

ROWS_PER_GROUP = 64
MAX_SMALL_M = 16
_DTYPES = (torch.bfloat16, torch.float16)


def repack(w: NVFP4Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 ``[N, K]`` -> (codes ``[NG, KS, 32, 16]`` uint8, scales ``[NG, KS, 8, 8]`` uint8)."""
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
    # codes[n, k] with n = 64*ng + 8*(2*wd + jj) + g, k = 16*st + 8*b + 2*t + e
    c = codes.view(ng, 4, 2, 8, ks, 2, 4, 2)  # ng, wd, jj, g, st, b, t, e
    c = c.permute(0, 4, 3, 6, 1, 7, 2, 5)     # ng, st, g, t, wd, e, jj, b
    packed = c[..., 0] | (c[..., 1] << 4)      # byte (wd, e, jj): pair b=0 low, b=1 high
    s = scales.view(ng, 8, 8, ks).permute(0, 3, 2, 1)  # ng, st, g, j
    return packed.contiguous().view(ng, ks, 32, 16), s.contiguous()


def unrepack(codes: torch.Tensor, scales: torch.Tensor, n: int,
             global_scale: torch.Tensor) -> NVFP4Tensor:
    """Inverse of :func:`repack` (tests and the CPU fallback)."""
    ng, ks = codes.shape[0], codes.shape[1]
    b = codes.view(ng, ks, 8, 4, 4, 2, 2)      # ng, st, g, t, wd, e, jj
    nib = torch.stack((b & 15, b >> 4), dim=-1)  # ..., b
    c = nib.permute(0, 4, 6, 2, 1, 7, 3, 5)     # ng, wd, jj, g, st, b, t, e
    full = c.reshape(ng * ROWS_PER_GROUP, ks * 16)[:n]
    packed = full[:, 0::2] | (full[:, 1::2] << 4)
    s = scales.permute(0, 3, 2, 1).reshape(ng * ROWS_PER_GROUP, ks)[:n]
    return NVFP4Tensor(packed.contiguous(), s.contiguous().view(torch.float8_e4m3fn),
                       global_scale.float().reshape(()).clone())


def choose_splits(n: int, k: int, sm_count: int) -> int:
    """Split-K factor so that ~2 CTAs (16 warps) per SM stream weights, >= 4 K-steps/warp."""
    ng, ks = math.ceil(n / ROWS_PER_GROUP), k // 16
    want = math.ceil(2 * sm_count / ng)
    return max(1, min(want, ks // 32))


def check_small_m(x: torch.Tensor) -> None:
    """The GEMV entry takes 1 <= M <= 16 rows of a 2-D x."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_SMALL_M:
        raise ValueError(f"the NVFP4 GEMV takes x [M, K] with 1 <= M <= {MAX_SMALL_M}, got shape "
                         f"{tuple(x.shape)}; use resetfp4.ops.nvfp4_linear for larger M")


# ---- custom ops (registered lazily: the library needs no GPU to import) ----

def _ext():
    from resetfp4.kernels.build import load_extension
    return load_extension()


@torch.library.custom_op("resetfp4::nvfp4_gemv_out", mutates_args=("y", "partial", "counter"))
def nvfp4_gemv_out(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                   g_w: torch.Tensor, g_x: torch.Tensor | None, bias: torch.Tensor | None,
                   y: torch.Tensor, partial: torch.Tensor, counter: torch.Tensor,
                   splits: int) -> None:
    """y[M, N] = (x[M, K] @ dequant(W)^T) * g_x + bias; M <= 16; allocates nothing."""
    check_small_m(x)
    _ext().gemv(x, codes, scales, g_w, g_x, bias, y, partial, counter, splits)


@torch.library.custom_op("resetfp4::nvfp4_gemv", mutates_args=("partial", "counter"))
def nvfp4_gemv(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, g_w: torch.Tensor,
               g_x: torch.Tensor | None, bias: torch.Tensor | None, partial: torch.Tensor,
               counter: torch.Tensor, splits: int, n: int) -> torch.Tensor:
    """Functional form of :func:`nvfp4_gemv_out`: returns a new ``[M, n]`` in x.dtype."""
    check_small_m(x)
    y = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    _ext().gemv(x, codes, scales, g_w, g_x, bias, y, partial, counter, splits)
    return y


@nvfp4_gemv.register_fake
def _(x, codes, scales, g_w, g_x, bias, partial, counter, splits, n):
    return x.new_empty(x.shape[0], n)


@torch.library.custom_op("resetfp4::nvfp4_quant_act",
                         mutates_args=("amax", "gs_out", "xq", "codes", "scales"))
def nvfp4_quant_act(x: torch.Tensor, gs_static: torch.Tensor | None, amax: torch.Tensor,
                    gs_out: torch.Tensor, xq: torch.Tensor, codes: torch.Tensor,
                    scales: torch.Tensor) -> None:
    """Quantize x [M, K] like ``resetfp4.nvfp4.quantize`` (no host sync).

    Writes codes (uint8 [M, K/2]), scales (uint8 e4m3 bits [M, K/16]), the global scale
    (fp32 [1]) and ``xq = e2m1(code) * fp32(scale)`` (x.dtype [M, K], exact).
    """
    _ext().quant_act(x, gs_static, amax, gs_out, xq, codes, scales)


@torch.library.custom_op("resetfp4::nvfp4_dequant", mutates_args=("w",))
def nvfp4_dequant(codes: torch.Tensor, scales: torch.Tensor, g_w: torch.Tensor,
                  w: torch.Tensor) -> None:
    """w[N, K] = e2m1(code) * (fp32(scale) * g_w) in w.dtype (bit-exact dequantize)."""
    _ext().dequant(codes, scales, g_w, w)


class ActWorkspace:
    """Preallocated buffers for quantizing up to ``rows`` activation rows of width k."""

    def __init__(self, rows: int, k: int, dtype: torch.dtype, device: torch.device) -> None:
        self.amax = torch.zeros(1, dtype=torch.int32, device=device)
        self.gs = torch.ones(1, dtype=torch.float32, device=device)
        self.xq = torch.empty(rows, k, dtype=dtype, device=device)
        self.codes = torch.empty(rows, k // 2, dtype=torch.uint8, device=device)
        self.scales = torch.empty(rows, k // 16, dtype=torch.uint8, device=device)

    def quantize(self, x: torch.Tensor, gs_static: torch.Tensor | None) -> torch.Tensor:
        m = x.shape[0]
        xq, codes, scales = self.xq[:m], self.codes[:m], self.scales[:m]
        nvfp4_quant_act(x, gs_static, self.amax, self.gs, xq, codes, scales)
        return xq


@nvfp4_gemv_out.register_fake
def _(x, codes, scales, g_w, g_x, bias, y, partial, counter, splits):
    return None


@nvfp4_quant_act.register_fake
def _(x, gs_static, amax, gs_out, xq, codes, scales):
    return None


@nvfp4_dequant.register_fake
def _(codes, scales, g_w, w):
    return None
