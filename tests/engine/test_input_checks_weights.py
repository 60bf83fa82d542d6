"""Weights the engine cannot read correctly are refused with the tensor, its dtype and what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import random_state, tiny_args

from resetfp4.engine.build import build_model
from resetfp4.engine.loader import open_gguf, read_source
from resetfp4.engine.quantize import quantize_to_folder

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn, torch.uint8])
def test_hf_folder_with_non_float_weights_is_refused(tiny_folder, tmp_path, dtype):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"].to(dtype)
    save_file(sd, str(d / "model.safetensors"))
    name = str(dtype).removeprefix("torch.")
    want = rf"'model\.embed_tokens\.weight' is {name}; .*bf16, fp16 or fp32 only.*resetfp4 quantize"
    with pytest.raises(ValueError, match=want):
        read_source(str(d))


def test_fp16_and_fp32_folders_still_load(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    save_file({k: v.to(torch.float16 if i % 2 else torch.float32) for i, (k, v) in enumerate(sd.items())},
              str(d / "model.safetensors"))
    build_model(read_source(str(d)), "fp32", CPU)


def test_modelopt_folder_missing_hf_quant_config_names_the_file(tiny_folder, tmp_path):
    out = tmp_path / "q"
    quantize_to_folder(str(tiny_folder("llama")), out, w4a16=True, device="cpu", verify=False, progress=False)
    assert read_source(str(out)).kind == "modelopt"  # uint8 codes and fp8 scales are fine there
    (out / "hf_quant_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="holds NVFP4 tensors .* no hf_quant_config.json"):
        read_source(str(out))


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
def test_modelopt_folder_with_non_float_dense_tensor_is_refused(tiny_folder, tmp_path, dtype):
    out = tmp_path / "q"
    quantize_to_folder(str(tiny_folder("llama")), out, w4a16=True, device="cpu", verify=False, progress=False)
    sd = load_file(str(out / "model.safetensors"))
    sd["model.layers.0.input_layernorm.weight"] = sd["model.layers.0.input_layernorm.weight"].to(dtype)
    save_file(sd, str(out / "model.safetensors"))
    name = str(dtype).removeprefix("torch.")
    want = (rf"q/model\.safetensors: tensor 'model\.layers\.0\.input_layernorm\.weight' is {name}, expected "
            r"bfloat16, float16 or float32: .*Re-create the folder with `resetfp4 quantize`")
    with pytest.raises(ValueError, match=want):
        read_source(str(out))


def test_k_not_a_multiple_of_16_names_the_layer(smol_tokenizer, tmp_path):
    args = tiny_args("llama", dim=40, head_dim=10, intermediate_size=80)
    d = tmp_path / "k40"
    d.mkdir()
    save_file(random_state(args), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(args.to_hf_config()))
    smol_tokenizer.save_pretrained(str(d))
    want = r"linear model\.layers\.0\.self_attn\.q_proj has K = 40 .*NVFP4 needs K % 16 == 0"
    for prec in ("nvfp4-w4a16", "nvfp4-w4a4"):
        with pytest.raises(ValueError, match=want):
            build_model(read_source(str(d)), prec, CPU, tokenizer=smol_tokenizer)
    out = tmp_path / "q"
    with pytest.raises(ValueError, match=want):
        quantize_to_folder(str(d), out, device="cpu", progress=False)
    assert not out.exists()  # refused before the out folder is made (and before calibrating)


def test_gguf_path_that_is_missing_or_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nosuch.gguf is not a readable GGUF file: it does not exist"):
        open_gguf(tmp_path / "nosuch.gguf")
    with pytest.raises(ValueError, match="is a folder, not a readable GGUF file"):
        open_gguf(tmp_path)
