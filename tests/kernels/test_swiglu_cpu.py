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
