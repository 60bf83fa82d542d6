"""Public NVFP4 linear: ``nvfp4_linear(x, w, act=..., input_scale=..., out=..., bias=...)``.

For speed, repack each weight once with :func:`prepare_weight` and call the returned
:class:`PreparedNVFP4Weight` (or pass it to :func:`nvfp4_linear`). On CUDA:

* ``M <= 16`` rows: one tensor-core-fed, bandwidth-bound GEMV kernel that reads every
  weight byte once (split-K inside thread-block clusters on sm_90). ``act="fp4"``: one
  tiny activation-quantization launch runs first (static ``input_scale``, the deployment
  path, or dynamic ``input_scale=None``); on sm_90 the GEMV streams its weights while it
  runs, via programmatic dependent launch. No allocation with ``out=``, no host sync: safe
  inside ``torch.cuda.CUDAGraph`` capture.
* ``M > 16`` (prefill): dequantize to ``x.dtype`` once per call, then cuBLAS (rounding
  can differ in the last bits from the GEMV's: see ``_large_m``).

On a machine without CUDA (or CPU tensors) the float reference
:func:`resetfp4.kernels.reference.nvfp4_linear_ref` runs when ``allow_fallback=True``
(the default); otherwise a ``RuntimeError`` says why.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resetfp4.format.nvfp4 import NVFP4Tensor
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.kernels.reference import nvfp4_linear_ref

_ACTS = ("bf16", "fp4")


class PreparedNVFP4Weight:
    """An NVFP4 weight ``[N, K]`` repacked for the CUDA kernels, plus its workspaces.

    Attributes:
        n, k: logical shape (``K % 16 == 0``).
        packed: uint8 ``[ceil(N/16) * ceil(K/64), 576]``, codes and scales per unit
            (layout in :mod:`resetfp4.kernels.nvfp4_gemv`).
        global_scale: fp32 ``[1]`` on the weight's device.
        plans: ``{8: (S, R), 16: (S, R)}``, the GEMV work split for M <= 8 and M <= 16
            (:func:`resetfp4.kernels.nvfp4_gemv.plan` for the weight's device).
        exact_scales: some block scale is zero/subnormal (slower, general scale decode).
        swiglu_tiles: ``{8: R, 16: R}``, tiles per CTA of the SwiGLU GEMV
            (:func:`resetfp4.kernels.nvfp4_gemv.swiglu_plan`), for a weight built by
            ``interleave_gate_up``; None when ``N % 32 != 0``.

    Calls with W4A4 share one activation workspace per dtype, so one prepared weight must
    not run on two streams at once. ``__call__`` has the signature of
    :func:`nvfp4_linear` without ``w``.
    """

    def __init__(self, w: NVFP4Tensor) -> None:
        if not isinstance(w, NVFP4Tensor):
            raise TypeError(f"prepare_weight needs an NVFP4Tensor, got {type(w).__name__}")
        if len(w.shape) != 2:
            raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(w.shape)}")
        self.n, self.k = int(w.shape[0]), int(w.shape[1])
        if self.n < 1 or self.k < 16:
            raise ValueError(f"weight has shape [N={self.n}, K={self.k}]; nvfp4_linear needs "
                             "N >= 1 and K >= 16")
        self.device = w.device
        self.packed = kg.repack(w)
        self.global_scale = w.global_scale.float().reshape(1).to(self.device)
        self.exact_scales = kg.needs_exact_scales(w)
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            sms, cluster = props.multi_processor_count, kg.MAX_CLUSTER if props.major >= 9 else 1
        else:
            sms, cluster = 1, 1
        self.plans = {c: kg.plan(self.n, self.k, sms, cluster, c) for c in (8, 16)}
        # Tiles per CTA for kg.nvfp4_gemv_swiglu, when this is an interleaved gate/up weight.
        self.swiglu_tiles = ({c: kg.swiglu_plan(self.n, self.k, sms, c) for c in (8, 16)}
                             if self.n % (2 * kg.TILE_ROWS) == 0 else None)
        self._act_ws: dict[torch.dtype, kg.ActWorkspace] = {}

    def to_nvfp4(self) -> NVFP4Tensor:
        """The original weight back (exact inverse of the repack)."""
        return kg.unrepack(self.packed, self.n, self.k, self.global_scale)

    def act_workspace(self, dtype: torch.dtype) -> kg.ActWorkspace:
        """Buffers for W4A4 at M <= 16; created on first use (warm up before capture)."""
        ws = self._act_ws.get(dtype)
        if ws is None:
            ws = kg.ActWorkspace(kg.MAX_SMALL_M, self.k, dtype, self.device)
            self._act_ws[dtype] = ws
        return ws

    def __call__(self, x: torch.Tensor, *, act: str = "bf16", input_scale=None,
                 out: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 allow_fallback: bool = True) -> torch.Tensor:
        return nvfp4_linear(x, self, act=act, input_scale=input_scale, out=out, bias=bias,
                            allow_fallback=allow_fallback)


def prepare_weight(w: NVFP4Tensor) -> PreparedNVFP4Weight:
    """Repack ``w`` (``[N, K]``, on its final device) once for :func:`nvfp4_linear`."""
    return PreparedNVFP4Weight(w)


def _validate(x: torch.Tensor, pw: PreparedNVFP4Weight, act: str, out, bias) -> None:
    if act not in _ACTS:
        raise ValueError(f"act must be 'bf16' (W4A16) or 'fp4' (W4A4), got {act!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in kg._DTYPES:
        raise TypeError(f"x has dtype {x.dtype}; nvfp4_linear takes bfloat16 or float16")
    if x.dim() != 2 or x.shape[1] != pw.k:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected [M, K] with K={pw.k} "
                         f"(the weight is [N={pw.n}, K={pw.k}])")
    if x.device != pw.device:
        raise ValueError(f"x is on {x.device} but the weight is on {pw.device}; move one")
    if not x.is_contiguous():
        raise ValueError(f"x with shape {tuple(x.shape)} is not contiguous; call .contiguous()")
    want = (x.shape[0], pw.n)
    if out is not None and (tuple(out.shape) != want or out.dtype != x.dtype
                            or out.device != x.device or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {x.dtype} tensor of shape {want} on "
                         f"{x.device}, got {out.dtype} {tuple(out.shape)} on {out.device}")
    if bias is not None and (tuple(bias.shape) != (pw.n,) or bias.dtype != x.dtype
                             or bias.device != x.device or not bias.is_contiguous()):
        raise ValueError(f"bias must be a contiguous {x.dtype} tensor of shape ({pw.n},) on "
                         f"{x.device}, got {bias.dtype} {tuple(bias.shape)} on {bias.device}")
    if out is not None:
        # the GEMV writes finished tiles while other CTAs still read x (and bias)
        for name, t in (("x", x), ("bias", bias)):
            if t is not None and _overlap(out, t):
                raise ValueError(f"out shares memory with {name}; nvfp4_linear cannot write its "
                                 f"result over its input: pass a separate out buffer")


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Do the byte ranges of two contiguous tensors intersect?"""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def _input_scale(input_scale, device: torch.device) -> torch.Tensor | None:
    if input_scale is None:
        return None
    if (not isinstance(input_scale, torch.Tensor) and device.type == "cuda"
            and torch.cuda.is_current_stream_capturing()):
        raise ValueError(
            "input_scale is a Python number, which would be copied to the GPU on every call: "
            "not allowed inside CUDA-graph capture. Pass a float32 CUDA tensor of one value"
        )
    if isinstance(input_scale, torch.Tensor):
        # A tensor scale is not checked for finiteness/positivity here: that would read it on
        # the host (a sync per call inside the decode graph). Checkpoint loading and the
        # engine's calibration validate it once; a float scale is checked below.
        if input_scale.numel() != 1:
            raise ValueError(f"input_scale must hold one value, got shape {tuple(input_scale.shape)}")
        return input_scale.to(device=device, dtype=torch.float32).reshape(1)
    v = float(input_scale)
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"input_scale must be a finite positive number, got {v}")
    return torch.tensor([v], dtype=torch.float32, device=device)


