"""GPU tests of the SwiGLU GEMV (gate/up rows interleaved, SiLU-mul and the W4A4 quantization
of its output in the epilogue; skipped without CUDA).

Its gate and up values are the plain GEMV's for the same work split (same fp32 sums, same
rounding), and torch's eager SiLU and product round the same way, so the result is compared
bitwise against the plain GEMV followed by ``swiglu_ref``; the plain GEMV itself is tested
against float64 in test_nvfp4_gemv_gpu.py, and the unquantized result is checked against a
float64 reference here too."""

from __future__ import annotations

import pytest
import torch

from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight
from resetfp4.testing.seeds import fresh_seed
from resetfp4.testing.tolerances import assert_bitexact, assert_rel_close

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEV = "cuda"


def _gate_up(inter: int, k: int, seed: int = 0):
    g = torch.Generator(device=DEV).manual_seed(fresh_seed(seed))
    gate = quantize(torch.randn(inter, k, device=DEV, generator=g))
    up = quantize(torch.randn(inter, k, device=DEV, generator=g) * 0.7, global_scale=gate.global_scale)
    return gate, up, kg.interleave_gate_up(gate, up)


def _plain(x, pw, r, g_x=None, bias=None):
    gu = torch.full((x.shape[0], pw.n), float("nan"), dtype=x.dtype, device=DEV)
    kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, g_x, bias, gu, 1, r, pw.exact_scales)
    return gu


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("inter,k", [(16, 16), (48, 48), (96, 4096), (4864, 896), (12288, 4096)])
def test_swiglu_is_gemv_then_silu_mul(inter, k, dtype):
    gate, up, w = _gate_up(inter, k)
    pw = prepare_weight(w)
    g_q = torch.tensor([0.0021], device=DEV)
    for m in range(1, 17):
        r = pw.swiglu_tiles[8 if m <= 8 else 16]
        x = torch.randn(m, k, device=DEV).to(dtype)  # fresh inputs for every M
        gu = _plain(x, pw, r)
        for q in (None, g_q):
            h = torch.full((m, inter), float("nan"), dtype=dtype, device=DEV)  # poisoned
            kg.nvfp4_gemv_swiglu_out(x, pw.packed, pw.global_scale, None, q, None, h, r, pw.exact_scales)
            assert_bitexact(h, kg.swiglu_ref(gu, q), f"M={m} I={inter} K={k} quant={q is not None}")
        if m in (1, 16):  # the unquantized result against float64 (weights dequantized exactly)
            xd = x.double()
            want = torch.nn.functional.silu(xd @ gate.dequantize(torch.float64).T) * (
                xd @ up.dequantize(torch.float64).T)
            # bf16/fp16 rounding of gate, up, silu and the product: four roundings of 2^-8 (bf16)
            rel = 4 * (2.0**-8 if dtype == torch.bfloat16 else 2.0**-11)
            h = kg.nvfp4_gemv_swiglu(x, pw.packed, pw.global_scale, None, None, None, r, inter,
                                     pw.exact_scales)
            assert_rel_close(h, want, rel, f"M={m} vs float64")


def test_swiglu_prequantized_input_and_bias():
    """W4A4 input (g_x in the epilogue) and an interleaved bias, against the plain GEMV."""
    inter, k, dtype = 1536, 4096, torch.bfloat16
    _, _, w = _gate_up(inter, k, seed=3)
    pw = prepare_weight(w)
    bias = kg.interleave_rows(torch.randn(inter, device=DEV), torch.randn(inter, device=DEV)).to(dtype)
    g_x, g_q = torch.tensor([0.011], device=DEV), torch.tensor([0.0037], device=DEV)
    for m in (1, 5, 9, 16):
        r = pw.swiglu_tiles[8 if m <= 8 else 16]
        x = torch.randn(m, k, device=DEV).to(dtype)
        gu = _plain(x, pw, r, g_x, bias)
        h = kg.nvfp4_gemv_swiglu(x, pw.packed, pw.global_scale, g_x, g_q, bias, r, inter, pw.exact_scales)
        assert_bitexact(h, kg.swiglu_ref(gu, g_q), f"M={m} with g_x and bias")


def test_swiglu_every_even_split():
    """Every even tile count per CTA (one wave, several waves, the whole weight in one CTA)."""
    inter, k = 96, 512
    _, _, w = _gate_up(inter, k, seed=5)
    pw = prepare_weight(w)
    x = torch.randn(3, k, device=DEV).to(torch.bfloat16)
    tiles = 2 * inter // 16
    for r in range(2, tiles + 1, 2):
        gu = _plain(x, pw, r)
        h = kg.nvfp4_gemv_swiglu(x, pw.packed, pw.global_scale, None, None, None, r, inter, pw.exact_scales)
        assert_bitexact(h, kg.swiglu_ref(gu, None), f"R={r}")


def test_swiglu_graph_capture_replay():
    inter, k, m, dtype = 4864, 896, 4, torch.bfloat16
    _, _, w = _gate_up(inter, k, seed=7)
    pw = prepare_weight(w)
    r = pw.swiglu_tiles[8]
    g_q = torch.tensor([0.003], device=DEV)
    x = torch.randn(m, k, device=DEV).to(dtype)
    h = torch.empty(m, inter, dtype=dtype, device=DEV)
    kg.nvfp4_gemv_swiglu_out(x, pw.packed, pw.global_scale, None, g_q, None, h, r, False)  # build
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        kg.nvfp4_gemv_swiglu_out(x, pw.packed, pw.global_scale, None, g_q, None, h, r, False)
    for _ in range(3):
        x.copy_(torch.randn(m, k, device=DEV).to(dtype))
        h.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert_bitexact(h, kg.swiglu_ref(_plain(x, pw, r), g_q), "graph replay")


def test_swiglu_bad_input_is_rejected():
    _, _, w = _gate_up(32, 64)
    pw = prepare_weight(w)
    x = torch.randn(2, 64, device=DEV).to(torch.bfloat16)
    with pytest.raises(ValueError, match="needs it even"):
        kg.nvfp4_gemv_swiglu(x, pw.packed, pw.global_scale, None, None, None, 1, 32, False)
    with pytest.raises(ValueError, match=r"I % 16 == 0, got I=24"):
        kg.nvfp4_gemv_swiglu(x, pw.packed, pw.global_scale, None, None, None, 2, 24, False)
    with pytest.raises(TypeError, match="h has dtype torch.float16"):
        h = torch.empty(2, 32, dtype=torch.float16, device=DEV)
        kg.nvfp4_gemv_swiglu_out(x, pw.packed, pw.global_scale, None, None, None, h, 2, False)
    with pytest.raises(ValueError, match="g_q must hold one fp32 value"):
        kg.nvfp4_gemv_swiglu(x, pw.packed, pw.global_scale, None, torch.ones(2, device=DEV), None, 2, 32,
                             False)
