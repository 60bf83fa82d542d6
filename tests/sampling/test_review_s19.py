"""Session-19 review findings in the sampler (CPU paths)."""

from __future__ import annotations

import math

import pytest
import torch

from resetfp4.sampling import BatchSampler, SamplerConfig
from resetfp4.sampling.pipeline import filter_logits, topk_by_id


def _draws(s: BatchSampler, x: torch.Tensor, n: int) -> list[list[int]]:
    return [s.step(x).tolist() for _ in range(n)]


def test_a_fixed_row_with_a_big_window_does_not_break_its_neighbour():
    """A fixed request's window used to index the policy ring buffer: window 200 > max_window
    crashed the whole batch at step 129 (torch) or wrote into the next row (Triton)."""
    V = 64
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, V, generator=g)
    reset = SamplerConfig(mode="reset", t_low=0.3, tau0=0.5, window=32, top_p=1.0)
    fixed_big = SamplerConfig(mode="fixed", temperature=0.7, window=200, top_p=1.0)
    fixed_ok = SamplerConfig(mode="fixed", temperature=0.7, window=32, top_p=1.0)
    a, b = BatchSampler(2, V, "cpu", impl="torch"), BatchSampler(2, V, "cpu", impl="torch")
    a.configure(0, fixed_big, seed=1)
    a.configure(1, reset, seed=2)
    b.configure(0, fixed_ok, seed=1)
    b.configure(1, reset, seed=2)
    assert _draws(a, x, 200) == _draws(b, x, 200)


@pytest.mark.parametrize("window", [0, 2.5, float("nan"), True])
def test_window_must_be_a_positive_integer_for_every_mode(window):
    for mode in ("fixed", "greedy", "reset"):
        with pytest.raises((ValueError, TypeError)):
            SamplerConfig(mode=mode, window=window)


def test_top_p_one_keeps_the_whole_tail():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 151_936, generator=g) * 4
    out = filter_logits(x, torch.zeros(2, dtype=torch.long), torch.ones(2), torch.zeros(2))
    assert int(torch.isinf(out).sum()) == 0  # nothing dropped (13,000+ tokens were)


def test_tied_logits_keep_the_lowest_ids_on_every_path():
    """Tokens tied at the top-p cut: the sort path and the candidate (topk) path keep the same
    ones, the lowest ids, as the histogram kernel does."""
    V = 5000
    x = torch.full((1, V), -20.0)
    x[0, 100] = 3.0
    tied = [5, 17, 900, 2500, 3000, 4000]
    x[0, tied] = 1.0
    keep = ~torch.isinf(filter_logits(x, torch.zeros(1, dtype=torch.long), torch.tensor([0.7]),
                                      torch.zeros(1)))[0]
    kept = sorted(int(i) for i in keep.nonzero())
    assert kept[0] == 5 and 100 in kept and set(kept) - {100} == set(tied[: len(kept) - 1])
    vals, idx = topk_by_id(x, 16)
    assert idx[0, :7].tolist() == [100, *tied]
    cfg = SamplerConfig(mode="fixed", temperature=1.0, top_p=0.7)
    drawn = {}
    for impl in ("sort", "torch"):
        s = BatchSampler(1, V, "cpu", impl=impl)
        ids = set()
        for seed in range(40):
            s.configure(0, cfg, seed=seed)
            ids.add(int(s.step(x)[0]))
        drawn[impl] = ids
    assert drawn["sort"] == drawn["torch"] and drawn["sort"] <= {100, *tied[:3]}
    assert not math.isnan(float(vals[0, 0]))
