"""An independent NVFP4 quantizer (NumPy + ``ml_dtypes``): the oracle for bit-exact tests."""

from __future__ import annotations

import numpy as np


def oracle_quantize(x: np.ndarray, global_scale: float | None = None):
    """Independent NVFP4 quantizer in NumPy float32 with ``ml_dtypes`` casts.

    ``x``: float array ``[..., K]``. Returns ``(packed uint8 [..., K/2], block-scale bytes
    uint8 [..., K/16], global scale np.float32)``, following the rules of
    :mod:`resetfp4.format.nvfp4` but sharing none of its code.
    """
    import ml_dtypes

    x = x.astype(np.float32)
    k = x.shape[-1]
    if global_scale is None:
        amax = np.float32(np.abs(x).max()) if x.size else np.float32(0)
        gs = np.float32(amax / np.float32(2688.0)) if amax > 0 else np.float32(1.0)
    else:
        gs = np.float32(global_scale)
    blocks = x.reshape(*x.shape[:-1], k // 16, 16)
    bamax = np.abs(blocks).max(axis=-1)
    bs = (bamax / (np.float32(6.0) * gs)).astype(np.float32)
    bs = np.where(bs == 0, np.float32(1.0), bs)
    bs8 = np.minimum(bs, np.float32(448.0)).astype(ml_dtypes.float8_e4m3fn)
    denom = (bs8.astype(np.float32) * gs).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (blocks / denom[..., None]).astype(np.float32)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=6.0, neginf=-6.0)
    mag = np.minimum(np.abs(scaled), np.float32(6.0)).astype(ml_dtypes.float4_e2m1fn)
    codes = mag.view(np.uint8) & 0x7
    codes = codes | (np.where(scaled < 0, 8, 0).astype(np.uint8))
    codes = codes.reshape(*x.shape[:-1], k)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed, bs8.view(np.uint8), gs
