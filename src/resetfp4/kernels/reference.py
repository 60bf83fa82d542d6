"""Pure-PyTorch reference linears: the numerical ground truth for every kernel.

Both work on CPU and CUDA, accumulate in fp32 (or float64 when asked, for tests), and
return ``x.dtype``. ``W`` is an :class:`~resetfp4.nvfp4.NVFP4Tensor` of logical shape
``[N, K]`` with codes ``c[n, k]``, block scales ``s[n, k // 16]`` (fp8 e4m3) and global
scale ``g_w``.
"""

from __future__ import annotations

import torch

from resetfp4.format.nvfp4 import NVFP4Tensor, quantize


def _check(x: torch.Tensor, w: NVFP4Tensor) -> None:
    if x.dim() < 1 or x.shape[-1] != w.shape[-1]:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but the weight is {tuple(w.shape)} [N, K]; "
            f"x's last dimension must equal K={w.shape[-1]}"
        )
    if x.device != w.device:
        raise ValueError(f"x is on {x.device} but the weight is on {w.device}; move one")


def w4a16_linear_ref(x: torch.Tensor, w: NVFP4Tensor, bias: torch.Tensor | None = None,
                     acc_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W4A16: ``y[m, n] = sum_k x[m, k] * e2m1(c[n, k]) * (fp32(s[n, k//16]) * g_w)``.

    Args:
        x: ``[..., K]`` float (bf16/fp16/fp32), not quantized.
        w: NVFP4 weight ``[N, K]``.
        bias: optional ``[N]``, added in the accumulation dtype.
        acc_dtype: fp32 (default) or float64 (tests).
    Returns:
        ``[..., N]`` in ``x.dtype``.
    """
    _check(x, w)
    y = x.to(acc_dtype) @ w.dequantize(acc_dtype).T
    if bias is not None:
        y = y + bias.to(acc_dtype)
    return y.to(x.dtype)


def w4a4_linear_ref(x: torch.Tensor, w: NVFP4Tensor, input_scale: torch.Tensor | float | None = None,
                    bias: torch.Tensor | None = None,
                    acc_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W4A4: activations NVFP4-quantized per 16-block, then the W4A16 product.

    ``xq = quantize(x, global_scale=g_x)`` where ``g_x = input_scale`` (static,
    calibrated: ModelOpt's ``input_scale``) or, when ``None``, dynamic
    ``amax(|x|) / 2688`` over the whole ``x`` (all rows together: one per-tensor scale,
    as a static scale would be). Then
    ``y[m, n] = sum_k e2m1(cx[m, k]) * (fp32(sx[m, k//16]) * g_x)
    * e2m1(c[n, k]) * (fp32(s[n, k//16]) * g_w)``.

    Args and return as :func:`w4a16_linear_ref`.
    """
    _check(x, w)
    xq = quantize(x, global_scale=input_scale)
    y = xq.dequantize(acc_dtype) @ w.dequantize(acc_dtype).T
    if bias is not None:
        y = y + bias.to(acc_dtype)
    return y.to(x.dtype)


def nvfp4_linear_ref(x: torch.Tensor, w: NVFP4Tensor, *, act: str = "bf16",
                     input_scale: torch.Tensor | float | None = None,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch on ``act``: ``"bf16"`` (W4A16, activations as given) or ``"fp4"`` (W4A4)."""
    if act == "bf16":
        return w4a16_linear_ref(x, w, bias)
    if act == "fp4":
        return w4a4_linear_ref(x, w, input_scale, bias)
    raise ValueError(f"act must be 'bf16' (W4A16) or 'fp4' (W4A4), got {act!r}")
