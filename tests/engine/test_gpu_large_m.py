"""GPU: the engine's cached large-M NVFP4 path equals the kernels' own large-M path bit for bit."""

from __future__ import annotations

import pytest
import torch

from resetfp4.engine import linear_glue
from resetfp4.format.nvfp4 import quantize

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("act", ["bf16", "fp4"])
@pytest.mark.parametrize("m", [17, 64, 256])
def test_cached_large_m_equals_uncached(act: str, m: int):
    torch.manual_seed(m)
    n, k = 4104, 1024
    w = quantize(torch.randn(n, k, device="cuda") * 0.02)
    pw = linear_glue.prepare(w)
    assert pw.kernel is not None, "kernels did not build"
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    scale = quantize(x).global_scale.reshape(()) * 1.5 if act == "fp4" else None
    want = linear_glue.nvfp4_linear(x, pw, act=act, input_scale=scale, bias=bias)
    added = linear_glue.cache_large_m(pw, torch.bfloat16)
    assert added == n * k * 2
    got = linear_glue.nvfp4_linear(x, pw, act=act, input_scale=scale, bias=bias)
    assert torch.equal(got, want)
    # Small M still takes the GEMV (the cache is not used there).
    xs = x[:3].contiguous()
    pw2 = linear_glue.prepare(w)
    assert torch.equal(
        linear_glue.nvfp4_linear(xs, pw, act=act, input_scale=scale, bias=bias),
        linear_glue.nvfp4_linear(xs, pw2, act=act, input_scale=scale, bias=bias),
    )
