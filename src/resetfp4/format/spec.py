"""The NVFP4 format as data: constants and code tables.

NVFP4 (as written by NVIDIA ModelOpt) stores a tensor ``x`` of shape ``[..., K]`` as

* ``codes``: one 4-bit E2M1 value per element (1 sign, 2 exponent, 1 mantissa bit),
  two per byte (element ``2i`` in the low nibble, ``2i+1`` in the high nibble);
* ``block_scale``: one FP8 E4M3 (``float8_e4m3fn``) scale per 16 consecutive elements
  along ``K``;
* ``global_scale``: one FP32 scale per tensor (ModelOpt's ``weight_scale_2`` for
  weights, ``input_scale`` for activations).

``x[..., k] ~= e2m1(code[..., k]) * (fp32(block_scale[..., k // 16]) * global_scale)``.
"""

from __future__ import annotations

import torch

BLOCK_SIZE = 16
"""Elements per FP8 block scale (ModelOpt ``group_size``)."""

E2M1_MAX = 6.0
"""Largest E2M1 magnitude: exponent 0b11 (2^2) times mantissa 1.5."""

E4M3_MAX = 448.0
"""Largest finite ``float8_e4m3fn`` value: 2^8 * 1.75 (the all-ones mantissa at the top
exponent is NaN in the "fn" variant, so 1.75 not 1.875)."""

E4M3_MIN_SUBNORMAL = 2.0**-9
"""Smallest positive ``float8_e4m3fn`` value: 2^-6 (min normal exponent) * 2^-3 (one
mantissa ulp)."""

GLOBAL_SCALE_DIVISOR = E2M1_MAX * E4M3_MAX
"""2688 = 6 * 448: the global scale maps the tensor's amax onto the largest product of
a block scale (<= 448) and an E2M1 code (<= 6), so the largest block gets the largest
representable scale and no block scale overflows."""

E2M1_VALUES: tuple[float, ...] = (
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
)
"""Value of each 4-bit code, indexed by code. Bit 3 is the sign; bits 2..1 the
exponent (bias 1; 0 means subnormal); bit 0 the mantissa."""

# Round-to-nearest-even decision points on the magnitude grid 0, .5, 1, 1.5, 2, 3, 4, 6.
# Each entry is (midpoint, tie_goes_up). At a tie we round to the code whose mantissa
# bit is 0 (the even code): 0.25 -> 0 (code 0), 0.75 -> 1.0 (code 2), 1.25 -> 1.0
# (code 2), 1.75 -> 2.0 (code 4), 2.5 -> 2.0 (code 4), 3.5 -> 4.0 (code 6),
# 5.0 -> 4.0 (code 6).
E2M1_MIDPOINTS: tuple[tuple[float, bool], ...] = (
    (0.25, False),
    (0.75, True),
    (1.25, False),
    (1.75, True),
    (2.5, False),
    (3.5, True),
    (5.0, False),
)


def e2m1_table(device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 16 code values as a tensor ``[16]`` (see :data:`E2M1_VALUES`)."""
    return torch.tensor(E2M1_VALUES, dtype=dtype, device=device)
