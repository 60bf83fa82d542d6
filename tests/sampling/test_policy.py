"""reset_temperatures (the oracle) against hand-worked cases and a naive re-statement."""

from __future__ import annotations

import math
import random

import pytest
import torch

from resetfp4.sampling import ENTROPY_QUANTUM, reset_temperatures, snap_entropy

LO, HI = 0.1, 1.0


def naive_policy(hs, starts, t_low, t_high, tau0, w):
    """The issue's 7 rules, re-stated as literally as possible with plain lists."""
    out, history, step = [], [], []
    for h, s in zip(hs, starts, strict=True):
        if s:
            step = []
        if len(step) >= w:
            h_step = sum(step) / len(step)
        elif history[-w:]:
            h_step = sum(history[-w:]) / len(history[-w:])
        else:
            h_step = h
        h_bar = sum(history) / len(history) if history else h_step
        tau = h_step if h_step > h_bar else tau0
        out.append(t_high if h >= tau else t_low)
        step.append(h)
        history.append(h)
    return out


def f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def test_hand_worked_no_steps():
    # w=2, tau0=0.5. t0: empty window -> H_step=H_bar=1 -> tau0, 1>=0.5 hi. t1: window [1]
    # mean 1 == H_bar -> tau0, .25 lo. t2: step buffer [1,.25] full -> .625 == H_bar -> tau0,
    # .75 hi. t3: step mean 2/3 == H_bar -> tau0, .5 >= .5 hi (ties go to T_high).
    t = reset_temperatures(torch.tensor([1.0, 0.25, 0.75, 0.5]), torch.zeros(4, dtype=torch.bool),
                           t_low=LO, tau0=0.5, window=2)
    assert t.tolist() == [f32(HI), f32(LO), f32(HI), f32(HI)]


def test_hand_worked_with_step_start():
    # w=2, tau0=0.1. t2: step buffer [0,0] full -> 0 -> tau0, 2 hi. t3: start empties the
    # step buffer; window [0,2] mean 1 > H_bar 2/3 -> tau=1, 2 >= 1 hi. t4: step buffer [2]
    # not full; window [2,2] mean 2 > H_bar 1 -> tau=2, 1.5 lo.
    h = torch.tensor([0.0, 0.0, 2.0, 2.0, 1.5])
    s = torch.tensor([False, False, False, True, False])
    t = reset_temperatures(h, s, t_low=LO, tau0=0.1, window=2)
    assert t.tolist() == [f32(LO), f32(LO), f32(HI), f32(HI), f32(LO)]


def test_start_matters():
    # Without the start at t3 the step buffer [0,0,2] (full) has mean 2/3 == H_bar -> tau0.
    h = torch.tensor([0.0, 0.0, 2.0, 0.05])
    with_start = reset_temperatures(h, torch.tensor([False, False, False, True]), t_low=LO, tau0=0.01,
                                    window=2)
    without = reset_temperatures(h, torch.zeros(4, dtype=torch.bool), t_low=LO, tau0=0.01, window=2)
    # with the start: window [0,2] mean 1 > 2/3 -> tau=1 -> 0.05 lo; without: tau0 -> hi
    assert with_start[3] == f32(LO) and without[3] == f32(HI)


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_on_random_streams(seed):
    rng = random.Random(seed)
    n, w = rng.randint(1, 300), rng.choice([1, 2, 3, 8, 32])
    # dyadic entropies with many exact ties exercise the >= / > comparisons
    hs = [rng.randint(0, 64) / 16 for _ in range(n)]
    starts = [rng.random() < 0.08 for _ in range(n)]
    tau0 = rng.choice([0.5505, 1.0, 2.0])
    got = reset_temperatures(torch.tensor(hs), torch.tensor(starts), t_low=0.3, t_high=0.9, tau0=tau0,
                             window=w)
    want = naive_policy(hs, starts, 0.3, 0.9, tau0, w)
    assert got.tolist() == [f32(x) for x in want]


def test_matches_naive_on_float_streams_after_snapping():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(500, generator=g, dtype=torch.float64) * 4
    starts = torch.rand(500, generator=g) < 0.05
    hs = snap_entropy(h).tolist()
    want = naive_policy(hs, starts.tolist(), LO, HI, 1.3, 16)
    assert reset_temperatures(h, starts, t_low=LO, tau0=1.3, window=16).tolist() == [f32(x) for x in want]


def test_snap_grid():
    h = torch.tensor([0.0, 1.0, 1 / 3, 11.93], dtype=torch.float32)
    s = snap_entropy(h)
    assert s.dtype == torch.float64
    assert torch.all(torch.abs(s - h.double()) <= ENTROPY_QUANTUM / 2)
    assert torch.equal(s / ENTROPY_QUANTUM, torch.round(s / ENTROPY_QUANTUM))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(window=0), "window"),
        (dict(t_low=0.0), "t_low"),
        (dict(t_high=-1.0), "t_high"),
        (dict(tau0=math.nan), "tau0"),
        (dict(t_low=math.inf), "t_low"),
    ],
)
def test_bad_parameters(kwargs, match):
    args = dict(t_low=LO, tau0=0.5, window=4) | kwargs
    with pytest.raises(ValueError, match=match):
        reset_temperatures(torch.ones(3), torch.zeros(3, dtype=torch.bool), **args)


def test_bad_streams():
    with pytest.raises(ValueError, match="NaN"):
        reset_temperatures(torch.tensor([1.0, math.nan]), torch.zeros(2, dtype=torch.bool), t_low=LO, tau0=1)
    with pytest.raises(ValueError, match="same length"):
        reset_temperatures(torch.ones(3), torch.zeros(2, dtype=torch.bool), t_low=LO, tau0=1)
