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
