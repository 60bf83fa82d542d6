"""CPU tests: repack layout round trip, grid choice, validation errors, reference fallback."""

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
    assert codes.shape == (-(-n // 64) * (k // 16), 512)
    assert scales.shape == (-(-n // 64) * (k // 16), 64)
    back = kg.unrepack(codes, scales, n, k, w.global_scale)
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
    """Every register the kernel decodes holds the codes of the mma A fragment."""
    n, k = 64, 32
    w = quantize(torch.randn(n, k))
    codes, scales = kg.repack(w)
    c = w.codes()
    ks = k // 16
    for st in range(ks):
        for lane in (0, 5, 17, 31):
            g, t = divmod(lane, 4)
            raw = bytes(codes[st, 16 * lane:16 * lane + 16].tolist())
            for j in range(4):
                h = _decode_word(int.from_bytes(raw[4 * j:4 * j + 4], "little"))
                for r in range(4):
                    row, col = 16 * j + g + 8 * (r & 1), 16 * st + 2 * t + 8 * (r >> 1)
                    assert _bf16_pattern_code(h[r] & 0xFFFF) == int(c[row, col])
                    assert _bf16_pattern_code(h[r] >> 16) == int(c[row, col + 1])
                sb = scales[st, 8 * g + 2 * j:8 * g + 2 * j + 2]
                want = w.block_scale.view(torch.uint8)[[16 * j + g, 16 * j + g + 8], st]
                assert torch.equal(sb, want)


def test_choose_ctas_fills_machine():
    assert kg.choose_ctas(4096, 4096, 132) == 264
    assert kg.choose_ctas(25600, 5120, 132) == 264
    assert kg.choose_ctas(8, 16, 132) == 1
    # every (CTA, row group) segment has its own partial slot
    # 16384 units, 63 per CTA -> 261 CTAs; plus one slot per row group
    assert kg.partial_slots(4096, 4096, 264) == 261 + 64


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


def _round_value_mirror(a: torch.Tensor) -> torch.Tensor:
    """fp32 mirror of nvfp4_round_value's magnitude rounding (csrc/nvfp4_common.cuh)."""
    magic = torch.where(a < 2, 2.0**22, torch.where(a < 4, 2.0**23, 2.0**24)).float()
    return torch.clamp_max((a + magic) - magic, 6.0)


def test_fused_quantizer_rounding_matches_e2m1_encode():
    """The fused W4A4 rounding ((a + 2^(23+e)) - 2^(23+e), capped at 6) equals the reference
    E2M1 round-to-nearest-even on a dense fp32 grid, every tie and values above 6."""
    from resetfp4.nvfp4 import e2m1_decode, e2m1_encode

    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0])
    a = torch.cat([torch.linspace(0, 9, 200_001), ties, torch.nextafter(ties, ties + 1),
                   torch.nextafter(ties, ties - 1)]).float()
    want = e2m1_decode(e2m1_encode(a))
    assert torch.equal(_round_value_mirror(a), want)
