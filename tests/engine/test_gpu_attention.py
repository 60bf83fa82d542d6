"""GPU: split-KV decode attention against the float64 reference (fresh random inputs,
poisoned outputs, odd shapes, per-row positions, CUDA-graph replay)."""

from __future__ import annotations

import pytest
import torch

from resetfp4.engine import attention as A
from resetfp4.testing.seeds import fresh_seed
from resetfp4.testing.tolerances import assert_rel_close

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU CI: the GPU tests below skip
    triton = None

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# bf16 inputs, fp32 softmax/accumulation; p is rounded to bf16 before p @ V (as flash
# attention does), a relative error of up to 2^-8 per weight: 1e-2 relative to the
# output norm leaves room for that and catches any indexing or masking error (O(1)).
REL = 1e-2


@pytest.fixture
def poisoned_buffers(monkeypatch):
    """Every floating-point ``torch.empty`` in the test comes back NaN-filled, so the ops'
    own output and partial buffers (allocated inside the ops) start poisoned: whatever a
    kernel leaves unwritten shows as NaN in the result."""
    orig = torch.empty

    def empty(*args, **kwargs):
        t = orig(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)


def _case(b, h_kv, rep, d, seq, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(fresh_seed(seed))
    q = torch.randn(b, h_kv, rep, d, device="cuda", generator=g).to(dtype)
    # A cache with more rows and positions than attended: views, as the engine passes them.
    kc = torch.randn(b + 2, h_kv, seq + 37, d, device="cuda", generator=g).to(dtype)
    vc = torch.randn(b + 2, h_kv, seq + 37, d, device="cuda", generator=g).to(dtype)
    pos = torch.randint(0, seq, (b,), device="cuda", generator=g)
    pos[0] = seq - 1
    if b > 1:
        pos[1] = 0
    if b > 2:
        pos[2] = seq + 3  # an idle slot past the view: attends all S keys, reads nothing beyond
    return q, kc[1 : b + 1, :, :seq], vc[1 : b + 1, :, :seq], pos


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "b,h_kv,rep,d,seq",
    [(1, 8, 4, 128, 1024), (1, 2, 7, 64, 256), (3, 1, 1, 64, 300), (8, 8, 4, 128, 2048), (64, 2, 7, 64, 512),
     (2, 4, 16, 128, 64), (5, 3, 2, 32, 1000)],
)
def test_matches_reference(b, h_kv, rep, d, seq, dtype, poisoned_buffers):
    q, k, v, pos = _case(b, h_kv, rep, d, seq, dtype, seed=b * 1000 + seq)
    assert A.available(q)
    got = A.decode_attention(q, k, v, pos)
    want = A.decode_attention_ref(q, k, v, pos)
    assert got.shape == want.shape and got.dtype == dtype
    assert torch.isfinite(got).all()
    assert_rel_close(got.float(), want.float(), REL, f"decode attention b{b} h{h_kv} rep{rep} d{d} S{seq}")
    # Per row as well: row 1 attends one key only (its output is that value row).
    if b > 1:
        assert_rel_close(got[1].float(), v[1, :, :1].expand(-1, rep, -1).float(), REL, "pos = 0 row")


def test_graph_replay_follows_positions():
    q, k, v, pos = _case(4, 8, 4, 128, 1024, torch.bfloat16, seed=7)
    out = torch.full_like(q, float("nan"))  # poisoned
    A.decode_attention(q, k, v, pos)  # compile the kernels outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out.copy_(A.decode_attention(q, k, v, pos))
    for step in range(3):
        pos.copy_(torch.tensor([1023, 5 + step, 512, 100 * step], device="cuda"))
        q.copy_(torch.randn_like(q))
        g.replay()
        torch.cuda.synchronize()
        assert_rel_close(out.float(), A.decode_attention_ref(q, k, v, pos).float(), REL, f"replay {step}")


