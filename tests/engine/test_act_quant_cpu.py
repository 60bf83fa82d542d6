"""CPU: the fused W4A4 activation producers (resetfp4.engine.act_quant) under Triton's
interpreter against the reference quantizer (only where the triton package is installed;
CI's CPU torch has none, so there it skips with that reason), and their input checks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from resetfp4.engine import act_quant as Q

_SCRIPT = textwrap.dedent("""
import torch
from resetfp4.engine import act_quant as Q
from resetfp4.engine import act_quant_kernels as kq

torch.manual_seed(0)


def crafted(m, k, dt):
    x = torch.randn(m, k) * torch.logspace(-4, 3, m)[:, None]
    x[0, :16] = 0  # an all-zero block: scale 1
    # the E2M1 midpoints exactly (amax 1.5, gs = 0.25 / 6: s = 6, s gs = 0.25, y / (s gs) = 4 y): ties
    x[1, :16] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]).repeat(2) / 4
    x[1, 8:16] *= -1
    x[2, 16:32] = 1e-30  # the fp8 block scale underflows to 0
    x[3, :16] = 1e4  # the block scale clamps at 448: codes saturate at 6
    x[4, :16] = torch.linspace(-1e-3, 1e-3, 16)  # subnormal fp8 block scales
    return x.to(dt)


gs = torch.tensor([0.25 / 6])
for dt in (torch.float32, torch.float16):
    for m, k in [(5, 64), (6, 48), (6, 1040)]:
        x = crafted(m, k, dt)
        out = torch.full_like(x, float("nan"))
        kq.launch_fake_quant(x, gs, out)
        assert torch.equal(out, Q.fake_quant_ref(x, gs)), (dt, m, k)
    g2 = torch.tensor([0.01])
    for k in (1040, 64):
        h, d = torch.randn(3, k).to(dt), torch.randn(3, k).to(dt)
        w = (torch.rand(k) + 0.5).to(dt)
        x, xq = torch.full_like(h, float("nan")), torch.full_like(h, float("nan"))
        kq.launch_add_rmsnorm_quant(h, d, w, 1e-6, g2, x, xq)
        rx, rxq = Q.add_rmsnorm_quant_ref(h, d, w, 1e-6, g2)
        assert torch.equal(x, rx), (dt, k)
        # The norm's fp32 sum runs in another order: a code may flip where y moved one ulp.
        assert (xq == rxq).float().mean() > 0.999 and torch.isfinite(xq).all(), (dt, k)
        gu = torch.randn(3, 2 * k).to(dt)
        xq = torch.full((3, k), float("nan"), dtype=dt)
        kq.launch_silu_mul_quant(gu, g2, xq)
        assert (xq == Q.silu_mul_quant_ref(gu, g2)).float().mean() > 0.999 and torch.isfinite(xq).all()
        # gs None: the same producers unquantized (the W4A16 decode step)
        kq.launch_silu_mul_quant(gu, None, xq)
        assert (xq - Q.silu_mul_quant_ref(gu, None)).abs().max() <= 2e-3 * gu.abs().max() ** 2
        kq.launch_add_rmsnorm_quant(h, d, w, 1e-6, None, x, xq)
        assert (xq - Q.add_rmsnorm_quant_ref(h, d, w, 1e-6, None)[1]).abs().max() < 2e-2
print("interpreter ok")
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="needs the triton package (its CPU interpreter)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the kernels in test_gpu_act_quant.py")
def test_kernels_under_the_interpreter_match_the_reference():
    # fp32 and fp16 (the interpreter has no bf16): the quantizer exactly (ties, zero,
    # underflowing, clamped and subnormal block scales), the producers to the norm's order.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "interpreter ok" in r.stdout, r.stderr[-3000:]


def test_reference_is_the_quantizer():
    """fake_quant_ref = quantize(...).dequantize() without the global scale."""
    from resetfp4.format.nvfp4 import quantize

    x = torch.randn(4, 64, dtype=torch.bfloat16)
    gs = torch.tensor([0.02])
    want = quantize(x, global_scale=gs).dequantize(torch.float32)
    assert torch.allclose(Q.fake_quant_ref(x, gs).float() * gs, want, rtol=2**-20, atol=0)


