"""Reference linears against a float64 oracle built from the format definition."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from resetfp4.kernels.reference import nvfp4_linear_ref, w4a4_linear_ref, w4a16_linear_ref
from resetfp4.nvfp4 import E2M1_VALUES, quantize
from resetfp4.testing.oracle import oracle_quantize
from resetfp4.testing.tolerances import assert_bitexact, assert_rel_close, rel_error, rel_for_dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 8, 16), (3, 24, 48), (16, 40, 256)])
def test_w4a16_matches_float64(dtype, m, n, k, rng):
    w = quantize(torch.randn(n, k, generator=rng))
    x = torch.randn(m, k, generator=rng).to(dtype)
    y = w4a16_linear_ref(x, w)
    assert y.dtype == dtype and y.shape == (m, n)
    ref = x.double() @ w.dequantize(torch.float64).T
    assert_rel_close(y, ref, rel_for_dtype(dtype))


@pytest.mark.parametrize("static", [True, False])
def test_w4a4_quantizes_activations_per_tensor(static, rng):
    w = quantize(torch.randn(24, 64, generator=rng))
    x = torch.randn(5, 64, generator=rng).bfloat16()
    # one row 3e4x louder: under the per-tensor scale the quiet rows get subnormal E4M3 block
    # scales (coarse), which a per-row scale would not give them
    x[3] *= 3e4
    scale = 0.002 if static else float(np.float32(x.float().abs().max().item()) / np.float32(2688))
    y = w4a4_linear_ref(x, w, input_scale=torch.tensor(scale) if static else None)
    # the activations by the independent oracle, with the per-tensor scale built by hand
    packed, bs, _ = oracle_quantize(x.float().numpy(), scale)
    codes = np.stack([packed & 0xF, packed >> 4], -1).reshape(5, 64)
    vals = torch.tensor(E2M1_VALUES, dtype=torch.float64)[torch.from_numpy(codes.astype(np.int64))]
    sx = torch.from_numpy(bs.view(ml_dtypes.float8_e4m3fn).astype(np.float64)) * np.float32(scale)
    xq = vals * sx.repeat_interleave(16, dim=-1)
    assert_rel_close(y, xq @ w.dequantize(torch.float64).T, rel_for_dtype(torch.bfloat16))
    per_row = torch.cat([quantize(r[None]).dequantize(torch.float64) for r in x]) @ w.dequantize(
        torch.float64).T
    quiet = [0, 1, 2, 4]
    assert rel_error(y[quiet], per_row[quiet]) > 5 * rel_for_dtype(torch.bfloat16)  # not per-row


def test_bias_and_dispatch(rng):
    w = quantize(torch.randn(8, 32, generator=rng))
    x = torch.randn(2, 32, generator=rng)
    b = torch.randn(8, generator=rng)
    assert_bitexact(nvfp4_linear_ref(x, w, bias=b), w4a16_linear_ref(x, w, b))
    assert_bitexact(nvfp4_linear_ref(x, w, act="fp4", bias=b), w4a4_linear_ref(x, w, None, b))
    with pytest.raises(ValueError, match="act must be"):
        nvfp4_linear_ref(x, w, act="int8")


def test_k_mismatch_is_rejected():
    w = quantize(torch.randn(8, 32))
    with pytest.raises(ValueError, match="K=32"):
        w4a16_linear_ref(torch.randn(2, 48), w)
