"""ModelOpt NVFP4 folders with tensors of the wrong dtype: refused with the file, the tensor,
the dtype found and the dtype expected, for the dense tensors and the NVFP4 ones alike."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from resetfp4.format.checkpoint import CheckpointError, load_nvfp4_checkpoint, save_nvfp4_checkpoint
from resetfp4.nvfp4 import quantize

P = "model.layers.0.mlp.down_proj"
PACKED = "must be uint8 [N, K/2] (packed E2M1 codes)"


@pytest.fixture
def folder(tmp_path, rng):
    dense = {"model.embed_tokens.weight": torch.randn(10, 32, generator=rng).bfloat16(),
             "model.norm.weight": torch.ones(32, dtype=torch.bfloat16),
             f"{P}.bias": torch.zeros(32, dtype=torch.float16),
             "lm_head.weight": torch.randn(10, 32, generator=rng).float()}
    return save_nvfp4_checkpoint(tmp_path / "ck", config={"architectures": ["LlamaForCausalLM"]},
                                 dense=dense, linears={P: quantize(torch.randn(32, 64, generator=rng))},
                                 input_scales={P: torch.tensor(0.01)})


def _set(folder, name, fn):
    f = folder / "model.safetensors"
    t = load_file(str(f))
    t[name] = fn(t[name]).contiguous()
    save_file(t, str(f))
    return f


def test_bf16_fp16_and_fp32_dense_tensors_load(folder):
    ck = load_nvfp4_checkpoint(folder)
    assert {n: t.dtype for n, t in ck.dense.items()} == {
        "model.embed_tokens.weight": torch.bfloat16, "model.norm.weight": torch.bfloat16,
        f"{P}.bias": torch.float16, "lm_head.weight": torch.float32}


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("model.embed_tokens.weight", torch.int8), ("model.norm.weight", torch.float8_e4m3fn),
     ("lm_head.weight", torch.int32), (f"{P}.bias", torch.float64), ("model.norm.weight", torch.bool)],
)
def test_non_float_dense_tensor_is_refused(folder, name, dtype):
    f = _set(folder, name, lambda t: t.to(dtype))
    with pytest.raises(CheckpointError) as e:
        load_nvfp4_checkpoint(folder)
    found = str(dtype).removeprefix("torch.")
    assert str(e.value) == (
        f"{f}: tensor {name!r} is {found}, expected bfloat16, float16 or float32: the tensors a ModelOpt "
        "NVFP4 folder keeps unquantized (embeddings, norms, lm_head, biases) are read as values, and only "
        "those three float types are. Re-create the folder with `resetfp4 quantize` from the BF16/FP16 "
        "original model")


@pytest.mark.parametrize(
    ("suffix", "fn", "want"),
    [
        ("weight", lambda t: t.to(torch.int8), f"{PACKED}, got int8 (32, 32)"),
        ("weight", lambda t: t.to(torch.bfloat16), f"{PACKED}, got bfloat16 (32, 32)"),
        ("weight_scale", lambda t: t.to(torch.bfloat16), "must be float8_e4m3fn, got bfloat16"),
        ("weight_scale", lambda t: t.view(torch.uint8), "must be float8_e4m3fn, got uint8"),
        ("weight_scale_2", lambda t: t.half(), "must be a float32 scalar, got float16 ()"),
        ("weight_scale_2", lambda t: t.reshape(1).repeat(2), "must be a float32 scalar, got float32 (2,)"),
        ("input_scale", lambda t: t.bfloat16(), "must be a float32 scalar, got bfloat16 ()"),
        ("input_scale", lambda t: t.double(), "must be a float32 scalar, got float64 ()"),
        ("input_scale", lambda t: torch.full_like(t, float("nan")), "must be finite and > 0, got nan"),
    ],
)
def test_nvfp4_tensor_of_wrong_dtype_is_refused(folder, suffix, fn, want):
    f = _set(folder, f"{P}.{suffix}", fn)
    with pytest.raises(CheckpointError) as e:
        load_nvfp4_checkpoint(folder)
    assert str(e.value) == f"{f}: tensor '{P}.{suffix}' {want}"