def test_bad_input_is_named():
    """The checks run before any kernel, so they are tested on CPU tensors."""
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    gs = torch.tensor([0.1])
    with pytest.raises(ValueError, match="multiple of 16"):
        Q.fake_quant(torch.randn(2, 40, dtype=torch.bfloat16), gs)
    with pytest.raises(ValueError, match="2-D bf16/fp16"):
        Q.fake_quant(x.float(), gs)
    with pytest.raises(ValueError, match="one fp32 value"):
        Q.fake_quant(x, gs.double())
    with pytest.raises(ValueError, match="one fp32 value"):
        Q.fake_quant(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="alike"):
        Q.add_rmsnorm_quant(x, x.half(), torch.ones(64, dtype=torch.bfloat16), 1e-6, gs)
    with pytest.raises(ValueError, match=r"norm weight must be \[64\]"):
        Q.add_rmsnorm_quant(x, x, torch.ones(32, dtype=torch.bfloat16), 1e-6, gs)
    with pytest.raises(ValueError, match="norm weight must be"):
        Q.add_rmsnorm_quant(x, x, torch.ones(64), 1e-6, gs)  # fp32 weight, bf16 activations
    with pytest.raises(ValueError, match="multiple of 16"):
        Q.silu_mul_quant(torch.randn(2, 48, dtype=torch.bfloat16), gs)
    with pytest.raises(ValueError, match=r"gu must be \[M, 2N\]"):
        Q.silu_mul_quant(torch.randn(2, 33, dtype=torch.bfloat16), gs)
    assert not Q.available(x)  # CPU tensors: the model keeps the unfused W4A4 path


def test_prequantized_linear_equals_quantizing_linear():
    """linear_glue act "fp4_pre" (x already quantized by its producer, global scale in the
    epilogue) gives the W4A4 result of act "fp4" on the unquantized x (reference linears)."""
    from resetfp4.engine import linear_glue
    from resetfp4.format.nvfp4 import quantize

    g = torch.Generator().manual_seed(3)
    w = quantize(torch.randn(24, 64, generator=g))
    pw = linear_glue.prepare(w)
    x = torch.randn(5, 64, generator=g).to(torch.bfloat16)
    gs = torch.tensor([0.003])
    bias = torch.randn(24, generator=g).to(torch.bfloat16)
    want = linear_glue.nvfp4_linear(x, pw, act="fp4", input_scale=gs, bias=bias)
    got = linear_glue.nvfp4_linear(Q.fake_quant_ref(x, gs), pw, act="fp4_pre", input_scale=gs, bias=bias)
    # e2m1 * (s * gs) vs (e2m1 * s) * gs: one fp32 rounding apart before the bf16 output
    assert torch.allclose(got.float(), want.float(), rtol=2**-7, atol=1e-3)
    with pytest.raises(ValueError, match="needs the input_scale"):
        linear_glue.nvfp4_linear(x, pw, act="fp4_pre", input_scale=None, bias=None)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")
def test_launch_opts_pass_launch_pdl_only_when_it_is_on(monkeypatch):
    from resetfp4.engine import act_quant_kernels as ak

    t = torch.empty(1)
    assert ak.launch_opts(t) == {"PDL": False}  # a CPU tensor: no keyword an old Triton rejects
    monkeypatch.setattr(ak, "pdl", lambda t: True)
    monkeypatch.setattr(ak, "triton_launches_pdl", lambda: True)
    assert ak.launch_opts(t) == {"PDL": True, "launch_pdl": True}
    monkeypatch.setattr(ak, "triton_launches_pdl", lambda: False)  # Triton <= 3.3
    assert ak.launch_opts(t) == {"PDL": True}
    monkeypatch.setattr(ak, "triton_launches_pdl", lambda: True)
    monkeypatch.setattr(ak, "_PDL_LAUNCH", False)  # RESETFP4_TRITON_PDL_LAUNCH=0
    assert ak.launch_opts(t) == {"PDL": True}
