"""CPU tests of the gate/up interleaving behind the SwiGLU GEMV and of the engine's SwiGLU
entry on the reference linears."""

from __future__ import annotations

import pytest
import torch

from resetfp4.engine import act_quant, linear_glue
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.testing.tolerances import assert_bitexact


def test_interleave_rows_round_trip():
    gate, up = torch.randn(48, 5), torch.randn(48, 5)
    w = kg.interleave_rows(gate, up)
    assert_bitexact(w[0:16], gate[0:16], "tile 0 = gate rows 0..15")
    assert_bitexact(w[16:32], up[0:16], "tile 1 = up rows 0..15")
    assert_bitexact(w[32:48], gate[16:32], "tile 2 = gate rows 16..31")
    x = torch.randn(3, 5)
    g, u = kg.deinterleave_cols(x @ w.T)
    assert_bitexact(g, x @ gate.T, "gate columns")
    assert_bitexact(u, x @ up.T, "up columns")


def test_interleave_bad_shapes_are_errors():
    with pytest.raises(ValueError, match=r"I % 16 == 0, got \(24, 4\)"):
        kg.interleave_rows(torch.zeros(24, 4), torch.zeros(24, 4))
    with pytest.raises(ValueError, match="one shape"):
        kg.interleave_rows(torch.zeros(32, 4), torch.zeros(16, 4))
    with pytest.raises(ValueError, match="multiple of 32 columns, got 48"):
        kg.deinterleave_cols(torch.zeros(2, 48))


def test_interleave_gate_up_keeps_codes_and_scales():
    gate = quantize(torch.randn(32, 64))
    up = quantize(torch.randn(32, 64), global_scale=gate.global_scale)
    w = kg.interleave_gate_up(gate, up)
    want = kg.interleave_rows(gate.dequantize(torch.float32), up.dequantize(torch.float32))
    assert_bitexact(w.dequantize(torch.float32), want, "dequantized interleaved weight")
    other = quantize(torch.randn(32, 64))
    with pytest.raises(ValueError, match="different global scales"):
        kg.interleave_gate_up(gate, other)


@pytest.mark.parametrize("quant_out", [False, True])
def test_engine_swiglu_on_reference_linears(quant_out):
    """linear_glue.swiglu on CPU (reference linears): silu(gate x) * (up x) with the
    activation dtype's roundings, quantized like resetfp4.nvfp4.quantize when asked."""
    gate = quantize(torch.randn(32, 64))
    up = quantize(torch.randn(32, 64), global_scale=gate.global_scale)
    pw = linear_glue.prepare(kg.interleave_gate_up(gate, up))
    x = torch.randn(3, 64).to(torch.bfloat16)
    out_scale = torch.tensor([0.01]) if quant_out else None
    h = linear_glue.swiglu(x, pw, act="bf16", input_scale=None, out_scale=out_scale, bias=None)
    g = (x.float() @ gate.dequantize(torch.float32).T).to(x.dtype)
    u = (x.float() @ up.dequantize(torch.float32).T).to(x.dtype)
    want = torch.nn.functional.silu(g) * u
    if quant_out:
        want = act_quant.fake_quant_ref(want, out_scale)
    assert_bitexact(h, want, "swiglu on the reference linears")
    with pytest.raises(ValueError, match="act 'bf16' or 'fp4_pre'"):
        linear_glue.swiglu(x, pw, act="fp4", input_scale=None, out_scale=None, bias=None)


def test_linear_swiglu_on_fused_gate_up():
    """Linear.swiglu on a gate/up pair fused with interleaved rows (W4A4, reference linears):
    silu(gate) * up of the parts, and the misuses named."""
    from resetfp4.engine.model import Linear, fuse_linears

    torch.manual_seed(0)
    gs_w, in_scale = torch.tensor(0.003), torch.tensor(0.02)
    parts = []
    for _ in range(2):
        lin = Linear(64, 32, False, torch.float32)
        lin.set_nvfp4(quantize(torch.randn(32, 64), global_scale=gs_w), "fp4", in_scale)
        parts.append(lin)
    fused = fuse_linears(parts, swiglu=True)
    assert fused is not None and fused.rows_interleaved
    xq = act_quant.fake_quant_ref(torch.randn(3, 64), in_scale.reshape(1))  # what a producer emits
    h = fused.swiglu(xq, True, None)
    want = torch.nn.functional.silu(parts[0].forward_prequant(xq)) * parts[1].forward_prequant(xq)
    # fp32 throughout: the fused weight's rows are the same NVFP4 values, only the product's
    # summation order may differ (~sqrt(64) * 2^-24 relative); 1e-6 is that with margin
    torch.testing.assert_close(h, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="quantized with its input_scale"):
        fused.swiglu(xq, False, None)
    plain = fuse_linears(parts)
    assert plain is not None and not plain.rows_interleaved
    with pytest.raises(ValueError, match="needs the gate/up rows interleaved"):
        plain.swiglu(xq, True, None)


@pytest.mark.parametrize("n,k", [(24576, 4096), (34816, 5120), (51200, 5120), (17408, 5120),
                                 (9728, 896), (3072, 576), (32, 64), (96, 128)])
@pytest.mark.parametrize("m_class", [8, 16])
@pytest.mark.parametrize("sms", [132, 108, 7])
def test_swiglu_plan_is_the_cheapest_even_tile_count(n, k, m_class, sms):
    """swiglu_plan minimizes the plan cost model over every even tiles-per-CTA count (whole
    gate/up tile pairs), not just the unrestricted plan's R rounded up to even."""
    tiles, _ = kg.grid_dims(n, k)
    r = kg.swiglu_plan(n, k, sms, m_class)
    r_max = min(tiles, kg.MAX_TILES_PER_CLUSTER[m_class])
    assert r % 2 == 0 and 2 <= r <= r_max
    p = kg.chunks_per_rank(k, 1, m_class)
    costs = {c: kg._plan_cost(tiles, 1, c, p, sms, kg.CTAS_PER_SM[m_class], m_class)
             for c in range(2, r_max + 1, 2)}
    assert costs[r] == min(costs.values()), (r, costs)


def test_swiglu_plan_of_qwen3_32b_gate_up_on_132_sms():
    """The case that moved (H200, session 18, dev/kernels/swiglu_plan_sweep.py): the Qwen3-32B
    gate/up (3200 tiles) ran R = 6 (534 CTAs, two waves) at 48.7 µs (M = 1); R = 10 (320
    CTAs, one wave) 46.7 µs. The Qwen3-8B and 14B picks were already the fastest timed."""
    assert kg.swiglu_plan(51200, 5120, 132, 8) == 10
    assert kg.swiglu_plan(24576, 4096, 132, 8) == 4
    assert kg.swiglu_plan(34816, 5120, 132, 8) == 6


def test_swiglu_plan_needs_two_tiles_and_no_clusters():
    with pytest.raises(ValueError, match="at least 2 row tiles"):
        kg.swiglu_plan(16, 64, 132, 8)
    with pytest.raises(ValueError, match="max_cluster must be 1, got 8"):
        kg.plan(4096, 4096, 132, 8, 8, even=True)
