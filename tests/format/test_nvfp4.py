"""NVFP4 quantizer: every E2M1 code, every tie, E4M3 edges, bit-exact vs ml_dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from resetfp4.format.spec import E2M1_VALUES, GLOBAL_SCALE_DIVISOR
from resetfp4.nvfp4 import (
    NVFP4Tensor,
    e2m1_decode,
    e2m1_encode,
    fp8_e4m3_rne,
    pack_codes,
    quantize,
    unpack_codes,
)
from resetfp4.testing.oracle import oracle_quantize
from resetfp4.testing.tolerances import SQNR_NVFP4_GAUSSIAN_DB, assert_bitexact, assert_sqnr


def enc(v: float) -> int:
    return int(e2m1_encode(torch.tensor([v], dtype=torch.float32))[0])


# --- E2M1 codes -------------------------------------------------------------------------

@pytest.mark.parametrize("code", range(16))
def test_every_e2m1_code_round_trips(code):
    value = E2M1_VALUES[code]
    if code == 8:  # -0.0: sign bit is x < 0 (ModelOpt), so -0.0 encodes as +0 (code 0)
        assert enc(value) == 0
    else:
        assert enc(value) == code
    assert float(e2m1_decode(torch.tensor([code], dtype=torch.uint8))[0]) == value


def test_e2m1_codes_match_ml_dtypes_bit_patterns():
    bits = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    assert bits.tolist() == list(E2M1_VALUES)


def test_e2m1_negative_zero_encodes_as_positive_zero():
    assert enc(-0.0) == 0
    assert enc(-0.1) == 8  # a small negative rounds to -0 and keeps its sign bit


# One named test per round-half-to-even case: (tie value, expected value).
def test_tie_0_25_rounds_down_to_0():
    assert enc(0.25) == 0 and enc(-0.25) == 8


def test_tie_0_75_rounds_up_to_1_0():
    assert enc(0.75) == 2 and enc(-0.75) == 10


def test_tie_1_25_rounds_down_to_1_0():
    assert enc(1.25) == 2 and enc(-1.25) == 10


def test_tie_1_75_rounds_up_to_2_0():
    assert enc(1.75) == 4 and enc(-1.75) == 12


def test_tie_2_5_rounds_down_to_2_0():
    assert enc(2.5) == 4 and enc(-2.5) == 12


def test_tie_3_5_rounds_up_to_4_0():
    assert enc(3.5) == 6 and enc(-3.5) == 14


def test_tie_5_0_rounds_down_to_4_0():
    assert enc(5.0) == 6 and enc(-5.0) == 14


def test_just_off_ties_round_to_nearest():
    eps = 1e-6
    assert enc(0.25 + eps) == 1 and enc(0.75 - eps) == 1
    assert enc(5.0 + eps) == 7 and enc(3.5 - eps) == 5


def test_e2m1_saturates_beyond_6():
    assert enc(6.0) == 7 and enc(7.0) == 7 and enc(1e30) == 7 and enc(float("inf")) == 7
    assert enc(-1e30) == 15


def test_pack_low_nibble_is_even_element():
    codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    packed = pack_codes(codes)
    assert packed.tolist() == [[0x21, 0x0F]]
    assert_bitexact(unpack_codes(packed), codes)


# --- E4M3 block scales ------------------------------------------------------------------

@pytest.mark.parametrize(
    "value,expected",
    [
        (448.0, 448.0),          # max finite
        (460.0, 448.0),          # would round to 448 anyway
        (470.0, 448.0),          # past the 464 midpoint: torch alone gives NaN; we saturate
        (1e6, 448.0),            # saturate
        (2.0**-9, 2.0**-9),      # smallest subnormal
        (2.0**-10, 0.0),         # half the smallest subnormal: tie to even (0)
        (1.5 * 2.0**-9, 2.0**-8),  # tie between 1 and 2 subnormal ulps -> 2 (even)
        (2.0**-6, 2.0**-6),      # smallest normal
        (1.0625, 1.0),           # tie between 1.0 and 1.125 -> 1.0 (even mantissa)
        (1.1875, 1.25),          # tie between 1.125 and 1.25 -> 1.25 (even)
    ],
)
def test_e4m3_edge_cases(value, expected):
    got = fp8_e4m3_rne(torch.tensor([value], dtype=torch.float32)).float().item()
    assert got == expected
    oracle = float(np.float32(min(value, 448.0)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    assert got == oracle


def test_block_scale_underflowing_to_fp8_zero_decodes_to_zero():
    # block 1's amax is 1e-7 of the tensor amax: amax/(6*gs) = 448e-7 < 2^-10, so its
    # E4M3 scale rounds to 0; its codes saturate (ModelOpt's division) and it decodes to 0
    x = torch.zeros(1, 32)
    x[0, 0] = 1.0
    x[0, 16:] = torch.linspace(-1e-7, 1e-7, 16)
    q = quantize(x)
    assert q.block_scale.view(torch.uint8)[0, 1].item() == 0
    assert q.dequantize()[0, 16:].eq(0).all()
    assert q.dequantize()[0, 0].item() == 1.0


def test_global_scale_must_be_one_number():
    with pytest.raises(ValueError, match="one number"):
        quantize(torch.randn(2, 32), global_scale=torch.tensor([0.1, 0.2]))


def test_zero_block_gets_scale_one_and_zero_tensor_global_one():
    q = quantize(torch.zeros(2, 32))
    assert q.global_scale.item() == 1.0
    assert q.block_scale.float().eq(1.0).all()
    assert q.packed.eq(0).all()


def test_max_block_scale_is_448_for_dynamic_global():
    x = torch.randn(4, 64)
    q = quantize(x)
    assert q.block_scale.float().max().item() == 448.0
    assert q.global_scale.item() == np.float32(x.abs().max().item()) / np.float32(GLOBAL_SCALE_DIVISOR)


# --- bit-exact against an independent oracle --------------------------------------------

def _case(kind: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=g)
    if kind == "gauss":
        scale = 10.0 ** float(torch.empty(()).uniform_(-6, 4, generator=g))
        return x * scale
    if kind == "heavy":  # Student-t-like heavy tails
        return x / torch.rand(shape, generator=g).clamp_min(1e-3)
    if kind == "zero_blocks":
        x = x.clone()
        x.view(-1, 16)[:: 3] = 0.0
        return x
    if kind == "outlier":
        x = x.clone()
        x.view(-1)[int(torch.randint(0, x.numel(), (1,), generator=g))] = 1e4
        return x
    if kind == "tiny":
        return x * 1e-30
    raise AssertionError(kind)


SHAPES = [(16,), (1, 32), (3, 48), (7, 128), (2, 5, 64), (64, 4096 // 16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["gauss", "heavy", "zero_blocks", "outlier", "tiny"])
def test_bitexact_vs_ml_dtypes_oracle(dtype, kind, rng):
    for shape in SHAPES:
        x = _case(kind, shape, rng)
        if dtype == torch.float16:
            # "tiny" at 1e-30 would round to all zeros in fp16 (the zero case again): 1e-6
            # puts it among fp16's subnormals (below 6.1e-5) instead
            x = (x * 1e24 if kind == "tiny" else x).clamp(-6e4, 6e4)
        x = x.to(dtype)
        q = quantize(x)
        packed, bs, gs = oracle_quantize(x.float().numpy())
        assert q.global_scale.item() == float(gs), (shape, kind)
        assert_bitexact(q.block_scale.view(torch.uint8), torch.from_numpy(bs.copy()), "block_scale")
        assert_bitexact(q.packed, torch.from_numpy(packed.copy()), "packed codes")


def test_bitexact_with_given_global_scale(rng):
    x = torch.randn(8, 256, generator=rng) * 3
    for gs in (1e-3, 0.01, float(x.abs().max()) / 2688 / 4):  # the last one saturates blocks
        q = quantize(x, global_scale=gs)
        packed, bs, _ = oracle_quantize(x.numpy(), gs)
        assert_bitexact(q.block_scale.view(torch.uint8), torch.from_numpy(bs.copy()))
        assert_bitexact(q.packed, torch.from_numpy(packed.copy()))
        assert q.global_scale.item() == np.float32(gs)


def test_dequantize_sqnr_floor(rng):
    x = torch.randn(64, 1024, generator=rng)
    assert_sqnr(quantize(x).dequantize(), x, SQNR_NVFP4_GAUSSIAN_DB)


def test_dequantize_formula_exact(rng):
    x = torch.randn(4, 64, generator=rng)
    q = quantize(x)
    codes = unpack_codes(q.packed).long()
    vals = torch.tensor(E2M1_VALUES)[codes]
    scale = (q.block_scale.float() * q.global_scale).repeat_interleave(16, dim=-1)
    assert_bitexact(q.dequantize(), vals * scale)
    assert q.dequantize(torch.bfloat16).dtype == torch.bfloat16


def test_tensor_metadata_and_to():
    q = quantize(torch.randn(3, 5, 32))
    assert q.shape == torch.Size((3, 5, 32))
    assert q.packed.shape == (3, 5, 16) and q.block_scale.shape == (3, 5, 2)
    assert q.global_scale.dim() == 0 and q.global_scale.dtype == torch.float32
    moved = q.to("cpu")
    assert_bitexact(moved.packed, q.packed)
    assert q.nbytes == 3 * 5 * 16 + 3 * 5 * 2


# --- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_input_is_rejected(bad):
    x = torch.randn(2, 32)
    x[1, 3] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        quantize(x)


@pytest.mark.parametrize("k", [15, 17, 24, 0])
def test_k_not_multiple_of_16_is_rejected(k):
    with pytest.raises(ValueError, match="multiple of 16"):
        quantize(torch.randn(2, k))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.bool, torch.float64])
def test_non_float_dtypes_are_rejected(dtype):
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        quantize(torch.ones(2, 32).to(dtype))


@pytest.mark.parametrize("gs", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_global_scale_is_rejected(gs):
    with pytest.raises(ValueError, match="global_scale"):
        quantize(torch.randn(2, 32), global_scale=gs)


def test_nvfp4tensor_validates_components():
    q = quantize(torch.randn(2, 32))
    with pytest.raises(TypeError):
        NVFP4Tensor(q.packed.to(torch.int8), q.block_scale, q.global_scale)
    with pytest.raises(ValueError, match="block_scale"):
        NVFP4Tensor(q.packed, q.block_scale[:, :1], q.global_scale)
    with pytest.raises(TypeError, match="global_scale"):
        NVFP4Tensor(q.packed, q.block_scale, q.global_scale.reshape(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_quantize_is_bitexact_with_cpu(dtype, rng):
    for kind in ("gauss", "heavy", "zero_blocks", "outlier"):
        x = _case(kind, (33, 256), rng).clamp(-6e4, 6e4).to(dtype)
        for gs in (None, 0.0123):
            a, b = quantize(x, gs), quantize(x.cuda(), gs)
            assert_bitexact(b.global_scale.cpu(), a.global_scale, "global_scale")
            assert_bitexact(b.block_scale.cpu().view(torch.uint8), a.block_scale.view(torch.uint8))
            assert_bitexact(b.packed.cpu(), a.packed, "packed")
