"""GPU tests of the NVFP4 kernels against float64 references (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import e2m1_decode, quantize, unpack_codes
from resetfp4.ops import nvfp4_linear, prepare_weight
from resetfp4.testing.tolerances import assert_bitexact, assert_rel_close, rel_for_dtype

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEV = "cuda"


def _ref(x, w, act, input_scale=None, bias=None):
    xd = quantize(x, global_scale=input_scale).dequantize(torch.float64) if act == "fp4" \
        else x.double()
    y = xd @ w.dequantize(torch.float64).T
    return y + bias.double() if bias is not None else y


@pytest.mark.parametrize("act", ["bf16", "fp4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [16, 48, 4096, 12288])
@pytest.mark.parametrize("n", [8, 24, 4104, 6144])
def test_small_m_matches_reference(n, k, dtype, act):
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    for m in range(1, 17):
        x = torch.randn(m, k, device=DEV).to(dtype)  # fresh inputs for every M
        out = torch.full((m, n), float("nan"), dtype=dtype, device=DEV)  # poisoned
        y = pw(x, act=act, out=out)
        assert y.data_ptr() == out.data_ptr()
        assert_rel_close(y, _ref(x, w, act), rel_for_dtype(dtype), f"M={m} N={n} K={k} {act}")
        if act == "fp4":  # static input_scale (the deployment path)
            gs = (x.float().abs().amax() / 2688).reshape(1)
            out.fill_(float("nan"))
            y = pw(x, act=act, input_scale=gs, out=out)
            assert y.data_ptr() == out.data_ptr()
            assert_rel_close(y, _ref(x, w, act, gs), rel_for_dtype(dtype), f"M={m} static")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_code_and_tiny_scales_decode_exactly(dtype):
    """One-hot x picks single weights: all 16 codes, normal and subnormal e4m3 scales."""
    n = 8
    codes = torch.arange(16, dtype=torch.uint8, device=DEV).repeat(n, 1)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    sc = torch.tensor([2.0**-9, 2.0**-7, 0.015625, 1.0, 3.5, 17.0, 240.0, 448.0], device=DEV)
    from resetfp4.nvfp4 import NVFP4Tensor
    w = NVFP4Tensor(packed, sc.view(n, 1).to(torch.float8_e4m3fn),
                    torch.tensor(0.37, device=DEV))
    x = torch.eye(16, device=DEV).to(dtype)
    y = prepare_weight(w)(x)
    ref = w.dequantize(torch.float32).T.to(dtype)
    # at most one ulp apart (fp32 product order); a flushed subnormal would be 100% off
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    torch.testing.assert_close(y.float(), ref.float(), rtol=ulp, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("static", [False, True])
def test_act_quant_bitexact(dtype, static):
    m, k = 7, 4096
    x = (torch.randn(m, k, device=DEV) * 3).to(dtype)
    x[0, :16] = 0  # a zero block gets scale 1.0
    gs = torch.tensor([0.0123], device=DEV) if static else None
    ws = kg.ActWorkspace(16, k, dtype, torch.device(DEV))
    xq = ws.quantize(x, gs)
    ref = quantize(x, global_scale=gs)
    assert_bitexact(ws.codes[:m], ref.packed, "codes")
    assert_bitexact(ws.scales[:m], ref.block_scale.view(torch.uint8), "scales")
    assert_bitexact(ws.gs.reshape(()), ref.global_scale, "global scale")
    vals = e2m1_decode(unpack_codes(ref.packed)).unflatten(-1, (-1, 16))
    want = (vals * ref.block_scale.float().unsqueeze(-1)).flatten(-2).to(dtype)
    assert_bitexact(xq, want, "e2m1 * block scale")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequant_bitexact(dtype):
    w = quantize(torch.randn(200, 96, device=DEV))
    pw = prepare_weight(w)
    out = torch.full((200, 96), float("nan"), dtype=dtype, device=DEV)
    kg.nvfp4_dequant(pw.packed, pw.global_scale, out)
    assert_bitexact(out, w.dequantize(dtype), "dequantized weight")


@pytest.mark.parametrize("act", ["bf16", "fp4"])
@pytest.mark.parametrize("m", [17, 64])
def test_large_m_and_bias(m, act):
    n, k, dtype = 300, 512, torch.bfloat16
    w = quantize(torch.randn(n, k, device=DEV))
    bias = torch.randn(n, device=DEV).to(dtype)
    x = torch.randn(m, k, device=DEV).to(dtype)
    y = nvfp4_linear(x, prepare_weight(w), act=act, bias=bias)
    assert_rel_close(y, _ref(x, w, act, bias=bias), rel_for_dtype(dtype), "large M")


def test_bias_and_static_scale_small_m():
    n, k, dtype = 4104, 4096, torch.float16
    w = quantize(torch.randn(n, k, device=DEV))
    bias = torch.randn(n, device=DEV).to(dtype)
    x = torch.randn(5, k, device=DEV).to(dtype)
    s = torch.tensor(0.002, device=DEV)
    y = nvfp4_linear(x, prepare_weight(w), act="fp4", input_scale=s, bias=bias)
    assert_rel_close(y, _ref(x, w, "fp4", s, bias), rel_for_dtype(dtype), "bias+static")


@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("act,static", [("bf16", False), ("fp4", False), ("fp4", True)])
def test_cuda_graph_capture_replay(act, static, m):
    n, k, dtype = 6144, 4096, torch.bfloat16
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    x = torch.randn(m, k, device=DEV).to(dtype)
    gs = torch.tensor([0.0015], device=DEV) if static else None
    out = torch.empty(m, n, dtype=dtype, device=DEV)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        pw(x, act=act, input_scale=gs, out=out)  # warm up: build, workspaces
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        pw(x, act=act, input_scale=gs, out=out)
    for _ in range(3):
        x.copy_(torch.randn(m, k, device=DEV).to(dtype))
        out.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert_rel_close(out, _ref(x, w, act, gs), rel_for_dtype(dtype), "graph replay")


def test_graph_capture_needs_a_tensor_input_scale_and_ignores_it_for_bf16():
    # a float input_scale is copied to the GPU on every call: capture used to fail inside
    # torch ("Cannot copy between CPU and CUDA tensors during CUDA graph capture"), for
    # act="bf16" too, where the scale plays no part
    n, k, m, dtype = 256, 512, 2, torch.bfloat16
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    x = torch.randn(m, k, device=DEV).to(dtype)
    out = torch.empty(m, n, dtype=dtype, device=DEV)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        pw(x, act="fp4", input_scale=torch.tensor([0.01], device=DEV), out=out)  # warm up
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        pw(x, act="bf16", input_scale=0.01, out=out)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    assert_rel_close(out, _ref(x, w, "bf16"), rel_for_dtype(dtype), "bf16, float scale ignored")
    g2 = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match="float32 CUDA tensor"):
        with torch.cuda.graph(g2):
            pw(x, act="fp4", input_scale=0.01, out=out)


@pytest.mark.parametrize("m", [1, 16, 40])
def test_out_overlapping_x_is_refused_and_m0_is_empty(m):
    # the GEMV writes finished tiles while other CTAs still read x: an out over x gave wrong
    # results in 20 of 20 runs (N = K = 8192, M = 1)
    n = k = 1024
    pw = prepare_weight(quantize(torch.randn(n, k, device=DEV)))
    buf = torch.randn(m * k + m * n, device=DEV).to(torch.bfloat16)
    x = buf[:m * k].view(m, k)
    with pytest.raises(ValueError, match="out shares memory with x"):
        nvfp4_linear(x, pw, out=buf[m * k // 2:m * k // 2 + m * n].view(m, n))
    y = nvfp4_linear(x, pw, out=buf[m * k:].view(m, n))  # adjacent, not overlapping: fine
    assert torch.equal(y, nvfp4_linear(x.clone(), pw))
    for act in ("bf16", "fp4"):
        assert nvfp4_linear(x[:0], pw, act=act).shape == (0, n)


def test_m_over_16_at_gemv_entry_is_rejected():
    pw = prepare_weight(quantize(torch.randn(64, 32, device=DEV)))
    x = torch.randn(17, 32, device=DEV).to(torch.bfloat16)
    y = torch.empty(17, 64, dtype=torch.bfloat16, device=DEV)
    with pytest.raises(ValueError, match=r"1 <= M <= 16, got shape \(17, 32\)"):
        kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, y, 1, 1)


def test_fast_and_exact_scale_decodes_agree():
    """All-normal scales take the fast decode; the general one must give the same bits."""
    n, k, m = 4104, 4096, 9
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    assert not pw.exact_scales
    x = torch.randn(m, k, device=DEV).to(torch.bfloat16)
    outs = []
    for exact in (False, True):
        y = torch.full((m, n), float("nan"), dtype=x.dtype, device=DEV)
        kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, y, *pw.plans[16], exact)
        outs.append(y)
    assert_bitexact(outs[0], outs[1], "fast vs exact scale decode")
    assert_rel_close(outs[0], _ref(x, w, "bf16"), rel_for_dtype(x.dtype), "fast decode")


def test_zero_scale_block_uses_exact_path():
    w = quantize(torch.randn(64, 64, device=DEV))
    w.block_scale.view(torch.uint8)[3, 1] = 0  # one all-zero block scale
    pw = prepare_weight(w)
    assert pw.exact_scales
    x = torch.randn(2, 64, device=DEV).to(torch.bfloat16)
    assert_rel_close(pw(x), _ref(x, w, "bf16"), rel_for_dtype(x.dtype), "zero scale")


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("m,k", [(300, 2048), (4, 8192), (5, 8192)])
def test_act_quant_many_blocks_bitexact(m, k, static):
    """Larger x: more element pairs than threads in the grid (the quantizer loops), and the
    dynamic scale on both sides of the per-CTA amax limit (4 x 8192 elements: every CTA
    recomputes the amax; 5 x 8192 and 300 x 2048: grid-wide amax)."""
    x = torch.randn(m, k, device=DEV).to(torch.bfloat16)
    ws = kg.ActWorkspace(m, k, x.dtype, torch.device(DEV))
    gs = (x.float().abs().amax() / 2688).reshape(1) if static else None
    ws.quantize(x, gs)
    ref = quantize(x, global_scale=gs)
    assert_bitexact(ws.codes, ref.packed, "codes")
    assert_bitexact(ws.scales, ref.block_scale.view(torch.uint8), "scales")
    assert_bitexact(ws.gs.reshape(()), ref.global_scale, "global scale")


def _gemv(pw, x, g_x=None, plan=None):
    """The GEMV entry with a given (cluster, tiles per cluster) plan (default: the weight's)."""
    y = torch.full((x.shape[0], pw.n), float("nan"), dtype=x.dtype, device=DEV)  # poisoned
    plan = plan or pw.plans[8 if x.shape[0] <= 8 else 16]
    kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, g_x, None, y, *plan, pw.exact_scales)
    return y