def test_under_torch_compile():
    q, k, v, pos = _case(2, 2, 7, 64, 512, torch.bfloat16, seed=3)
    f = torch.compile(lambda q, k, v, p: A.decode_attention(q, k, v, p) * 2, dynamic=False)
    want = 2 * A.decode_attention_ref(q, k, v, pos).float()
    assert_rel_close(f(q, k, v, pos).float(), want, REL, "compiled")


def test_broadcast_positions_are_read_per_row():
    """pos as a stride-0 view (what a prefill of width 1 passes): every row reads its own
    position, not memory past the view."""
    q, k, v, _ = _case(4, 2, 7, 64, 1, torch.bfloat16, seed=5)
    junk = torch.full((1 << 16,), -1, dtype=torch.int64, device="cuda")
    del junk  # leave -1s in the allocator block right after the next small tensor
    pos = torch.arange(1, device="cuda").expand(4, 1)[:, 0]
    assert pos.stride() == (0,)
    got = A.decode_attention(q, k, v, pos)
    assert_rel_close(got.float(), A.decode_attention_ref(q, k, v, pos).float(), REL, "stride-0 pos")


# ---- decode_attention_fused: head preparation + cache write + attention in one kernel ----


@pytest.fixture(params=["triton", "cuda"])
def fused_backend(request, monkeypatch):
    """decode_attention_fused through the two Triton kernels, or the one-kernel CUDA path
    (sm_90 clusters) where it serves (head_dim 64/128; other shapes fall back to Triton)."""
    if request.param == "cuda" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the one-kernel CUDA attention needs sm_90 thread-block clusters")
    monkeypatch.setattr(A, "CUDA_ATTENTION", request.param == "cuda")
    monkeypatch.setattr(A, "CUDA_MIN_ROWS", 1)  # every batch size (the engine's default: >= 64)
    return request.param


def _check_backend(backend, q, kc, vc, rep):
    """The CUDA backend really serves the head dims it is built for (with >= 2 splits)."""
    serves = A.cuda_serves(q, kc, vc, rep)
    assert serves == (backend == "cuda" and kc.shape[3] in (64, 128)), (backend, kc.shape)


def _fused_case(b, h_kv, rep, d, seq, max_seq, norm, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(fresh_seed(seed))

    def rnd(*shape):
        return torch.randn(*shape, device="cuda", generator=g).to(dtype)

    qkv = rnd(b, (h_kv * rep + 2 * h_kv) * d)  # the fused projection's output: strided slices
    q, k, v = qkv.split([h_kv * rep * d, h_kv * d, h_kv * d], dim=-1)
    qw = (torch.rand(d, device="cuda", generator=g) + 0.5).to(dtype) if norm else None
    kw = (torch.rand(d, device="cuda", generator=g) + 0.5).to(dtype) if norm else None
    ang = torch.rand(b, d // 2, device="cuda", generator=g) * 100
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(dtype)
    sin = torch.cat([-ang.sin(), ang.sin()], -1).to(dtype)
    kc, vc = rnd(b + 2, h_kv, max_seq, d), rnd(b + 2, h_kv, max_seq, d)
    pos = torch.randint(0, seq, (b,), device="cuda", generator=g)
    pos[0] = seq - 1
    if b > 1:
        pos[1] = 0
    if b > 2:
        pos[2] = max_seq - 1  # an idle slot (clamped to the last cache position)
    return q, k, v, qw, kw, cos, sin, kc, vc, pos


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "b,h_kv,rep,d,seq,max_seq,norm",
    [(1, 8, 4, 128, 1024, 1536, True), (1, 2, 7, 64, 256, 256, False), (3, 1, 1, 64, 300, 333, True),
     (8, 8, 4, 128, 2048, 2048, True), (5, 3, 2, 32, 1000, 1100, False), (64, 2, 7, 64, 512, 600, True)],
)
def test_fused_matches_reference(b, h_kv, rep, d, seq, max_seq, norm, dtype, fused_backend,
                                 poisoned_buffers):
    q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(b, h_kv, rep, d, seq, max_seq, norm, dtype, b + seq)
    assert A.fused_available(q, d)
    _check_backend(fused_backend, q, kc, vc, rep)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc_ref, vc_ref, pos, seq)
    for r in range(b):  # the kernel reads its first tile before it knows pos: garbage past pos
        kc[r, :, int(pos[r]) + 1 :] = float("nan")
        vc[r, :, int(pos[r]) + 1 :] = float("inf")
        kc_ref[r, :, int(pos[r]) + 1 :] = float("nan")
        vc_ref[r, :, int(pos[r]) + 1 :] = float("inf")
    got = A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, seq)
    torch.cuda.synchronize()
    assert got.shape == want.shape and got.dtype == dtype and torch.isfinite(got).all()
    assert_rel_close(got.float(), want.float(), REL, f"fused b{b} h{h_kv} rep{rep} d{d} S{seq}")
    # The cache: the new rows match the eager preparation (RMSNorm's rsqrt may round one
    # ulp differently, so a relative floor, not equality), every other position is untouched.
    written = torch.zeros(kc.shape[:3], dtype=torch.bool, device="cuda")
    for r in range(b):
        written[r, :, int(pos[r])] = True
    torch.testing.assert_close(kc[~written], kc_ref[~written], equal_nan=True, rtol=0, atol=0)
    assert torch.equal(vc[~written], vc_ref[~written])
    assert torch.equal(vc[written], vc_ref[written])  # values are copied as they are
    assert_rel_close(kc[written].float(), kc_ref[written].float(), 1e-2, "written keys")


