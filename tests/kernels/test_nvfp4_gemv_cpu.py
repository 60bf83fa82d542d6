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


def test_chunks_per_rank_whole_bodies():
    """Cluster ranks get whole aligned-loop bodies when K allows it (mirrors launch_gemv)."""
    assert kg.chunks_per_rank(4096, 1, 8) == 64
    assert kg.chunks_per_rank(4096, 3, 8) == 24  # ceil(64 / 3) = 22 -> 4-unit bodies
    assert kg.chunks_per_rank(4096, 3, 16) == 22  # 2-unit bodies for M <= 16
    assert kg.chunks_per_rank(4160, 3, 8) == 22  # K % 256 != 0: the general loop, no rounding
    assert kg.chunks_per_rank(4224, 3, 16) == 22  # K % 128 == 0 with KC = 66: 2-unit bodies


def test_plan_balances_the_machine():
    """On the paper shapes the plan splits without clusters (there are more row tiles than
    SMs) and, for M <= 8, keeps the busiest SM within 25% of a perfect split in units; for
    M <= 16 units on the busiest SM are a poor proxy (each CTA streams at about a fixed rate,
    so the fastest timed plans are 1 x 2 for the Qwen3-8B qkv and 14B o, 37% and 65% above a
    perfect split: session 19; their picks are pinned in test_gemv_work_split_cpu.py).
    Clusters split K only where there are fewer tiles than SMs and one CTA per tile would
    stream far more than the cluster overhead, and never before sm_90."""
    for (n, k) in [(4096, 4096), (6144, 4096), (24576, 4096), (4096, 12288), (7168, 5120),
                   (5120, 5120), (17408, 5120), (5120, 17408), (10240, 5120), (5120, 8192),
                   (25600, 5120), (5120, 25600)]:
        tiles, kc = kg.grid_dims(n, k)
        for m_class in (8, 16):
            s, r = kg.plan(n, k, 132, 8, m_class)
            assert s == 1 and 1 <= r <= tiles
            ctas = -(-tiles // r)
            busiest = -(-ctas // 132) * r * kc
            if m_class == 8:
                assert busiest <= 1.25 * tiles * kc / 132, (n, k, m_class, s, r)
    assert kg.plan(8, 16, 132, 8, 8) == (1, 1)
    assert kg.plan(896, 4864, 132, 8, 8) == (1, 1)  # 56 tiles: clusters measured slower (v8)
    s, r = kg.plan(16, 65536, 132, 8, 8)  # 1 tile of 1024 chunks: split K in clusters
    assert s == 8
    assert kg.plan(16, 65536, 132, 1, 8)[0] == 1  # no clusters before sm_90


def test_wide_build_follows_the_plan():
    """The 2-CTAs-per-SM build (mirrors launch_gemv) runs M <= 8 aligned-loop grids of at
    most 2 CTAs per SM: on 132 SMs the Qwen3-8B o and down projections (256 one-tile CTAs),
    not qkv (384) nor the lm_head (396); never for M > 8, K % 256 != 0, or mode 0."""
    def wide(n, k, m=1, sms=132, mode=1):
        s, r = kg.plan(n, k, sms, 8, 8 if m <= 8 else 16)
        return kg.wide_build(m, n, k, s, r, sms, mode)
    assert wide(4096, 4096) and wide(4096, 12288) and wide(4096, 12288, m=8)
    assert not wide(6144, 4096) and not wide(151936, 4096)
    assert not wide(4096, 12288, m=9)
    assert not wide(4096, 4096, mode=0)
    assert not wide(4096, 4160)  # K % 256 != 0: the general loop
    assert kg.wide_build(1, 4096, 4096, 1, 1, 128) is True  # 256 CTAs = 2 x 128 SMs
    assert kg.wide_build(1, 4096 + 16, 4096, 1, 1, 128) is False  # 257 CTAs
    assert kg.wide_build(1, 4096, 4096, 2, 1, 256) is True  # clusters: S x ceil(tiles / R)
    assert kg.wide_build(1, 4096, 4096, 2, 1, 255) is False


def test_two_body_prefetch_follows_the_plan():
    """The two-body L2 prefetch (mirrors launch_gemv) runs M <= 8 aligned-loop grids of
    one-tile bodies (no pair bodies, not the wide build) whose warps stream >= 7 bodies: on
    132 SMs the Qwen3-14B / 32B gate/up and down projections, no Qwen3-8B layer (nor its
    pair-mode lm_head); never for M > 8, K % 256 != 0, or mode 0."""
    def pf2(n, k, m=1, sms=132, mode=1):
        s, r = kg.plan(n, k, sms, 8, 8 if m <= 8 else 16)
        return kg.two_body_prefetch(m, n, k, s, r, sms, mode)
    for n, k in ((17408, 5120), (5120, 17408), (25600, 5120), (5120, 25600)):
        assert pf2(n, k) and pf2(n, k, m=8), (n, k)
        assert not pf2(n, k, m=9) and not pf2(n, k, mode=0), (n, k)
    for n, k in ((6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288), (151936, 4096),
                 (7168, 5120), (5120, 5120), (10240, 5120), (5120, 8192)):
        assert not pf2(n, k), (n, k)
    # 8B.down with 6 bodies a warp (below 7), and one-tile CTAs over 16384 K (8 bodies) on a
    # grid too large for the wide build and with an odd tile count (no pair bodies)
    assert kg.two_body_prefetch(1, 4096, 12288, 1, 1, 100) is False  # 256 CTAs > 200: not wide
    assert kg.two_body_prefetch(1, 16 * 265, 16384, 1, 1, 132) is True
    assert kg.two_body_prefetch(1, 16 * 265, 16384 + 64, 1, 1, 132) is False  # general loop
    assert kg.two_body_prefetch(1, 16 * 264, 16384, 1, 1, 132) is False  # 264 CTAs: wide
    assert kg.two_body_prefetch(1, 16 * 264, 16384, 1, 1, 132, wide_mode=0) is True
    assert kg.two_body_prefetch(1, 24576, 4096, 1, 4, 132) is False  # pair bodies
    assert kg.two_body_prefetch(1, 24576, 4096, 1, 4, 132, pair_mode=0) is True  # 8 bodies


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


def test_repack_in_row_chunks_equals_one_piece(monkeypatch):
    """Large weights are repacked REPACK_ROWS rows at a time (bounded temporaries)."""
    w = quantize(torch.randn(100, 208))
    whole = kg.repack(w)
    monkeypatch.setattr(kg, "REPACK_ROWS", 32)
    assert torch.equal(kg.repack(w), whole)


def _gemv_args(n=40, k=64, m=2):
    w = quantize(torch.randn(n, k))
    pw = prepare_weight(w)
    x = torch.randn(m, k).to(torch.bfloat16)
    return dict(x=x, packed=pw.packed, g_w=pw.global_scale, g_x=None, bias=None, n=n,
                cluster=1, tiles_per_cluster=1)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(packed=a["packed"][1:]), r"packed has shape \(2, 576\); expected \(3, 576\)"),
    (lambda a: a.update(packed=a["packed"].to(torch.int16)), "packed has dtype torch.int16"),
    (lambda a: a.update(g_w=a["g_w"].double()), "g_w has dtype torch.float64"),
    (lambda a: a.update(g_x=torch.ones(2)), "g_x must hold one fp32 value"),
    (lambda a: a.update(x=torch.randn(2, 64)), "x has dtype torch.float32"),
    (lambda a: a.update(x=torch.randn(2, 80).to(torch.bfloat16)),
     r"packed has shape \(3, 576\); expected \(6, 576\)"),
    (lambda a: a.update(x=torch.randn(2, 72).to(torch.bfloat16)), "K a positive multiple of 16"),
    (lambda a: a.update(bias=torch.zeros(41, dtype=torch.bfloat16)), r"bias has shape \(41,\)"),
    (lambda a: a.update(cluster=9), "cluster size must be in 1..8"),
    (lambda a: a.update(tiles_per_cluster=4), r"tiles_per_cluster=4; must be in 1..3"),
    (lambda a: a.update(x=torch.randn(17, 64).to(torch.bfloat16)), "1 <= M <= 16"),
    # uninitialized: the pages of this 477 MB x are never touched
    (lambda a: a.update(x=torch.empty(1, kg.MAX_K + 64, dtype=torch.bfloat16)),
     "the NVFP4 GEMV takes K <= 238609280"),
])
def test_gemv_entry_rejects_bad_arguments(change, match):
    """The raw GEMV entry checks every size, dtype and range the kernel relies on before it
    launches (a wrong one would read or write out of bounds on the GPU)."""
    a = _gemv_args()
    change(a)
    with pytest.raises((TypeError, ValueError), match=match):
        kg.check_gemv_args(**a)