def _clusters() -> bool:
    return torch.cuda.get_device_capability()[0] >= 9


@pytest.mark.parametrize("n,k", [(24, 192), (200, 80), (4104, 4096), (1000, 12288), (24, 256),
                                 (300, 768), (300, 384)])
def test_every_work_split_matches_reference(n, k):
    """Any (cluster size S, tiles per cluster R) gives the reference result, including
    clusters with ranks that get no K chunk (S > KC) and a last cluster with fewer tiles;
    every run is deterministic (bit-identical when repeated). K % 256 == 0 takes the
    aligned loop (4-unit bodies; K = 256: every body ends a tile; n = 24: most warps get no
    unit), and for M > 8 also K % 128 == 0 (2-unit bodies: K = 384 is aligned for M > 8,
    general for M <= 8); the other shapes take the general loop."""
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    tiles, kc = kg.grid_dims(n, k)
    rmax = min(tiles, kg.MAX_TILES_PER_CLUSTER[16])
    splits = [(1, 1), (1, rmax), (1, max(1, tiles // 3))]
    if _clusters():
        splits += [(2, 1), (3, 2), (8, 1), (5, max(1, rmax // 2)), (8, rmax)]
    for m in (1, 3, 8, 9, 16):
        x = torch.randn(m, k, device=DEV).to(torch.bfloat16)
        ref = _ref(x, w, "bf16")
        for plan in splits:
            y = _gemv(pw, x, plan=plan)
            assert_rel_close(y, ref, rel_for_dtype(x.dtype), f"M={m} plan={plan}")
            assert_bitexact(_gemv(pw, x, plan=plan), y, f"repeat M={m} plan={plan}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k", [(32, 256), (4128, 4096), (96, 768), (64, 12288)])
def test_pair_bodies_match_reference(n, k, dtype):
    """Plans with an even tile count per CTA run pair bodies for M <= 8 (each x fragment
    feeds two tiles): reference result for every M and even R (including a last CTA with
    fewer tile pairs and warps with no unit), deterministic, and the fast and exact scale
    decodes give the same bits. A row's result is the same whatever the number of rows
    (M = 1..8: continuous batching relies on it). W4A4's quantized x goes through the same
    loop."""
    mode = kg._ext().gemv_pair_mode()
    assert mode in (0, 1)
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    tiles, _ = kg.grid_dims(n, k)
    rmax = min(tiles, kg.MAX_TILES_PER_CLUSTER[16]) // 2 * 2
    plans = sorted({(1, 2), (1, min(4, rmax)), (1, rmax), (1, max(2, tiles // 3 // 2 * 2))})
    x8 = torch.randn(8, k, device=DEV).to(dtype)
    for plan in plans:  # row 0 alone and in batches of 2..8: the same bits
        y1 = _gemv(pw, x8[:1], plan=plan)
        for m in range(2, 9):
            assert_bitexact(_gemv(pw, x8[:m], plan=plan)[:1], y1, f"row 0 of M={m} vs alone, plan={plan}")
    for m in range(1, 17):
        x = torch.randn(m, k, device=DEV).to(dtype)
        ref = _ref(x, w, "bf16")
        for plan in plans:
            assert kg.pair_bodies(m, n, k, *plan, mode=mode) == (mode == 1 and m <= 8)
            y = _gemv(pw, x, plan=plan)
            assert_rel_close(y, ref, rel_for_dtype(dtype), f"M={m} plan={plan}")
            assert_bitexact(_gemv(pw, x, plan=plan), y, f"repeat M={m} plan={plan}")
            ye = torch.full_like(y, float("nan"))
            kg.nvfp4_gemv_out(x, pw.packed, pw.global_scale, None, None, ye, *plan, True)
            assert_bitexact(ye, y, f"exact scale decode M={m} plan={plan}")
        gs = (x.float().abs().amax() / 2688).reshape(1)  # W4A4, static scale
        ws = kg.ActWorkspace(16, k, dtype, torch.device(DEV))
        y = _gemv(pw, ws.quantize(x, gs), ws.gs, plan=(1, 2))
        assert_rel_close(y, _ref(x, w, "fp4", gs), rel_for_dtype(dtype), f"W4A4 M={m}")


# One process per build switch setting (the extension reads RESETFP4_GEMV_WIDE / _PF2 once):
# argv = output file, switch ("wide" or "pf2"), mode. Every (shape, dtype, plan, M, scale
# decode) result is saved, and the number of calls the switch applied to (by the Python
# mirror of launch_gemv's rule) must be > 0 exactly when the mode is on.
_SWITCH_SCRIPT = r"""
import sys, torch
from safetensors.torch import save_file
from resetfp4.kernels import nvfp4_gemv as kg
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight
switch, mode = sys.argv[2], int(sys.argv[3])
read = {"wide": kg._ext().gemv_wide_mode, "pf2": kg._ext().gemv_pf2_mode}[switch]()
assert read == mode, (switch, read, mode)
sms = torch.cuda.get_device_properties(0).multi_processor_count
if switch == "wide":
    shapes = [(16 * sms, 4096), (2 * 16 * sms, 512), (64, 12288), (32, 256), (16 * 2 * sms + 16, 256)]
    extra = lambda tiles: (1, 2) if tiles % 2 == 0 else (1, 1)
    applies = lambda n, k, plan: kg.wide_build(1, n, k, *plan, sms, mode)
else:  # one-tile bodies on grids past the wide build: 8, 7 (odd) and 8 bodies a warp with
    # tile groups ending inside warp ranges (R = 3, 20 bodies a tile), and a short one (2)
    shapes = [(16 * (2 * sms + 1), 16384), (16 * (2 * sms + 1), 14336),
              (48 * (2 * sms + 1), 5120), (16 * (2 * sms + 1), 4096)]
    extra = lambda tiles: (1, 3)
    applies = lambda n, k, plan: kg.two_body_prefetch(1, n, k, *plan, sms, mode)
out, used = {}, 0
for n, k in shapes:
    torch.manual_seed(n + k)
    w = quantize(torch.randn(n, k, device="cuda"))
    pw = prepare_weight(w)
    tiles, _ = kg.grid_dims(n, k)
    plans = {pw.plans[8], (1, 1), extra(tiles)}
    for dtype in (torch.bfloat16, torch.float16):
        x8 = torch.randn(8, k, device="cuda").to(dtype)
        for plan in sorted(plans):
            used += applies(n, k, plan)
            for m in range(1, 9):
                for exact in (False, True):
                    y = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
                    kg.nvfp4_gemv_out(x8[:m], pw.packed, pw.global_scale, None, None, y, *plan,
                                      exact or pw.exact_scales)
                    out[f"{n}x{k}/{dtype}/{plan}/{m}/{exact}"] = y.cpu()
assert (used > 0) == (mode == 1), used
save_file(out, sys.argv[1])
"""


def _switch_gives_the_same_bits(tmp_path, switch: str, env_name: str) -> None:
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    files = {}
    for mode in (1, 0):
        env = dict(os.environ, **{env_name: str(mode)})
        f = tmp_path / f"{switch}{mode}.safetensors"
        r = subprocess.run([sys.executable, "-c", _SWITCH_SCRIPT, str(f), switch, str(mode)], env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        files[mode] = load_file(str(f))
    assert files[1].keys() == files[0].keys() and len(files[1]) > 100
    for key, y in files[1].items():
        assert not torch.isnan(y).any(), key
        assert_bitexact(y, files[0][key], f"{switch} on vs off: {key}")


def test_wide_build_gives_the_same_bits(tmp_path):
    """The 2-CTAs-per-SM build (RESETFP4_GEMV_WIDE, default on where a grid has <= 2 CTAs per
    SM) and the 3-CTA build give bit-identical results: one-tile and pair plans, bf16 and
    fp16, fast and exact scale decodes, M = 1..8, on grids of exactly 2 CTAs per SM, more
    (not wide: must also match), small ones, and a non-default plan of one tile per CTA.
    Each build runs in its own process (the mode is read once)."""
    _switch_gives_the_same_bits(tmp_path, "wide", "RESETFP4_GEMV_WIDE")


def test_two_body_prefetch_gives_the_same_bits(tmp_path):
    """The two-body L2 prefetch (RESETFP4_GEMV_PF2, default on where a warp streams >= 7
    one-tile bodies) changes no result bit: bf16 and fp16, fast and exact scale decodes,
    M = 1..8, warp ranges of 7 and 8 bodies, tile groups ending inside a warp's range
    (R = 3), and a short range where the rule does not apply. Each setting runs in its own
    process (the mode is read once)."""
    _switch_gives_the_same_bits(tmp_path, "pf2", "RESETFP4_GEMV_PF2")


def test_too_many_tiles_per_cluster_is_an_error():
    pw = prepare_weight(quantize(torch.randn(4096, 64, device=DEV)))
    x = torch.randn(9, 64, device=DEV).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="tiles per cluster must fit shared memory"):
        _gemv(pw, x, plan=(1, 256))  # 256 tiles x 16 rows x 16 batch rows of fp32 partials


def test_cluster_plan_rejected_without_sm90():
    if _clusters():
        pytest.skip("this GPU has thread-block clusters (sm_90+): nothing to reject")
    pw = prepare_weight(quantize(torch.randn(64, 256, device=DEV)))
    x = torch.randn(1, 256, device=DEV).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="cluster size > 1 needs sm_90"):
        _gemv(pw, x, plan=(2, 1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k", [(24, 48), (4104, 4096), (6144, 12288)])
def test_static_w4a4_is_quantizer_then_gemv(n, k, dtype):
    """nvfp4_linear(act='fp4', input_scale=gs) == the bit-exact quantizer + the W4A16 GEMV
    on its output with g_x, bit for bit, and == the reference. x has a zero block (scale 1),
    a block far above 6 * 448 * gs (saturated scale) and tiny values (subnormal / zero e4m3
    scales); M changes between calls on one prepared weight."""
    w = quantize(torch.randn(n, k, device=DEV))
    pw = prepare_weight(w)
    for m in (1, 2, 3, 8, 9, 16, 1):
        x = torch.randn(m, k, device=DEV).to(dtype)
        x[0, :16] = 0
        x[-1, 16:32] *= 1000
        x[m // 2, -16:] *= 1e-4
        gs = (x.float().abs().amax() / 2688 / 4).reshape(1)  # some blocks above the range
        ws = kg.ActWorkspace(16, k, dtype, torch.device(DEV))
        xq = ws.quantize(x, gs)
        two_step = _gemv(pw, xq, ws.gs)
        y = nvfp4_linear(x, pw, act="fp4", input_scale=gs)
        assert_bitexact(y, two_step, f"nvfp4_linear vs quantizer+GEMV, M={m}")
        assert_rel_close(y, _ref(x, w, "fp4", gs), rel_for_dtype(dtype), f"static M={m}")


def test_static_w4a4_exact_scale_path():
    """A weight with a zero block scale (general scale decode), static W4A4."""
    w = quantize(torch.randn(200, 256, device=DEV))
    w.block_scale.view(torch.uint8)[5, 2] = 0
    pw = prepare_weight(w)
    assert pw.exact_scales
    x = torch.randn(5, 256, device=DEV).to(torch.bfloat16)
    gs = torch.tensor(0.003, device=DEV)
    y = nvfp4_linear(x, pw, act="fp4", input_scale=gs)
    assert_rel_close(y, _ref(x, w, "fp4", gs), rel_for_dtype(x.dtype), "static, exact scales")
