"""The decode step's one-launch bookkeeping (resetfp4.engine.record_kernels) against the torch
reference (DecodeRunner._record_torch), bit for bit, on fresh random states: every batch
bucket shape, rows at the clamps (hidx and pos at their last column / position), poisoned
history, with and without advancing pos, and inside a CUDA graph."""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch

from resetfp4.engine.decode import DecodeRunner, DecodeState

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package"),
]

T = 37  # history columns (= max_seq_len)


def random_state(b: int, g: torch.Generator, dev: torch.device) -> tuple[DecodeState, tuple]:
    st = DecodeState.allocate(b, T, dev)
    st.tok.copy_(torch.randint(0, 1000, (b,), generator=g))
    st.pos.copy_(torch.randint(0, T, (b,), generator=g))
    st.pos[0] = T - 1  # at the clamp
    st.hidx.copy_(torch.randint(0, T, (b,), generator=g))
    st.hidx[-1] = T - 1
    st.step.fill_(int(torch.randint(0, 100, (1,), generator=g)))
    st.hist_ids.copy_(torch.randint(-5, 5, (b, T), generator=g))
    # poisoned with a finite sentinel (not NaN: row 0 writes a NaN entropy, which a NaN
    # poison would hide): every written cell must be overwritten exactly
    st.hist_ent.fill_(-123.0)
    st.hist_temp.copy_(torch.randn(b, T, generator=g))
    st.hist_start.copy_(torch.rand(b, T, generator=g) < 0.5)
    ids = torch.randint(0, 151_936, (b,), generator=g).to(dev)
    ent = torch.rand(b, generator=g).to(dev) * 5
    ent[0] = float("nan")  # an invalid row's entropy
    temp = torch.rand(b, generator=g).to(dev)
    start = (torch.rand(b, generator=g) < 0.5).to(dev)
    return st, (ids, ent, temp, start)


def clone(st: DecodeState) -> DecodeState:
    return DecodeState(*(t.clone() for t in (st.tok, st.pos, st.step, st.hist_ids, st.hist_ent,
                                              st.hist_temp, st.hist_start, st.hidx)))


def fields(st: DecodeState) -> list[torch.Tensor]:
    return [st.tok, st.pos, st.step, st.hist_ids, st.hist_ent, st.hist_temp, st.hist_start, st.hidx]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype and bits (NaN where the other has NaN)."""
    if a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


def runner() -> types.SimpleNamespace:
    # _record_torch only reads model.max_seq_len
    return types.SimpleNamespace(model=types.SimpleNamespace(max_seq_len=T))


@pytest.mark.parametrize("b", [1, 2, 3, 8, 17, 64, 256])
@pytest.mark.parametrize("advance_pos", [True, False])
def test_record_kernel_matches_torch(b, advance_pos):
    from resetfp4.engine import record_kernels

    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(b)
    for _ in range(3):
        st, (ids, ent, temp, start) = random_state(b, g, dev)
        ref = clone(st)
        DecodeRunner._record_torch(runner(), ref, ids, ent, temp, start, advance_pos)
        record_kernels.launch_record(ids, ent, temp, start, st.tok, st.pos, st.hidx, st.step,
                                     st.hist_ids, st.hist_ent, st.hist_temp, st.hist_start, T - 1,
                                     advance_pos)
        for got, want in zip(fields(st), fields(ref), strict=True):
            assert same(got, want)


def test_record_kernel_in_graph_replays():
    from resetfp4.engine import record_kernels

    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(1)
    st, (ids, ent, temp, start) = random_state(4, g, dev)
    ref = clone(st)

    def rec():
        record_kernels.launch_record(ids, ent, temp, start, st.tok, st.pos, st.hidx, st.step,
                                     st.hist_ids, st.hist_ent, st.hist_temp, st.hist_start, T - 1, True)

    rec()  # compile outside the capture
    DecodeRunner._record_torch(runner(), ref, ids, ent, temp, start, True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rec()
    for _ in range(T + 2):  # past both clamps
        graph.replay()
        DecodeRunner._record_torch(runner(), ref, ids, ent, temp, start, True)
    torch.cuda.synchronize()
    for got, want in zip(fields(st), fields(ref), strict=True):
        assert same(got, want)
    assert int(st.step) == int(ref.step) and int(st.hidx.max()) == T - 1


def test_record_kernel_rejects_strided_history():
    from resetfp4.engine import record_kernels

    dev = torch.device("cuda")
    st, (ids, ent, temp, start) = random_state(2, torch.Generator().manual_seed(0), dev)
    with pytest.raises(ValueError, match="unit column stride"):
        record_kernels.launch_record(ids, ent, temp, start, st.tok, st.pos, st.hidx, st.step,
                                     st.hist_ids.t().contiguous().t(), st.hist_ent, st.hist_temp,
                                     st.hist_start, T - 1, True)
