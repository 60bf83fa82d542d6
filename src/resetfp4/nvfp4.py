"""Public NVFP4 format API (see :mod:`resetfp4.format.nvfp4` for the exact rules)."""

from resetfp4.format.nvfp4 import (
    NVFP4Tensor,
    compute_global_scale,
    e2m1_decode,
    e2m1_encode,
    fake_quantize,
    fp8_e4m3_rne,
    pack_codes,
    quantize,
    unpack_codes,
)
from resetfp4.format.spec import BLOCK_SIZE, E2M1_VALUES

__all__ = [
    "BLOCK_SIZE", "E2M1_VALUES", "NVFP4Tensor", "compute_global_scale", "e2m1_decode",
    "e2m1_encode", "fake_quantize", "fp8_e4m3_rne", "pack_codes", "quantize", "unpack_codes",
]
