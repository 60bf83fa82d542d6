"""GPU: split-KV decode attention against the float64 reference (fresh random inputs,
poisoned outputs, odd shapes, per-row positions, CUDA-graph replay)."""

from __future__ import annotations

import pytest
import torch

from resetfp4.engine import attention as A
from resetfp4.testing.tolerances import assert_rel_close

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# bf16 inputs, fp32 softmax/accumulation; p is rounded to bf16 before p @ V (as flash
# attention does), a relative error of up to 2^-9 per weight: 1e-2 relative to the
# output norm leaves room for that and catches any indexing or masking error (O(1)).
REL = 1e-2


def _case(b, h_kv, rep, d, seq, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
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
def test_matches_reference(b, h_kv, rep, d, seq, dtype):
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


def _fused_case(b, h_kv, rep, d, seq, max_seq, norm, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)

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
def test_fused_matches_reference(b, h_kv, rep, d, seq, max_seq, norm, dtype):
    q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(b, h_kv, rep, d, seq, max_seq, norm, dtype, b + seq)
    assert A.fused_available(q, d)
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
    assert torch.equal(kc[~written].nan_to_num(), kc_ref[~written].nan_to_num())
    assert torch.equal(vc[~written], vc_ref[~written])
    assert torch.equal(vc[written], vc_ref[written])  # values are copied as they are
    assert_rel_close(kc[written].float(), kc_ref[written].float(), 1e-2, "written keys")


def test_fused_graph_replay_and_compile_write_the_cache():
    """Captured, then replayed at new positions; and under torch.compile (the cache is a
    mutated input: the writes must reach the caller's tensors)."""
    q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(4, 8, 4, 128, 1024, 1024, True, torch.bfloat16, 11)
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
