"""NVFP4 quantization, bit-exact with NVIDIA ModelOpt (block size 16).

For ``x`` of shape ``[..., K]`` (``K % 16 == 0``), all arithmetic in fp32 with true
division, products formed exactly as written:

1. ``global_scale = amax(|x|) / (6 * 448)``; an all-zero tensor gets 1.0. A given
   ``global_scale`` (e.g. a calibrated activation ``input_scale``) is used as is.
2. ``block_scale = fp8_e4m3(block_amax / (6 * global_scale))`` rounded to nearest even,
   saturated at 448. A block whose fp32 scale is 0 (all zeros) gets 1.0.
3. ``code = e2m1_rne(x / (fp32(block_scale) * global_scale))``, saturating at +-6.
   The sign bit is ``x < 0`` (ModelOpt's rule, so ``-0.0`` encodes as code 0).
   A nonzero block whose scale underflows to fp8 zero yields saturated codes and
   decodes to zero, as ModelOpt's division does; its zeros encode as code 0.

Dequantization: ``e2m1(code) * (fp32(block_scale) * global_scale)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from resetfp4.format.spec import (
    BLOCK_SIZE,
    E2M1_MIDPOINTS,
    E4M3_MAX,
    GLOBAL_SCALE_DIVISOR,
    e2m1_table,
)

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_input(x: torch.Tensor, what: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{what} has dtype {x.dtype}; NVFP4 quantizes float32, bfloat16 or float16. "
            f"Convert it first, e.g. {what}.float()."
        )
    if x.dim() < 1 or x.shape[-1] % BLOCK_SIZE != 0 or x.shape[-1] == 0:
        k = x.shape[-1] if x.dim() else 0
        padded = BLOCK_SIZE * max(1, -(-k // BLOCK_SIZE))
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}; its last dimension K must be a positive "
            f"multiple of {BLOCK_SIZE} (one FP8 scale per {BLOCK_SIZE} elements). "
            f"Pad K up to {padded} with zeros."
        )
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{what} contains {n_bad} NaN/Inf value(s); NVFP4 cannot represent them. "
            "Find where they come from (overflow in fp16? a bad checkpoint?) and fix them."
        )


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """Round fp32 values to E2M1 codes, round-half-to-even, saturating at +-6.

    Args:
        v: float32 tensor of any shape (already divided by its scale).
    Returns:
        uint8 tensor of the same shape with codes 0..15 (bit 3 = sign = ``v < 0``).
        NaN maps to code 0; +-inf saturates to +-6.
    """
    a = v.abs()
    mag = torch.zeros(v.shape, dtype=torch.uint8, device=v.device)
    for mid, tie_up in E2M1_MIDPOINTS:
        mag += (a >= mid) if tie_up else (a > mid)
    return mag | ((v < 0).to(torch.uint8) << 3)


def e2m1_decode(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Value of each uint8 code 0..15 (any shape) as ``dtype``."""
    return e2m1_table(codes.device, dtype)[codes.long()]


