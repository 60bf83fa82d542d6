"""GPU: the fused W4A4 activation producers (resetfp4.engine.act_quant) against the
reference quantizer (fresh random inputs, poisoned outputs, odd widths, bf16 and fp16,
torch.compile and CUDA-graph replay), and the compiled W4A4 decode step using them."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_args

from resetfp4.engine import act_quant as Q
from resetfp4.engine import act_quant_kernels as kq
from resetfp4.testing.seeds import fresh_seed
from resetfp4.testing.tolerances import assert_rel_close, rel_for_dtype

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DTYPES = [torch.bfloat16, torch.float16]


def _poisoned(*like: torch.Tensor) -> list[torch.Tensor]:
    """NaN-filled outputs shaped like ``like``: anything a kernel leaves unwritten shows."""
    return [torch.full_like(t, float("nan"), memory_format=torch.contiguous_format) for t in like]


def _crafted(m: int, k: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(fresh_seed(seed))
    x = torch.randn(m, k, device="cuda", generator=g) * torch.logspace(-4, 3, m, device="cuda")[:, None]
    x[0, :16] = 0  # all-zero block
    x[1, :16] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0], device="cuda").repeat(2) / 4
    x[1, 8:16] *= -1  # gs = 0.25 / 6: s = 6, s gs = 0.25, y / (s gs) = 4 y hits the midpoints: ties
    x[2, 16:32] = 1e-30  # fp8 block scale underflows
    x[3, :16] = 1e4  # block scale clamps at 448
    x[4, :16] = torch.linspace(-1e-3, 1e-3, 16, device="cuda")  # subnormal fp8 block scales
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", [(5, 16), (6, 48), (7, 4096), (16, 12288), (9, 5136)])
def test_fake_quant_is_bit_exact(m, k, dtype):
    gs = torch.tensor([0.25 / 6], device="cuda")
    x = _crafted(max(m, 5), k, dtype, seed=m * k)
    got = Q.fake_quant(x, gs)
    assert torch.equal(got, Q.fake_quant_ref(x, gs))
    x = torch.randn(m, k, device="cuda").to(dtype) * 3
    gs = x.float().abs().amax().reshape(1) / 2688 / 1.7  # block scales clamp at 448: codes saturate
    (out,) = _poisoned(x)
    kq.launch_fake_quant(x, gs, out)
    assert torch.equal(out, Q.fake_quant_ref(x, gs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", [(1, 4096), (8, 5120), (16, 1040), (3, 48)])
def test_add_rmsnorm_quant(m, k, dtype):
    g = torch.Generator(device="cuda").manual_seed(fresh_seed(m + k))
    h = torch.randn(m, k, device="cuda", generator=g).to(dtype)
    d = torch.randn(m, k, device="cuda", generator=g).to(dtype)
    w = (torch.rand(k, device="cuda", generator=g) + 0.5).to(dtype)
    gs = torch.tensor([0.004], device="cuda")
    x, xq = Q.add_rmsnorm_quant(h, d, w, 1e-6, gs)
    rx, rxq = Q.add_rmsnorm_quant_ref(h, d, w, 1e-6, gs)
    assert torch.equal(x, rx)
    # The norm's fp32 sum (and rsqrt) differ from torch's in order, so y may move by one ulp
    # against the reference, and with it a code. So the kernel's own y (gs None, the same
    # program) is checked against the reference by relative error, and its quantization
    # bit-exactly: xq = fake_quant_ref(y). Outputs poisoned.
    x1, xq1, x2, y = _poisoned(h, h, h, h)
    kq.launch_add_rmsnorm_quant(h, d, w, 1e-6, gs, x1, xq1)
    kq.launch_add_rmsnorm_quant(h, d, w, 1e-6, None, x2, y)
    assert torch.equal(x1, rx) and torch.equal(x2, rx)
    assert torch.equal(xq1, Q.fake_quant_ref(y, gs)) and torch.equal(xq1, xq)
    ry = Q.add_rmsnorm_quant_ref(h, d, w, 1e-6, None)[1]
    assert_rel_close(y.float(), ry.float(), rel_for_dtype(dtype), "add_rmsnorm (unquantized)")
    assert (xq == rxq).float().mean() > 0.999  # codes flip only where y moved


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n", [(1, 12288), (8, 17408), (16, 48), (2, 1040)])
def test_silu_mul_quant(m, n, dtype):
    g = torch.Generator(device="cuda").manual_seed(fresh_seed(m + n))
    gu_wide = torch.randn(m, 2 * n + 32, device="cuda", generator=g).to(dtype)
    gu = gu_wide[:, : 2 * n]  # rows strided like a view
    gs = torch.tensor([0.004], device="cuda")
    xq = Q.silu_mul_quant(gu, gs)
    want = Q.silu_mul_quant_ref(gu, gs)
    assert xq.shape == (m, n) and (xq == want).float().mean() > 0.999
    # As in test_add_rmsnorm_quant: the kernel's own h (gs None) by relative error against
    # the reference (exp and the product may differ from torch's by an ulp), its
    # quantization bit-exactly. Outputs poisoned.
    xq1, y = _poisoned(xq, xq)
    kq.launch_silu_mul_quant(gu, gs, xq1)
    kq.launch_silu_mul_quant(gu, None, y)
    assert torch.equal(xq1, Q.fake_quant_ref(y, gs)) and torch.equal(xq1, xq)
    assert_rel_close(y.float(), Q.silu_mul_quant_ref(gu, None).float(), rel_for_dtype(dtype), "silu_mul")


@pytest.mark.parametrize("dtype", DTYPES)
def test_unquantized_producers(dtype):
    """gs None (the W4A16 decode step): the producers' y itself, to the model's roundings."""
    g = torch.Generator(device="cuda").manual_seed(fresh_seed(5))
    h, d = (torch.randn(3, 5120, device="cuda", generator=g).to(dtype) for _ in range(2))
    w = (torch.rand(5120, device="cuda", generator=g) + 0.5).to(dtype)
    x, y = Q.add_rmsnorm_quant(h, d, w, 1e-6, None)
    rx, ry = Q.add_rmsnorm_quant_ref(h, d, w, 1e-6, None)
    assert torch.equal(x, rx)
    assert (y == ry).float().mean() > 0.99  # bf16: a few elements one ulp off (summation order)
    assert_rel_close(y.float(), ry.float(), rel_for_dtype(dtype), "add_rmsnorm")
    gu = torch.randn(3, 2 * 1040, device="cuda", generator=g).to(dtype)
    a = Q.silu_mul_quant(gu, None)
    assert_rel_close(a.float(), Q.silu_mul_quant_ref(gu, None).float(), rel_for_dtype(dtype), "silu_mul")


def test_compile_and_graph_replay():
    h = torch.randn(4, 4096, device="cuda", dtype=torch.bfloat16)
    d = torch.randn_like(h)
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
    gs = torch.tensor([0.004], device="cuda")
    f = torch.compile(lambda h, d: Q.add_rmsnorm_quant(h, d, w, 1e-6, gs)[1] * 1, dynamic=False)
    assert (f(h, d) == Q.add_rmsnorm_quant_ref(h, d, w, 1e-6, gs)[1]).float().mean() > 0.999
    out = torch.full_like(h, float("nan"))  # poisoned
    Q.silu_mul_quant(torch.cat([h, d], 1), gs)  # compile the kernel outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out.copy_(Q.silu_mul_quant(torch.cat([h, d], 1), gs))
    for _ in range(2):
        h.copy_(torch.randn_like(h))
        graph.replay()
        torch.cuda.synchronize()
        assert (out == Q.silu_mul_quant_ref(torch.cat([h, d], 1), gs)).float().mean() > 0.999


@pytest.mark.parametrize("precision", ["nvfp4-w4a4", "nvfp4-w4a16"])
def test_compiled_decode_uses_the_fused_producers(precision):
    """The compiled NVFP4 decode step runs the act_quant producers (W4A4: and no separate
    activation quantizer; the SiLU-mul is in the gate/up GEMV unless RESETFP4_SWIGLU_GEMV=0),
    and its logits stay close to the eager forward (which quantizes W4A4 activations in
    each linear)."""
    from resetfp4.engine import model as M
    from resetfp4.engine.build import random_model
    from resetfp4.engine.decode import _compiled

    model = random_model(tiny_args("qwen3", vocab_size=4096), precision, torch.device("cuda"))
    model.setup_cache(2, 64)
    model.fuse_projections()
    tok = torch.tensor([[3], [4]], device="cuda")
    pos = torch.tensor([[5], [9]], device="cuda")
    with torch.no_grad():
        want = model(tok, pos, 64)
        cf = _compiled(model)
        cf(tok, pos, 64)  # compile
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            got = cf(tok, pos, 64)
            torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert not any("quant_act" in n for n in names), "a separate quantizer ran in the compiled step"
    assert any("add_rmsnorm_quant" in n for n in names)
    if M._SWIGLU_GEMV:  # the gate/up GEMV applies SiLU-mul (and W4A4's quantization) itself
        assert all(layer.mlp.gate_up_fused.rows_interleaved for layer in model.model.layers)
        assert not any("silu_mul" in n for n in names), "a SiLU-mul producer ran beside the SwiGLU GEMV"
    else:  # RESETFP4_SWIGLU_GEMV=0: the SiLU-mul producer quantizes for the down projection
        assert any("silu_mul_quant" in n for n in names)
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 2e-2, f"compiled {precision} decode logits differ from eager by {rel:.3g} (relative L2)"


def test_mixed_devices_are_named():
    """A tensor left on the CPU is named before any kernel runs (the checks CPU tests
    cannot reach: a CPU-only machine has one device)."""
    from resetfp4.engine import attention as A

    h = torch.randn(2, 64, device="cuda", dtype=torch.bfloat16)
    gs = torch.tensor([0.1], device="cuda")
    with pytest.raises(ValueError, match="alike"):
        Q.add_rmsnorm_quant(h, h.cpu(), torch.ones(64, device="cuda", dtype=torch.bfloat16), 1e-6, gs)
    with pytest.raises(ValueError, match="norm weight must be"):
        Q.add_rmsnorm_quant(h, h, torch.ones(64, dtype=torch.bfloat16), 1e-6, gs)
    b, h_kv, rep, d = 2, 2, 3, 64
    q = torch.randn(b, h_kv * rep * d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, h_kv * d, device="cuda", dtype=torch.bfloat16)
    cs = torch.randn(b, d, device="cuda", dtype=torch.bfloat16)
    kc = torch.zeros(b, h_kv, 32, d, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="one device"):
        A.decode_attention_fused(q, k, k, None, None, 1e-6, cs, cs, kc, kc.clone(), torch.tensor([3, 5]), 16)
