"""CPU: the split-KV decode attention kernels under Triton's interpreter against the float64
reference (only where the triton package is installed; CI's CPU torch has none, so there it
skips with that reason), plus the split sizing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from resetfp4.engine import attention as A

_SCRIPT = textwrap.dedent("""
import torch
from resetfp4.engine import attention as A
from resetfp4.engine import attention_kernels as ak

torch.manual_seed(0)
cases = [(2, 2, 7, 64, 300), (1, 8, 4, 128, 256), (3, 1, 1, 64, 130), (4, 2, 3, 32, 1)]
for b, h_kv, rep, d, seq in cases:
    q = torch.randn(b, h_kv, rep, d)
    kc, vc = torch.randn(b + 1, h_kv, seq + 40, d), torch.randn(b + 1, h_kv, seq + 40, d)
    k, v = kc[1:, :, :seq], vc[1:, :, :seq]  # cache views: strides of the whole cache
    pos = torch.randint(0, seq, (b,))
    pos[0] = seq + 5  # an idle slot past the view attends all seq keys and reads nothing beyond
    if seq == 1:
        pos = torch.arange(1).expand(b, 1)[:, 0]  # stride 0, as a width-1 prefill passes it
    splits, chunk = A.num_splits(b * h_kv, seq, 8)
    rows = max(A.MIN_ROWS, 1 << (rep - 1).bit_length())
    acc = torch.full((b * h_kv, splits, rows, d), float("nan"))
    ml = torch.full((b * h_kv, splits, 2, rows), float("nan"))
    out = torch.full((b, h_kv, rep, d), float("nan"))
    ak.launch(q, k, v, pos.contiguous(), acc, ml, out, splits, chunk, rows, A.BLOCK_N, d ** -0.5)
    ref = A.decode_attention_ref(q, k, v, pos)
    err = (out - ref).abs().max().item()
    assert err < 1e-5, (b, h_kv, rep, d, seq, err)

# The fused kernel (head preparation + cache write + attention) against the eager reference;
# fp16 too (the interpreter has no bf16): its roundings are then the model's own.
for dt in (torch.float32, torch.float16):
    for b, h_kv, rep, d, seq, max_seq, norm in [(2, 2, 4, 64, 200, 260, True), (3, 1, 1, 32, 70, 70, False),
                                                (3, 2, 3, 64, 128, 300, True)]:
        q = torch.randn(b, h_kv * rep * d).to(dt)
        kv = torch.randn(b, 2 * h_kv * d).to(dt)
        k, v = kv[:, : h_kv * d], kv[:, h_kv * d :]
        qw = (torch.rand(d) + 0.5).to(dt) if norm else None
        kw = (torch.rand(d) + 0.5).to(dt) if norm else None
        ang = torch.rand(b, d // 2) * 6
        cos = torch.cat([ang.cos(), ang.cos()], -1).to(dt)
        # sin as a column slice of a wider tensor: its own row stride
        sin = torch.cat([-ang.sin(), ang.sin(), torch.ones(b, d)], -1).to(dt)[:, :d]
        kc, vc = torch.randn(b + 1, h_kv, max_seq, d).to(dt), torch.randn(b + 1, h_kv, max_seq, d).to(dt)
        pos = torch.randint(0, seq, (b,))
        pos[0] = seq - 1
        pos[1] = 0  # only the new key: an empty cache loop, then the step from registers
        if b > 2:
            pos[2] = max_seq - 1  # an idle slot: past the view when seq < max_seq
        kc2, vc2 = kc.clone(), vc.clone()  # the reference's caches: clean

        def poison(kc, vc):  # never-written cache past pos: non-finite garbage must not leak in
            for i in range(b):
                kc[i, :, pos[i] + 1 :] = float("nan")
                vc[i, :, pos[i] + 1 :] = float("inf")

        poison(kc, vc)
        osc = torch.tensor([0.003]) if norm else None  # W4A4 o_proj input: quantized output
        ref = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc2, vc2, pos, seq, osc)
        splits, chunk = A.num_splits(b * h_kv, seq, 4)
        rows = max(A.MIN_ROWS, 1 << (rep - 1).bit_length())
        acc = torch.full((b * h_kv, splits, rows, d), float("nan"))
        ml = torch.full((b * h_kv, splits, 2, rows), float("nan"))
        out = torch.full((b, h_kv, rep, d), float("nan"), dtype=dt)
        ak.launch_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, seq, acc, ml, out, splits, chunk,
                        rows, A.BLOCK_N, d ** -0.5, osc)
        if osc is None:
            err = (out.float() - ref.float()).abs().max().item()
            assert err < (1e-5 if dt == torch.float32 else 2e-3), (dt, b, h_kv, rep, d, seq, err)
        else:  # quantized: equal codes except where the float64 reference sits an ulp away
            assert (out == ref).float().mean() > 0.99, (dt, b, h_kv, rep, d, seq)
        poison(kc2, vc2)
        assert torch.equal(vc, vc2), "value cache write"
        torch.testing.assert_close(kc.float(), kc2.float(), equal_nan=True, rtol=0,
                                   atol=1e-5 if dt == torch.float32 else 1e-2)
