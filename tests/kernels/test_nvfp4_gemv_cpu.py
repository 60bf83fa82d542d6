"""CPU tests: repack layout round trip, grid choice, validation errors, reference fallback."""

from __future__ import annotations

import pytest
import torch

from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.kernels.reference import nvfp4_linear_ref
from resetfp4.nvfp4 import quantize
from resetfp4.ops import nvfp4_linear, prepare_weight


@pytest.mark.parametrize("n,k", [(8, 16), (24, 48), (64, 32), (130, 96), (17, 208)])
def test_repack_roundtrip(n, k):
    w = quantize(torch.randn(n, k))
    packed = kg.repack(w)
    assert packed.shape == (-(-n // 16) * -(-k // 64), 576)
    back = kg.unrepack(packed, n, k, w.global_scale)
    assert torch.equal(back.packed, w.packed)
    assert torch.equal(back.block_scale.view(torch.uint8), w.block_scale.view(torch.uint8))


def _bf16_pattern_code(pattern: int) -> int:
    """Code of a decoded bf16 half: magnitude at bits 6..8, sign at bit 15."""
    return ((pattern >> 6) & 7) | ((pattern >> 12) & 8)


def _decode_word(q: int) -> list[int]:
    """Python mirror of decode_word in csrc/nvfp4_common.cuh (bf16 patterns of a0..a3)."""
    m, mask = 0xFFFFFFFF, 0x81C081C0
    rot4 = ((q >> 4) | (q << 28)) & m
    return [(q << 6) & mask, q & mask, rot4 & mask,
            ((q << 2) & 0x80C080C0) | ((q >> 6) & 0x01000100)]


def test_repack_matches_kernel_decode():
    """Every register the kernel decodes holds the codes of the (K-permuted) mma A fragment,
    and each lane's two scale bytes are those of its rows and block."""
    n, k = 32, 192
    w = quantize(torch.randn(n, k))
    packed = kg.repack(w)
    c = w.codes()
    tiles, kc = kg.grid_dims(n, k)
    for tile in range(tiles):
        for chunk in range(kc):
            unit = packed[tile * kc + chunk]
            for lane in (0, 5, 17, 31):
                g, t = divmod(lane, 4)
                raw = bytes(unit[16 * lane:16 * lane + 16].tolist())
                for s in range(4):
                    h = _decode_word(int.from_bytes(raw[4 * s:4 * s + 4], "little"))
                    for r in range(4):
                        row = 16 * tile + g + 8 * (r & 1)
                        col = 64 * chunk + 16 * t + 4 * s + 2 * (r >> 1)
                        assert _bf16_pattern_code(h[r] & 0xFFFF) == int(c[row, col])
                        assert _bf16_pattern_code(h[r] >> 16) == int(c[row, col + 1])
                sb = unit[512 + 2 * lane:512 + 2 * lane + 2]
                want = w.block_scale.view(torch.uint8)[[16 * tile + g, 16 * tile + g + 8],
                                                       4 * chunk + t]
                assert torch.equal(sb, want)


def test_plan_balances_the_machine():
    """On the paper shapes the plan keeps the busiest SM within 25% of a perfect split,
    without clusters (there are more row tiles than SMs); clusters split K only where there
    are fewer tiles than SMs, and never before sm_90."""
    for (n, k) in [(4096, 4096), (6144, 4096), (24576, 4096), (4096, 12288), (7168, 5120),
                   (5120, 5120), (17408, 5120), (5120, 17408), (10240, 5120), (5120, 8192),
                   (25600, 5120), (5120, 25600)]:
        tiles, kc = kg.grid_dims(n, k)
        for m_class in (8, 16):
            s, r = kg.plan(n, k, 132, 8, m_class)
            assert s == 1 and 1 <= r <= tiles
            ctas = -(-tiles // r)
            busiest = -(-ctas // 132) * r * kc
            assert busiest <= 1.25 * tiles * kc / 132, (n, k, m_class, s, r)
    assert kg.plan(8, 16, 132, 8, 8) == (1, 1)
    s, r = kg.plan(64, 12288, 132, 8, 8)  # 4 tiles, 192 chunks: split K in clusters
    assert s == 8
    assert kg.plan(64, 12288, 132, 1, 8)[0] == 1  # no clusters before sm_90


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