def nvfp4_linear(x: torch.Tensor, w: NVFP4Tensor | PreparedNVFP4Weight, *, act: str = "bf16",
                 input_scale: torch.Tensor | float | None = None, out: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, allow_fallback: bool = True) -> torch.Tensor:
    """``y = x @ dequant(W)^T (+ bias)``, optionally with NVFP4 activations.

    Args:
        x: ``[M, K]`` bfloat16 or float16, contiguous, on the weight's device.
        w: NVFP4 weight ``[N, K]`` (repacked on every call: prefer a prepared weight).
        act: ``"bf16"`` (W4A16) or ``"fp4"`` (W4A4: x quantized exactly as
            ``resetfp4.nvfp4.quantize(x, global_scale=input_scale)``).
        input_scale: W4A4 static activation global scale (fp32 scalar, a device tensor
            keeps it sync-free and is required inside CUDA-graph capture); ``None`` =
            dynamic ``amax(|x|) / 2688`` on the device. Ignored with ``act="bf16"``.
        out: optional ``[M, N]`` x.dtype contiguous result buffer (nothing is allocated
            at M <= 16 when given); it must not share memory with ``x`` or ``bias``.
        bias: optional ``[N]`` x.dtype, added in fp32.
        allow_fallback: on CPU tensors / no CUDA, run the float reference instead of raising.
    Returns:
        ``[M, N]`` in ``x.dtype`` (``out`` when given); ``M = 0`` gives an empty result.
    """
    pw = w if isinstance(w, PreparedNVFP4Weight) else PreparedNVFP4Weight(w)
    _validate(x, pw, act, out, bias)
    # W4A16: the activation scale plays no part; W4A4: checked (a number) and moved once
    gs_x = _input_scale(input_scale, x.device) if act == "fp4" else None
    if x.shape[0] == 0:
        return out if out is not None else x.new_empty(0, pw.n)
    if x.device.type != "cuda":
        if not allow_fallback:
            raise RuntimeError(f"nvfp4_linear runs on CUDA; x is on {x.device} and "
                               "allow_fallback=False")
        y = nvfp4_linear_ref(x, pw.to_nvfp4(), act=act, input_scale=gs_x, bias=bias)
        return out.copy_(y) if out is not None else y
    m = x.shape[0]
    if x.data_ptr() % 16:  # the kernels read rows of x with 16-byte loads
        x = x.clone()
    if m <= kg.MAX_SMALL_M:
        g_x = None
        if act == "fp4":
            ws = pw.act_workspace(x.dtype)
            x = ws.quantize(x, gs_x)
            g_x = ws.gs
        s, r = pw.plans[8 if m <= 8 else 16]
        if out is None:
            return kg.nvfp4_gemv(x, pw.packed, pw.global_scale, g_x, bias, s, r, pw.n,
                                 pw.exact_scales)
        kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, g_x, bias, out, s, r,
                          pw.exact_scales)
        return out
    return _large_m(x, pw, act, gs_x, out, bias)


def _large_m(x, pw: PreparedNVFP4Weight, act: str, gs_x, out, bias) -> torch.Tensor:
    """Prefill: dequantize W to x.dtype once, then cuBLAS. ``code * scale * g_w`` is rounded to
    x.dtype (g_w is an arbitrary fp32 value) and cuBLAS accumulates as
    torch's matmul settings say (``torch.backends.cuda.matmul``: bf16/fp16 reductions may
    use reduced precision), so results can differ in the last bits from the M <= 16 GEMV,
    which accumulates in fp32 and applies g_w in fp32."""
    wd = torch.empty(pw.n, pw.k, dtype=x.dtype, device=x.device)
    kg.nvfp4_dequant(pw.packed, pw.global_scale, wd)
    if act == "fp4":
        ws = kg.ActWorkspace(x.shape[0], pw.k, x.dtype, x.device)
        xq = ws.quantize(x, gs_x)
        x = (xq.float() * ws.gs).to(x.dtype)
    y = F.linear(x, wd, bias)
    return out.copy_(y) if out is not None else y