print("interpreter ok")
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="needs the triton package (its CPU interpreter)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the kernels in test_gpu_attention.py")
def test_kernels_under_the_interpreter_match_the_reference():
    # fp32 inputs: the interpreter computes in numpy; 1e-5 absolute on O(1) outputs catches
    # any masking / split / stride error (those are O(1)).
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "interpreter ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("rows,seq,sms", [(8, 1536, 132), (1, 64, 132), (512, 2048, 132), (16, 100, 8)])
def test_num_splits_covers_every_position(rows, seq, sms):
    splits, chunk = A.num_splits(rows, seq, sms)
    assert chunk % A.BLOCK_N == 0 and splits * chunk >= seq and (splits - 1) * chunk < seq
    assert rows * splits <= max(2 * sms, rows)  # about two programs per SM, at least one per row


@pytest.mark.parametrize("attn_len,warps", [(256, 8), (640, 8), (1024, 8), (2048, 4), (4096, 4)])
def test_split_warps_follow_the_plan(attn_len, warps):
    """Qwen3-8B at batch 1 (8 KV heads) on 132 SMs: one-tile splits get SPLIT_WARPS_ONE_TILE
    (8) only while the grid has at most one program per SM (session 13 measured 128 programs);
    the 256 one-tile programs of bucket 2048 and the multi-tile loop of 4096 keep SPLIT_WARPS."""
    splits, chunk = A.num_splits(8, attn_len, 132)
    assert (chunk == A.BLOCK_N) == (attn_len <= 2048)
    assert A.split_warps(8 * splits, chunk == A.BLOCK_N, 132) == warps
    assert A.split_warps(132, True, 132) == A.SPLIT_WARPS_ONE_TILE
    assert A.split_warps(133, True, 132) == A.split_warps(64, False, 132) == A.SPLIT_WARPS


def test_cpu_tensors_take_sdpa():
    q = torch.randn(1, 2, 3, 64, dtype=torch.bfloat16)
    assert not A.available(q)  # the model then runs SDPA with the same mask semantics


def test_bad_input_is_named():
    """The op's checks run before any kernel, so they are tested on CPU tensors."""
    q = torch.randn(2, 2, 7, 64, dtype=torch.bfloat16)
    k = torch.randn(2, 2, 16, 64, dtype=torch.bfloat16)
    pos = torch.tensor([3, 15])
    with pytest.raises(ValueError, match="pos must be int64"):
        A.decode_attention(q, k, k, pos.int())
    with pytest.raises(ValueError, match="needs k, v"):
        A.decode_attention(q, k[:, :1], k[:, :1], pos)
    with pytest.raises(ValueError, match="share a dtype"):
        A.decode_attention(q, k.half(), k, pos)
    with pytest.raises(ValueError, match="last dim"):
        A.decode_attention(q, k.transpose(2, 3).contiguous().transpose(2, 3), k, pos)


