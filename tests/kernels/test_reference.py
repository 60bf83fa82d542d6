"""Reference linears against a float64 oracle built from the format definition."""

from __future__ import annotations

import pytest
import torch

from resetfp4.kernels.reference import nvfp4_linear_ref, w4a4_linear_ref, w4a16_linear_ref
from resetfp4.nvfp4 import quantize
from resetfp4.testing.tolerances import assert_bitexact, assert_rel_close, rel_for_dtype


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
    scale = torch.tensor(0.002) if static else None
    y = w4a4_linear_ref(x, w, input_scale=scale)
    xq = quantize(x, global_scale=scale).dequantize(torch.float64)
    assert_rel_close(y, xq @ w.dequantize(torch.float64).T, rel_for_dtype(torch.bfloat16))
    if not static:  # dynamic: one amax over all rows
        assert quantize(x).global_scale.item() == (x.float().abs().max() / 2688.0).item()


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
