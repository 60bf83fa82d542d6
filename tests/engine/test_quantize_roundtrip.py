"""``quantize_to_folder`` round trip: the reloaded folder equals on-the-fly quantization, bit for bit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from resetfp4.engine.build import build_model
from resetfp4.engine.loader import load_tokenizer, read_source
from resetfp4.engine.quantize import CALIBRATION_PROMPTS, probe_logits, quantize_to_folder
from resetfp4.format.checkpoint import load_nvfp4_checkpoint
from resetfp4.testing.tolerances import assert_bitexact

CPU = torch.device("cpu")


@pytest.mark.parametrize(("arch", "w4a16", "lm_head"), [("qwen2", False, "bf16"), ("qwen3", True, "nvfp4")])
def test_round_trip_equals_on_the_fly(tiny_folder, tmp_path, arch, w4a16, lm_head):
    src_dir = tiny_folder(arch)
    out = tmp_path / "nvfp4"
    rep = quantize_to_folder(str(src_dir), out, w4a16=w4a16, device="cpu", lm_head=lm_head, progress=False)
    assert rep["verified"] and rep["max_abs_logit_diff"] == 0.0
    qc = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert qc["quant_algo"] == ("W4A16_NVFP4" if w4a16 else "NVFP4")
    assert qc["exclude_modules"] == ([] if lm_head == "nvfp4" else ["lm_head"])
    ck = load_nvfp4_checkpoint(out)
    assert len(ck.linears) == 2 * 7 + (lm_head == "nvfp4")
    # config.json names the dtype the unquantized tensors are stored in
    assert {str(t.dtype).removeprefix("torch.") for t in ck.dense.values()} == {ck.config["torch_dtype"]}
    assert bool(ck.input_scales) != w4a16
    precision = "nvfp4-w4a16" if w4a16 else "nvfp4-w4a4"
    src = read_source(str(src_dir))
    tok = load_tokenizer(src)
    on_the_fly = build_model(src, precision, CPU, lm_head=lm_head, tokenizer=tok)
    reloaded = build_model(read_source(str(out)), precision, CPU, lm_head=lm_head)
    assert_bitexact(probe_logits(reloaded, tok), probe_logits(on_the_fly, tok), "reloaded vs on-the-fly")


def test_calibration_set_is_small_and_fixed():
    assert 4 <= len(CALIBRATION_PROMPTS) <= 16
    assert all(isinstance(p, str) and p for p in CALIBRATION_PROMPTS)


def test_nvfp4_folder_rejects_dense_precision_and_w4a4_on_w4a16(tiny_folder, tmp_path):
    out = tmp_path / "w4a16"
    quantize_to_folder(str(tiny_folder("llama")), out, w4a16=True, device="cpu", verify=False, progress=False)
    with pytest.raises(ValueError, match="NVFP4 checkpoint; use --precision nvfp4"):
        build_model(read_source(str(out)), "bf16", CPU)
    with pytest.raises(ValueError, match="W4A16_NVFP4.*use --precision nvfp4-w4a16"):
        build_model(read_source(str(out)), "nvfp4-w4a4", CPU)
    with pytest.raises(ValueError, match="already an NVFP4 checkpoint"):
        quantize_to_folder(str(out), tmp_path / "again", device="cpu", progress=False)


def test_nvfp4_folder_with_more_than_lm_head_in_bf16(tiny_folder, tmp_path):
    """A ModelOpt folder that keeps a block linear in bf16 loads it unquantized where
    exclude_modules names it (as vLLM does), and is a clear error where it does not."""
    from safetensors.torch import load_file, save_file

    from resetfp4.engine.build import excluded
    from resetfp4.engine.model import Linear

    src_dir = tiny_folder("qwen2")
    out = tmp_path / "w4a16"
    quantize_to_folder(str(src_dir), out, w4a16=True, device="cpu", progress=False)
    orig = tmp_path / "orig"
    shutil.copytree(out, orig)
    # lm_head stayed bf16 here: asking for an NVFP4 head cannot be honoured.
    with pytest.raises(ValueError, match="keeps lm_head in bf16.*--lm-head nvfp4"):
        build_model(read_source(str(out)), "nvfp4-w4a16", CPU, lm_head="nvfp4")
    # Layer 0's down_proj stored in bf16, as an export with more exclude_modules writes it.
    name = "model.layers.0.mlp.down_proj"
    (f,) = out.glob("*.safetensors")
    sd = load_file(str(f))
    dense = load_file(str(next(src_dir.glob("*.safetensors"))))[f"{name}.weight"].to(torch.bfloat16)
    sd = {k: v for k, v in sd.items() if not k.startswith(f"{name}.")}
    sd[f"{name}.weight"] = dense
    save_file(sd, str(f))
    want = (r"\['model\.layers\.0\.mlp\.down_proj'\] \(1 in all\) are stored unquantized"
            r".*exclude_modules \['lm_head'\]")
    with pytest.raises(ValueError, match=want):
        build_model(read_source(str(out)), "nvfp4-w4a16", CPU)
    qc_file = out / "hf_quant_config.json"
    qc = json.loads(qc_file.read_text())
    for patterns in (["lm_head", name], ["model.layers.*.mlp.down_proj"], ["lm_head", "model.layers.0"],
                     ["mlp.down_proj"]):
        assert excluded(name, patterns)
    assert not excluded(name, ["lm_head", "model.layers.1*"])
    qc["quantization"]["exclude_modules"] = ["lm_head", "model.layers.0.mlp.down_*"]
    qc_file.write_text(json.dumps(qc))
    src = read_source(str(out))
    assert src.exclude_modules == ["lm_head", "model.layers.0.mlp.down_*"]
    model = build_model(src, "nvfp4-w4a16", CPU)
    down = model.get_submodule(name)
    assert not down.nvfp4 and model.get_submodule("model.layers.1.mlp.down_proj").nvfp4
    # The reference: the untouched folder, with that linear swapped for a dense one holding
    # the same bf16 weight. Same ops, so the logits are equal bit for bit.
    ref = build_model(read_source(str(orig)), "nvfp4-w4a16", CPU)
    plain = Linear(down.in_features, down.out_features, False, ref.dtype)
    plain.weight = torch.nn.Parameter(dense.to(ref.dtype), requires_grad=False)
    ref.model.layers[0].mlp.down_proj = plain
    tok = load_tokenizer(src)
    assert_bitexact(probe_logits(model, tok), probe_logits(ref, tok), "bf16 down_proj from exclude_modules")
    # Malformed exclude_modules: named.
    qc["quantization"]["exclude_modules"] = "lm_head"
    qc_file.write_text(json.dumps(qc))
    with pytest.raises(Exception, match="exclude_modules must be a list"):
        read_source(str(out))


def test_config_dtype_names_the_stored_dense_dtype(tiny_folder, tmp_path):
    """A source whose config.json says float16 (or float32) over other tensors: the NVFP4 folder's
    config.json names the dtype its unquantized tensors are actually stored in."""
    src_dir = tmp_path / "src"
    shutil.copytree(tiny_folder("qwen3"), src_dir)
    cfg = json.loads((src_dir / "config.json").read_text())
    cfg["torch_dtype"] = "float16"
    (src_dir / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "nvfp4"
    quantize_to_folder(str(src_dir), out, w4a16=True, device="cpu", progress=False)
    ck = load_nvfp4_checkpoint(out)
    stored = {str(t.dtype).removeprefix("torch.") for t in ck.dense.values()}
    assert len(stored) == 1 and ck.config["torch_dtype"] == stored.pop()


def test_fp8_kv_cache_setting_is_noted_not_silently_dropped(tiny_folder, tmp_path, capsys):
    """ModelOpt exports may ask for an FP8 KV cache; the engine keeps its bf16 cache and says so."""
    out = tmp_path / "nvfp4"
    quantize_to_folder(str(tiny_folder("qwen3")), out, w4a16=True, device="cpu", progress=False)
    capsys.readouterr()
    read_source(str(out))
    assert "kv_cache_quant_algo" not in capsys.readouterr().err  # null: nothing to say
    qc = json.loads((out / "hf_quant_config.json").read_text())
    qc["quantization"]["kv_cache_quant_algo"] = "FP8"
    (out / "hf_quant_config.json").write_text(json.dumps(qc))
    read_source(str(out))
    err = capsys.readouterr().err
    assert f"resetfp4: {out} asks for its KV cache in FP8 (kv_cache_quant_algo)" in err
    assert "ignores the checkpoint's k/v scales" in err