@pytest.mark.parametrize("b,d", [(1, 128), (8, 128), (3, 64)])
def test_fused_quantized_output(b, d, fused_backend):
    """With ``out_scale`` (W4A4 o_proj) the output is the NVFP4 round trip of the attention
    output (blocks of 16 along the head dim, global scale left out): exactly the reference
    quantizer applied to this backend's unquantized output, which itself matches float64."""
    from resetfp4.engine.act_quant import fake_quant_ref

    q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(b, 4, 4, d, 640, 700, True, torch.bfloat16, 5)
    _check_backend(fused_backend, q, kc, vc, 4)
    kc2, vc2 = kc.clone(), vc.clone()
    want = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc.clone(), vc.clone(), pos, 640)
    plain = A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, 640)
    gs = (want.float().abs().amax() / 2688).reshape(1)
    got = A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc2, vc2, pos, 640, out_scale=gs)
    torch.cuda.synchronize()
    assert_rel_close(plain.float(), want.float(), REL, "unquantized")
    flat = plain.reshape(-1, d)
    assert torch.equal(got.reshape(-1, d), fake_quant_ref(flat, gs)), "quantized output"


def test_fused_graph_replay_and_compile_write_the_cache(fused_backend):
    """Captured, then replayed at new positions; and under torch.compile (the cache is a
    mutated input: the writes must reach the caller's tensors)."""
    q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(4, 8, 4, 128, 1024, 1024, True, torch.bfloat16, 11)
    _check_backend(fused_backend, q, kc, vc, 4)
    out = torch.full((4, 8, 4, 128), float("nan"), dtype=torch.bfloat16, device="cuda")
    A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, 1024)  # compile outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out.copy_(A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, 1024))
    for step in range(3):
        pos.copy_(torch.tensor([1023, 5 + step, 512, 100 * step], device="cuda"))
        q.copy_(torch.randn_like(q))
        k.copy_(torch.randn_like(k))
        kc_ref, vc_ref = kc.clone(), vc.clone()
        want = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc_ref, vc_ref, pos, 1024)
        g.replay()
        torch.cuda.synchronize()
        assert_rel_close(out.float(), want.float(), REL, f"replay {step}")
        assert_rel_close(kc.float(), kc_ref.float(), 1e-2, f"replay {step} cache")

    f = torch.compile(lambda *a: A.decode_attention_fused(*a) * 2, dynamic=False)
    pos.copy_(torch.tensor([7, 700, 1, 1000], device="cuda"))
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc_ref, vc_ref, pos, 1024)
    want = 2 * want.float()
    got = f(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, 1024)
    torch.cuda.synchronize()
    assert_rel_close(got.float(), want, REL, "compiled")
    assert torch.equal(vc, vc_ref), "compiled: the value cache write did not reach the caller's tensor"
    assert_rel_close(kc.float(), kc_ref.float(), 1e-2, "compiled cache")


