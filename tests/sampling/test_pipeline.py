"""Pure pipeline functions: entropy, filters, the exponential race, validation."""

from __future__ import annotations

import math

import pytest
import torch

from resetfp4.sampling import pipeline as P

# probabilities 0.5, 0.3, 0.15, 0.05 -> logits = log p
PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = PROBS.log()


def kept(x: torch.Tensor) -> list[int]:
    return torch.isfinite(x[0]).nonzero().flatten().tolist()


def test_entropy_matches_formula_and_ignores_minus_inf():
    h = P.entropy(LOGITS)
    assert math.isclose(float(h), -sum(p * math.log(p) for p in PROBS[0].tolist()), rel_tol=1e-6)
    x = torch.cat([LOGITS, torch.full((1, 3), float("-inf"))], dim=1)
    assert math.isclose(float(P.entropy(x)), float(h), rel_tol=1e-6)
    assert float(P.entropy(torch.zeros(1, 1000))) == pytest.approx(math.log(1000), rel=1e-6)


@pytest.mark.parametrize(
    "fn, arg, want",
    [
        (P.top_k, torch.tensor([1]), [0]),
        (P.top_k, torch.tensor([3]), [0, 1, 2]),
        (P.top_k, torch.tensor([0]), [0, 1, 2, 3]),
        (P.top_p, torch.tensor([0.75]), [0, 1]),  # mass before token 2 is 0.8
        (P.top_p, torch.tensor([0.85]), [0, 1, 2]),
        (P.top_p, torch.tensor([0.01]), [0]),
        (P.top_p, torch.tensor([1.0]), [0, 1, 2, 3]),
        (P.min_p, torch.tensor([0.5]), [0, 1]),  # p >= 0.25
        (P.min_p, torch.tensor([0.2]), [0, 1, 2]),  # p >= 0.1
    ],
)
def test_filters(fn, arg, want):
    assert kept(fn(LOGITS, arg)) == want


def test_top_p_is_renormalised_over_top_k():
    # top-2 mass 0.8; nucleus 0.6 of it = 0.48 < 0.5 -> only token 0 (token 1 alone needs 0.5)
    x = P.filter_logits(LOGITS, torch.tensor([2]), torch.tensor([0.6]), torch.tensor([0.0]))
    assert kept(x) == [0]
    assert kept(P.top_p(LOGITS, torch.tensor([0.6]))) == [0, 1]


def test_filters_do_not_depend_on_column_order():
    perm = torch.tensor([2, 0, 3, 1])
    x = P.filter_logits(LOGITS[:, perm], torch.tensor([0]), torch.tensor([0.75]), torch.tensor([0.0]))
    assert sorted(perm[torch.isfinite(x[0])].tolist()) == [0, 1]


def test_exponential_race_matches_softmax():
    n = 40000
    keys = P.row_keys(torch.full((n,), 1234), torch.arange(n))
    ids = P.sample(LOGITS.expand(n, 4), keys)
    freq = torch.bincount(ids, minlength=4).double() / n
    assert torch.allclose(freq, PROBS[0].double(), atol=0.01), freq
    assert torch.equal(ids, P.sample(LOGITS.expand(n, 4), keys))  # deterministic


def test_noise_is_uniform_and_keyed():
    keys = P.row_keys(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))
    assert len(set(keys.tolist())) == 3
    u = P.uniform_noise(keys, torch.arange(100000).expand(3, -1))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.002
    # 64-bit seeds use their high word too
    zero = torch.tensor([0])
    assert P.row_keys(torch.tensor([1 << 40]), zero) != P.row_keys(zero, zero)


def test_greedy_and_temperature():
    x = torch.tensor([[1.0, 3.0, 3.0, -1.0]])
    assert P.greedy(x).tolist() == [1]  # first index among ties
    assert torch.equal(P.apply_temperature(x, torch.tensor([0.5])), x * 2)


def test_validate_logits():
    P.validate_logits(torch.randn(2, 5))
    x = torch.randn(3, 5)
    x[1, 2] = float("nan")
    x[2] = float("-inf")
    with pytest.raises(ValueError, match=r"rows \[1, 2\]"):
        P.validate_logits(x)
    assert P.row_is_valid(x).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="batch, vocab"):
        P.validate_logits(torch.randn(5))