def test_fused_bad_input_is_named():
    """decode_attention_fused checks shapes, dtypes and strides before any kernel (CPU tensors)."""
    b, h_kv, rep, d = 2, 2, 3, 64
    q = torch.randn(b, h_kv * rep * d, dtype=torch.bfloat16)
    k = v = torch.randn(b, h_kv * d, dtype=torch.bfloat16)
    cos = sin = torch.randn(b, d, dtype=torch.bfloat16)
    kc = torch.zeros(b, h_kv, 32, d, dtype=torch.bfloat16)
    pos = torch.tensor([3, 15])

    def call(**kw):
        a = dict(q=q, k=k, v=v, q_w=None, k_w=None, eps=1e-6, cos=cos, sin=sin, k_cache=kc,
                 v_cache=kc.clone(), pos=pos, attn_len=16)
        a.update(kw)
        return A.decode_attention_fused(**a)

    with pytest.raises(ValueError, match="k, v"):
        call(k=k[:, :d])
    with pytest.raises(ValueError, match="attn_len"):
        call(attn_len=33)
    with pytest.raises(ValueError, match="must fit the cache"):
        call(k_cache=kc[:1], v_cache=kc[:1].clone())
    with pytest.raises(ValueError, match="cos, sin"):
        call(cos=cos[:, :32])
    with pytest.raises(ValueError, match="q_w and k_w"):
        call(q_w=torch.ones(d, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="share a dtype"):
        call(v=v.half())
    with pytest.raises(ValueError, match="share a dtype"):
        call(q_w=torch.ones(d), k_w=torch.ones(d))  # fp32 norm weights, bf16 activations
    with pytest.raises(ValueError, match="pos must be int64"):
        call(pos=pos.int())
    with pytest.raises(ValueError, match="contiguous"):
        call(cos=torch.randn(d, b, dtype=torch.bfloat16).T)
    with pytest.raises(ValueError, match="out_scale must be one fp32 value"):
        call(out_scale=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="out_scale must be one fp32 value"):
        call(out_scale=torch.tensor([0.1], dtype=torch.float64))


@pytest.mark.parametrize("rows", [1, 8, 32, 64, 128, 512])
@pytest.mark.parametrize("attn_len", [1, 64, 65, 256, 1000, 1024, 2048, 4096])
def test_cuda_plan_covers_the_view(rows, attn_len):
    """The one-kernel CUDA attention's split: clusters of at most CUDA_MAX_SPLITS CTAs whose
    64-key-multiple chunks cover [0, attn_len) with none empty, and at most two tiles (the
    ring's stages, no more than a CTA has) requested before the PDL wait."""
    splits, chunk, pre = A.cuda_plan(rows, attn_len, 132)
    assert 1 <= splits <= A.CUDA_MAX_SPLITS and chunk % A.CUDA_TILE == 0
    assert (splits - 1) * chunk < attn_len <= splits * chunk
    assert 0 <= pre <= min(2, chunk // A.CUDA_TILE)
    assert pre == (2 if rows <= A.CUDA_PRE_ROWS and chunk > A.CUDA_TILE else 1) or A._PRE_ENV is not None


def test_bad_attn_pre_env_is_named():
    """RESETFP4_ATTN_PRE outside 0/1/2 is an error at import that says what to set."""
    env = dict(os.environ, RESETFP4_ATTN_PRE="3")
    r = subprocess.run([sys.executable, "-c", "import resetfp4.engine.attention"], env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "RESETFP4_ATTN_PRE='3': use 0, 1 or 2" in r.stderr, r.stderr[-500:]