def fp8_e4m3_rne(v: torch.Tensor) -> torch.Tensor:
    """fp32 -> ``float8_e4m3fn``, round-to-nearest-even, saturating at +-448.

    torch's cast already rounds to nearest even (including subnormals down to 2^-9);
    values that would round past 448 become NaN there, so we clamp first (the
    saturating behaviour of the hardware ``cvt.satfinite`` conversion).
    """
    return v.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``[..., K]`` -> packed bytes ``[..., K/2]`` (element 2i low nibble)."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """Packed bytes ``[..., K/2]`` -> uint8 codes ``[..., K]``."""
    lo = packed & 0x0F
    hi = packed >> 4
    return torch.stack((lo, hi), dim=-1).flatten(-2)


def compute_global_scale(x: torch.Tensor) -> torch.Tensor:
    """``amax(|x|) / (6 * 448)`` as a 0-dim fp32 tensor; 1.0 for an all-zero (or empty) tensor."""
    if x.numel() == 0:
        return torch.ones((), dtype=torch.float32, device=x.device)
    amax = x.abs().amax().float()
    # Divide by a device tensor, not a Python float: on CUDA, torch turns division by a
    # host scalar into multiplication by its fp32 reciprocal, which is not true division
    # and differs by one ulp for some amax values, so CPU and GPU would disagree. ModelOpt
    # writes the same formula with a Python-float divisor, so a ModelOpt export made on a
    # GPU can differ from this by one ulp in weight_scale_2 (the block scales and codes
    # almost never change); on a CPU they agree bit for bit.
    gs = amax / torch.tensor(GLOBAL_SCALE_DIVISOR, dtype=torch.float32, device=amax.device)
    return torch.where(amax > 0, gs, torch.ones_like(gs))


@dataclass
class NVFP4Tensor:
    """A tensor ``[..., K]`` in NVFP4.

    Attributes:
        packed: uint8 ``[..., K/2]``; element ``2i`` in the low nibble, ``2i+1`` high.
        block_scale: ``torch.float8_e4m3fn`` ``[..., K/16]``, row-major.
        global_scale: fp32 0-dim tensor (ModelOpt ``weight_scale_2`` / ``input_scale``).
    """

    packed: torch.Tensor
    block_scale: torch.Tensor
    global_scale: torch.Tensor

    def __post_init__(self) -> None:
        if self.packed.dtype != torch.uint8:
            raise TypeError(f"packed must be uint8, got {self.packed.dtype}")
        if self.block_scale.dtype != torch.float8_e4m3fn:
            raise TypeError(f"block_scale must be float8_e4m3fn, got {self.block_scale.dtype}")
        if self.global_scale.dtype != torch.float32 or self.global_scale.dim() != 0:
            raise TypeError(
                f"global_scale must be a 0-dim float32 tensor, got {self.global_scale.dtype} "
                f"of shape {tuple(self.global_scale.shape)}"
            )
        k2 = self.packed.shape[-1]
        exp = (*self.packed.shape[:-1], (2 * k2) // BLOCK_SIZE)
        if (2 * k2) % BLOCK_SIZE != 0 or tuple(self.block_scale.shape) != exp:
            raise ValueError(
                f"block_scale has shape {tuple(self.block_scale.shape)} but packed "
                f"{tuple(self.packed.shape)} needs {exp} (one scale per {BLOCK_SIZE} elements)"
            )

    @property
    def shape(self) -> torch.Size:
        """Logical shape ``[..., K]``."""
        return torch.Size((*self.packed.shape[:-1], self.packed.shape[-1] * 2))

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def scales_fp32(self) -> torch.Tensor:
        """Per-block fp32 scale ``fp32(block_scale) * global_scale``, shape ``[..., K/16]``."""
        return self.block_scale.float() * self.global_scale.to(self.block_scale.device)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``e2m1(code) * (fp32(block_scale) * global_scale)`` as ``dtype`` ``[..., K]``.

        Computed in fp32 (exact: an E2M1 value times a scale has at most 2 significant
        bits more than the scale), then cast.
        """
        vals = e2m1_decode(unpack_codes(self.packed))
        vals = vals.unflatten(-1, (-1, BLOCK_SIZE)) * self.scales_fp32().unsqueeze(-1)
        return vals.flatten(-2).to(dtype)

    def codes(self) -> torch.Tensor:
        """uint8 codes ``[..., K]``."""
        return unpack_codes(self.packed)

    def to(self, device: torch.device | str) -> NVFP4Tensor:
        return NVFP4Tensor(self.packed.to(device), self.block_scale.to(device),
                           self.global_scale.to(device))

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus block scales (0.5625 bytes per element)."""
        return self.packed.numel() + self.block_scale.numel()


def quantize(x: torch.Tensor, global_scale: torch.Tensor | float | None = None) -> NVFP4Tensor:
    """Quantize ``x`` (float32/bfloat16/float16, ``[..., K]``, ``K % 16 == 0``) to NVFP4.

    Args:
        x: the tensor; must be finite.
        global_scale: per-tensor fp32 scale to use as is (e.g. an activation's calibrated
            ``input_scale``); ``None`` computes ``amax(|x|) / 2688``.
    Raises:
        TypeError: a non-float dtype. ValueError: NaN/Inf, bad K, bad global_scale.
    """
    _check_input(x)
    xf = x.float()
    if global_scale is None:
        gs = compute_global_scale(xf)
    else:
        gs = torch.as_tensor(global_scale, dtype=torch.float32, device=x.device)
        if gs.numel() != 1:
            raise ValueError(
                f"global_scale must be one number (a per-tensor scale), got shape {tuple(gs.shape)}")
        gs = gs.reshape(())
        if not bool(torch.isfinite(gs)) or not bool(gs > 0):
            raise ValueError(
                f"global_scale must be a finite positive number, got {float(gs)}; "
                "recalibrate the input_scale or pass None for a dynamic scale."
            )
    blocks = xf.unflatten(-1, (-1, BLOCK_SIZE))
    block_amax = blocks.abs().amax(dim=-1)
    bs32 = block_amax / (6.0 * gs)
    bs32 = torch.where(bs32 == 0, torch.ones_like(bs32), bs32)
    bs8 = fp8_e4m3_rne(bs32)
    scaled = blocks / (bs8.float() * gs).unsqueeze(-1)
    codes = e2m1_encode(scaled).flatten(-2)
    return NVFP4Tensor(pack_codes(codes), bs8, gs.clone())


def fake_quantize(x: torch.Tensor, global_scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """``quantize(x, global_scale).dequantize(x.dtype)``: NVFP4 round trip, same shape."""
    return quantize(x, global_scale).dequantize(x.dtype)
