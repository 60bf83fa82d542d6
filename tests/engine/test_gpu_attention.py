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
