"""The top-K candidate path (``impl="torch"``, the Triton kernels' reference) vs the full sort."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from resetfp4.sampling import BatchSampler, SamplerConfig, triton_available
from resetfp4.sampling import candidates as C
from resetfp4.sampling.batch import HIST_MAX_BATCH, pick_select

V, B, K = 2048, 6, 64


def pair(cfgs: list[SamplerConfig], candidates: int = K, track: bool = True) -> list[BatchSampler]:
    out = []
    for impl in ("torch", "sort"):
        s = BatchSampler(B, V, "cpu", impl=impl, candidates=candidates, track_entropy=track)
        for b, c in enumerate(cfgs):
            s.configure(b, c, seed=7 * b + 1)
        out.append(s)
    return out


CFGS = [SamplerConfig(mode="reset", tau0=1.0, window=4), SamplerConfig(mode="fixed", temperature=0.6),
        SamplerConfig(mode="fixed", temperature=1.0, top_k=20, min_p=0.05), SamplerConfig(mode="greedy"),
        SamplerConfig(mode="reset", t_low=0.3, tau0=0.2, top_p=0.8), SamplerConfig(mode="fixed", top_p=1.0,
                                                                                   top_k=K)]


def peaked(g: torch.Generator) -> torch.Tensor:
    """LM-like rows: 32 plausible tokens at random positions over a low tail."""
    x = torch.randn(B, V, generator=g) * 2 - 6
    head = torch.randint(0, V, (B, 32), generator=g)
    x.scatter_(1, head, 4 + 6 * torch.rand(B, 32, generator=g))
    return x


def test_candidates_equal_full_sort_when_the_nucleus_fits():
    g = torch.Generator().manual_seed(0)
    fast, ref = pair(CFGS)
    for _ in range(40):
        x = peaked(g)
        assert torch.equal(fast.step(x), ref.step(x))
        assert torch.equal(fast.last_temperature, ref.last_temperature)
        assert torch.equal(fast.last_entropy, ref.last_entropy)
    assert fast.truncated.tolist() == [0] * B and ref.truncated.tolist() == [0] * B


def test_all_candidates_is_exact_for_any_distribution():
    g = torch.Generator().manual_seed(1)
    fast, ref = pair(CFGS, candidates=V)
    for _ in range(20):
        x = torch.randn(B, V, generator=g) * 1.5  # flat: the nucleus holds ~thousands of tokens
        assert torch.equal(fast.step(x), ref.step(x))
    assert fast.truncated.tolist() == [0] * B


def test_flat_rows_are_truncated_to_the_candidates_and_counted():
    g = torch.Generator().manual_seed(2)
    fast, _ = pair(CFGS, track=True)
    for _ in range(10):
        x = torch.randn(B, V, generator=g)
        top = x.topk(K, dim=-1).indices
        ids = fast.step(x)
        assert bool((top == ids[:, None]).any(dim=1).all())  # drawn among the K candidates
    # top-k <= K (rows 2, 5) and greedy (row 3) are exact; flat rows 0, 1, 4 are cut every step
    assert fast.truncated.tolist() == [10, 10, 0, 0, 10, 0]
    fast.configure(0, CFGS[0])
    assert int(fast.truncated[0]) == 0


def test_top_p_one_keeps_every_candidate_and_is_never_exact_below_the_vocabulary():
    # peaked rows: the float32 running sum of the candidates reaches 1.0 well before the K-th,
    # which used to drop the rest and call the row exact (the sort path keeps the whole tail)
    g = torch.Generator().manual_seed(3)
    x = peaked(g) * 3
    vals = x.topk(K, dim=-1).values
    m = vals[:, 0]
    t = torch.ones(B)
    z = C.partition(x, m, t)
    one, off = torch.ones(B), torch.zeros(B, dtype=torch.long)
    probs = torch.exp(vals - m[:, None]) / z[:, None]
    assert bool((probs.cumsum(-1)[:, K // 2] >= 1.0).any())  # the case that used to be cut
    keep, _, exact = C.candidate_keep(vals, m, z, t, V, off, one, torch.zeros(B))
    assert bool(keep.all()) and not bool(exact.any())
    keep, _, exact = C.candidate_keep(x.sort(dim=-1, descending=True).values, m, z, t, V, off, one,
                                      torch.zeros(B))
    assert bool(keep.all()) and bool(exact.all())  # all V candidates: exact
    fast, ref = pair([SamplerConfig(mode="fixed", temperature=1.0, top_p=1.0)] * B)
    for _ in range(5):
        fast.step(x)
    assert fast.truncated.tolist() == [5] * B


def test_bad_impl_and_candidates():
    with pytest.raises(ValueError, match="impl must be"):
        BatchSampler(2, 16, "cpu", impl="cuda")
    with pytest.raises(ValueError, match="candidates"):
        BatchSampler(2, 16, "cpu", candidates=0)
    assert BatchSampler(2, 16, "cpu").impl == "torch"  # no CUDA here: never the Triton path
    assert BatchSampler(2, 16, "cpu", candidates=10**6).candidates == 16
    with pytest.raises(ValueError, match="select must be"):
        BatchSampler(2, 16, "cpu", select="sort")
    picks = [pick_select("auto", b) for b in (1, HIST_MAX_BATCH, HIST_MAX_BATCH + 1)]
    assert picks == ["hist", "hist", "topk"]
    assert pick_select("topk", 1) == "topk" and pick_select("hist", 64) == "hist"


INTERP = textwrap.dedent("""
    import torch
    from resetfp4.sampling import BatchSampler, SamplerConfig
    V, B = 1500, 4
    g = torch.Generator().manual_seed(0)
    for track in (True, False):
        ss = [BatchSampler(B, V, "cpu", impl=i, candidates=128, track_entropy=track, select=SEL)
              for i in ("triton", "torch")]
        modes = ["reset", "fixed", "greedy", "reset"] if track else ["fixed", "fixed", "greedy", "fixed"]
        for s in ss:
            for b, m in enumerate(modes):
                s.configure(b, SamplerConfig(mode=m, tau0=1.0, window=2, top_k=[0, 20, 0, 500][b],
                                             top_p=[1.0, 0.95, 0.95, 0.95][b]), seed=b)
        for i in range(8):
            x = torch.randn(B, V, generator=g) * torch.rand(B, 1, generator=g) * 6
            if i == 3:
                x[1, 4] = float("nan")
            before = [s.truncated.clone() for s in ss]
            a, b = ss[0].step(x).clone(), ss[1].step(x).clone()
            exact = (ss[0].truncated == before[0]) & (ss[1].truncated == before[1])
            assert torch.equal(a[exact], b[exact]), (i, a, b)  # truncated rows may differ
            assert torch.equal(ss[0].last_temperature, ss[1].last_temperature), i
            assert torch.equal(ss[0].last_error, ss[1].last_error), i
            torch.testing.assert_close(ss[0].last_entropy, ss[1].last_entropy, atol=1e-5, rtol=1e-5,
                                       equal_nan=True)
        assert torch.equal(ss[0].counter, ss[1].counter)
        assert bool((ss[0].truncated >= ss[1].truncated).all())  # hist keeps n <= K candidates
        assert int(ss[0].truncated[1]) == 0 and int(ss[0].truncated[3]) == 8  # top-k 20 / 500
        # top_p = 1, top-k off: the nucleus is the whole vocabulary, never inside 128 candidates
        assert int(ss[0].truncated[0]) == 8 and int(ss[1].truncated[0]) == 8
    print("interpreter ok")
""")


@pytest.mark.skipif(not triton_available(), reason="needs the triton package (its CPU interpreter)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels in test_gpu.py")
@pytest.mark.parametrize("select", ["hist", "topk"])
def test_triton_kernels_under_the_interpreter_equal_the_torch_path(select):
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = f"SEL = {select!r}\n" + INTERP
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "interpreter ok" in r.stdout, r.stderr[-3000:]
