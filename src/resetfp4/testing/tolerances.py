"""The three tolerance tiers used by every test.

1. **bit-exact** (:func:`assert_bitexact`): quantizer codes and scales, replays of a
   deterministic policy. ``atol = rtol = 0`` on the raw bits.
2. **relative error against a float64 reference** (:func:`assert_rel_close`): a kernel
   against the reference on the *dequantized* weight, so kernel error is isolated from
   quantization error. ``||out - ref|| / ||ref||`` under a tier bound:
   - :data:`REL_FP32` = 1e-5: fp32 arithmetic, only summation order differs
     (~sqrt(K) * 2^-24 for K up to ~1e5, with margin);
   - :data:`REL_BF16_OUT` = 8e-3: fp32 accumulation, output rounded to bf16 (8 significant
     bits: one rounding is at most 2^-8 = 3.9e-3 relative per element, about 2.3e-3 RMS);
     the bound leaves a 2x margin over the worst case;
   - :data:`REL_FP16_OUT` = 1e-3: as above with an fp16 output (2^-11 = 4.9e-4).
3. **SQNR floors** (:func:`sqnr_db`, :func:`assert_sqnr`): lossy quantization round
   trips. NVFP4 on Gaussian data gives ~19-20 dB per element (E2M1 with a per-16 E4M3
   scale); :data:`SQNR_NVFP4_GAUSSIAN_DB` = 17 dB is the floor with margin.
"""

from __future__ import annotations

import torch

REL_FP32 = 1e-5
REL_BF16_OUT = 8e-3
REL_FP16_OUT = 1e-3
SQNR_NVFP4_GAUSSIAN_DB = 17.0


def rel_for_dtype(dtype: torch.dtype) -> float:
    """The relative-error tier for an output of ``dtype`` with fp32 accumulation."""
    return {torch.float32: REL_FP32, torch.bfloat16: REL_BF16_OUT,
            torch.float16: REL_FP16_OUT}[dtype]


def assert_bitexact(a: torch.Tensor, b: torch.Tensor, what: str = "tensor") -> None:
    """Same shape, dtype and bits (NaN payloads included)."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    ab = a.contiguous().view(torch.uint8) if a.element_size() == 1 else a.contiguous().view(
        {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()])
    bb = b.contiguous().view(ab.dtype)
    bad = (ab != bb)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ; first at {idx}: "
            f"{a[tuple(idx)].item()!r} vs {b[tuple(idx)].item()!r}"
        )


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref||_2 / ||ref||_2`` in float64 (inf if ``out`` has NaN/Inf)."""
    o, r = out.double(), ref.double()
    if not bool(torch.isfinite(o).all()):
        return float("inf")
    den = r.norm().item()
    num = (o - r).norm().item()
    return num / den if den > 0 else num


def assert_rel_close(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "output") -> None:
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = rel_error(out, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def sqnr_db(approx: torch.Tensor, ref: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(|ref|^2 / |ref - approx|^2)``."""
    r = ref.double()
    noise = (r - approx.double()).pow(2).sum().item()
    sig = r.pow(2).sum().item()
    if noise == 0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(sig / noise)).item()


def assert_sqnr(approx: torch.Tensor, ref: torch.Tensor, floor_db: float, what: str = "output") -> None:
    s = sqnr_db(approx, ref)
    assert s >= floor_db, f"{what}: SQNR {s:.2f} dB < floor {floor_db:.1f} dB"