def test_gemv_entry_accepts_good_arguments():
    kg.check_gemv_args(**_gemv_args())


def test_quantizer_and_dequant_ops_reject_bad_buffers():
    """The activation-quantizer and dequantize ops check their buffers before launching."""
    ws = kg.ActWorkspace(4, 64, torch.bfloat16, torch.device("cpu"))
    x = torch.randn(2, 64).to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"xq has shape \(4, 64\); expected \(2, 64\)"):
        kg.nvfp4_quant_act(x, None, ws.sync, ws.gs, ws.xq, ws.codes[:2], ws.scales[:2])
    with pytest.raises(ValueError, match="K % 16 == 0"):
        kg.nvfp4_quant_act(torch.randn(2, 40).to(torch.bfloat16), None, ws.sync, ws.gs,
                           ws.xq[:2], ws.codes[:2], ws.scales[:2])
    with pytest.raises(TypeError, match="gs_static has dtype torch.float64"):
        kg.nvfp4_quant_act(x, torch.ones(1, dtype=torch.float64), ws.sync, ws.gs, ws.xq[:2],
                           ws.codes[:2], ws.scales[:2])
    pw = prepare_weight(quantize(torch.randn(40, 64)))
    with pytest.raises(ValueError, match=r"packed has shape \(3, 576\); expected \(6, 576\)"):
        kg.nvfp4_dequant(pw.packed, pw.global_scale, torch.empty(40, 128, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="w has dtype torch.float32"):
        kg.nvfp4_dequant(pw.packed, pw.global_scale, torch.empty(40, 64))


def test_ops_edge_cases_on_cpu():
    """Review findings (session 20): M = 0 gives an empty result as F.linear does; an out over x
    is refused (the CUDA GEMV would overwrite x while reading it); an empty weight is a clear
    error; input_scale is ignored with act="bf16" and checked with "fp4" on every device; the
    raw ops say they need CUDA tensors."""
    w = quantize(torch.randn(32, 64))
    pw = prepare_weight(w)
    x = torch.randn(3, 64).to(torch.bfloat16)
    for act in ("bf16", "fp4"):
        assert nvfp4_linear(x[:0], pw, act=act).shape == (0, 32)
        assert nvfp4_linear_ref(x[:0], w, act=act).shape == (0, 32)
    out = torch.empty(0, 32, dtype=torch.bfloat16)
    assert nvfp4_linear(x[:0], pw, out=out) is out
    buf = torch.randn(64 + 32).to(torch.bfloat16)
    with pytest.raises(ValueError, match="out shares memory with x"):
        nvfp4_linear(buf[:64].view(1, 64), pw, out=buf[32:64].view(1, 32))
    bias = torch.zeros(32 + 32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="out shares memory with bias"):
        nvfp4_linear(x[:1], pw, bias=bias[:32], out=bias[16:48].view(1, 32))
    with pytest.raises(ValueError, match=r"weight has shape \[N=0, K=64\]"):
        prepare_weight(quantize(torch.randn(0, 64)))
    assert torch.equal(nvfp4_linear(x, pw, act="bf16", input_scale=-1.0), nvfp4_linear(x, pw))
    with pytest.raises(ValueError, match="input_scale must be a finite positive number"):
        nvfp4_linear(x, pw, act="fp4", input_scale=-1.0)
    with pytest.raises(ValueError, match="raw resetfp4 kernel ops run on CUDA tensors"):
        kg.nvfp4_dequant(pw.packed, pw.global_scale, torch.empty(32, 64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="g_w must hold one fp32 value"):
        kg.nvfp4_dequant(pw.packed, torch.ones(0), torch.empty(32, 64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="raw resetfp4 kernel ops run on CUDA tensors"):
        kg.nvfp4_gemv(x, pw.packed, pw.global_scale, None, None, 1, 1, 32)
