"""CPU tests: repack layout round trip, split choice, validation errors, reference fallback."""

from __future__ import annotations

import pytest
import torch

from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.kernels.reference import nvfp4_linear_ref
from resetfp4.nvfp4 import quantize
from resetfp4.ops import nvfp4_linear, prepare_weight


@pytest.mark.parametrize("n,k", [(8, 16), (24, 48), (64, 32), (130, 96)])
def test_repack_roundtrip(n, k):
    w = quantize(torch.randn(n, k))
    codes, scales = kg.repack(w)
    assert codes.shape == (-(-n // 64), k // 16, 32, 16)
    assert scales.shape == (-(-n // 64), k // 16, 8, 8)
    back = kg.unrepack(codes, scales, n, w.global_scale)
    assert torch.equal(back.packed, w.packed)
    assert torch.equal(back.block_scale.view(torch.uint8), w.block_scale.view(torch.uint8))


def test_repack_fragment_position():
    """Lane l's pair 0 of word 0 holds row 8*0 + l//4, k = 2*(l%4) + {0, 1} (nibbles 0, 4)."""
    n, k = 64, 16
    w = quantize(torch.randn(n, k))
    codes, _ = kg.repack(w)
    c = w.codes()
    for lane in (0, 5, 31):
        g, t = divmod(lane, 4)
        word = int.from_bytes(bytes(codes[0, 0, lane, :4].tolist()), "little")
        assert word & 15 == int(c[g, 2 * t]) and (word >> 16) & 15 == int(c[g, 2 * t + 1])
        # pair 1 (same tile, k + 8) in nibbles 1 and 5
        assert (word >> 4) & 15 == int(c[g, 2 * t + 8]) and (word >> 20) & 15 == int(c[g, 2 * t + 9])


def test_choose_splits_fills_machine():
    assert kg.choose_splits(4096, 4096, 132) == 5
    assert kg.choose_splits(25600, 5120, 132) == 1
    assert kg.choose_splits(8, 16, 132) == 1


def test_fallback_matches_reference():
    w = quantize(torch.randn(24, 48))
    x = torch.randn(3, 48).to(torch.bfloat16)
    for act in ("bf16", "fp4"):
        y = nvfp4_linear(x, prepare_weight(w), act=act)
        torch.testing.assert_close(y, nvfp4_linear_ref(x, w, act=act), rtol=0, atol=0)


def test_fallback_refused():
    pw = prepare_weight(quantize(torch.randn(8, 16)))
    with pytest.raises(RuntimeError, match="allow_fallback=False"):
        pw(torch.randn(1, 16).to(torch.bfloat16), allow_fallback=False)


@pytest.mark.parametrize("bad,match", [
    (lambda: torch.randn(2, 32).to(torch.bfloat16), "K=16"),
    (lambda: torch.randn(2, 16), "float32"),
    (lambda: torch.randn(16, 2).to(torch.bfloat16).T, "contiguous"),
])
def test_validation_errors(bad, match):
    pw = prepare_weight(quantize(torch.randn(8, 16)))
    with pytest.raises((TypeError, ValueError), match=match):
        pw(bad())


def test_bad_act_and_out():
    pw = prepare_weight(quantize(torch.randn(8, 16)))
    x = torch.randn(2, 16).to(torch.bfloat16)
    with pytest.raises(ValueError, match="act must be"):
        pw(x, act="int8")
    with pytest.raises(ValueError, match=r"shape \(2, 8\)"):
        pw(x, out=torch.empty(2, 9, dtype=torch.bfloat16))