if triton is not None:
    from resetfp4.engine.act_quant_kernels import pdl_trigger

    @triton.jit
    def _late_writer(src, dst, n, psrc, pdst, nb, spin, BLOCK: tl.constexpr):
        """Signal the next kernel at once (programmatic dependent launch), spin, then copy
        ``src`` -> ``dst`` and ``psrc[:nb]`` -> ``pdst``."""
        pdl_trigger(True)
        acc = tl.program_id(0).to(tl.float32)
        for _ in range(spin):
            acc = acc * 0.999 + 1.0
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        x = tl.load(src + offs, mask=m)
        tl.store(dst + offs, tl.where(acc >= 0.0, x, x * 0), mask=m)  # always x: keeps the spin
        pm = (tl.arange(0, 16) < nb) & (tl.program_id(0) == 0)
        tl.store(pdst + tl.arange(0, 16), tl.load(psrc + tl.arange(0, 16), mask=pm), mask=pm)


@pytest.mark.parametrize("b,seq,max_seq", [(1, 700, 1024), (8, 1500, 1536)])
def test_fused_waits_for_a_pdl_predecessor(b, seq, max_seq, fused_backend):
    """Both attention kernels are launched with programmatic dependent launch, so they may
    start while the kernel before them still runs; the split kernel even loads cached keys
    before it waits (one-tile splits, b = 1). Here that predecessor signals at once, spins
    (~0.5 ms), then writes q/k/v and pos: the attention must read what it wrote."""
    from resetfp4.engine import act_quant_kernels as ak

    if triton is None or not ak.pdl(torch.empty(1, device="cuda")) or not ak.triton_launches_pdl():
        pytest.skip("programmatic dependent launch needs an NVIDIA sm_90+ GPU and a Triton with launch_pdl")
    q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(b, 8, 4, 128, seq, max_seq, True, torch.bfloat16, 7)
    _check_backend(fused_backend, q, kc, vc, 4)
    qkv = q._base
    assert qkv is not None and k._base is qkv and v._base is qkv
    final, pos_final = qkv.clone(), pos.clone()
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc_ref, vc_ref, pos_final, seq)
    # Compile both kernels first, so that nothing runs on the host between the two launches.
    A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc.clone(), vc.clone(), pos, seq)
    _late_writer[(1,)](final, final.clone(), 1, pos_final, pos_final.clone(), 1, 1, BLOCK=1024)
    qkv.copy_(torch.randn_like(qkv))  # stale inputs until the writer runs
    pos.zero_()
    torch.cuda.synchronize()
    n = qkv.numel()
    _late_writer[(triton.cdiv(n, 1024),)](final, qkv, n, pos_final, pos, b, 200_000, BLOCK=1024)
    got = A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, seq)
    torch.cuda.synchronize()
    assert torch.equal(pos, pos_final) and torch.equal(qkv, final)
    assert_rel_close(got.float(), want.float(), REL, f"after a late PDL writer, b{b}")
    for r in range(b):  # the new key went to pos_final, not to the stale pos 0
        p = int(pos_final[r])
        if p > 0:
            assert torch.equal(vc[r, :, p], vc_ref[r, :, p]) and torch.equal(vc[r, :, 0], vc_ref[r, :, 0])
