"""ModelOpt-compatible NVFP4 folders: round trip and every listed bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from resetfp4.format.checkpoint import (
    CheckpointError,
    load_nvfp4_checkpoint,
    save_nvfp4_checkpoint,
)
from resetfp4.nvfp4 import quantize
from resetfp4.testing.tolerances import assert_bitexact

LIN = {"model.layers.0.self_attn.q_proj": (48, 32), "model.layers.0.mlp.down_proj": (32, 64)}


def _make(tmp_path, algo="NVFP4", g=None):
    linears = {p: quantize(torch.randn(n, k, generator=g)) for p, (n, k) in LIN.items()}
    dense = {"model.embed_tokens.weight": torch.randn(10, 32, generator=g).bfloat16(),
             "model.norm.weight": torch.ones(32, dtype=torch.bfloat16),
             "lm_head.weight": torch.randn(10, 32, generator=g).bfloat16()}
    scales = {p: torch.tensor(0.01) for p in LIN} if algo == "NVFP4" else None
    out = save_nvfp4_checkpoint(tmp_path / "ck", config={"architectures": ["LlamaForCausalLM"]},
                                dense=dense, linears=linears, input_scales=scales, quant_algo=algo,
                                producer_extra={"calibration": "unit test"})
    return out, linears, dense


@pytest.mark.parametrize("algo", ["NVFP4", "W4A16_NVFP4"])
def test_round_trip_is_bitexact(tmp_path, algo, rng):
    out, linears, dense = _make(tmp_path, algo, rng)
    ck = load_nvfp4_checkpoint(out, expected_linear_shapes=LIN)
    assert ck.quant_algo == algo
    for p, w in linears.items():
        assert_bitexact(ck.linears[p].packed, w.packed)
        assert_bitexact(ck.linears[p].block_scale.view(torch.uint8), w.block_scale.view(torch.uint8))
        assert_bitexact(ck.linears[p].global_scale, w.global_scale)
    for n, t in dense.items():
        assert_bitexact(ck.dense[n], t)
    assert (algo == "NVFP4") == bool(ck.input_scales)


def test_on_disk_layout_matches_modelopt(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    t = load_file(str(out / "model.safetensors"))
    p = "model.layers.0.self_attn.q_proj"
    assert t[f"{p}.weight"].dtype == torch.uint8 and t[f"{p}.weight"].shape == (48, 16)
    assert t[f"{p}.weight_scale"].dtype == torch.float8_e4m3fn and t[f"{p}.weight_scale"].shape == (48, 2)
    assert t[f"{p}.weight_scale_2"].dtype == torch.float32 and t[f"{p}.weight_scale_2"].dim() == 0
    assert t[f"{p}.input_scale"].dtype == torch.float32
    assert t["lm_head.weight"].dtype == torch.bfloat16
    qc = json.loads((out / "hf_quant_config.json").read_text())
    assert qc["quantization"] == {"quant_algo": "NVFP4", "group_size": 16,
                                  "kv_cache_quant_algo": None, "exclude_modules": ["lm_head"]}
    assert qc["producer"]["name"] == "resetfp4" and qc["producer"]["calibration"] == "unit test"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"] == {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
                                          "kv_cache_quant_algo": None, "exclude_modules": ["lm_head"],
                                          "ignore": ["lm_head"]}


def test_truncated_file_names_the_file(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    f = out / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated or corrupt"):
        load_nvfp4_checkpoint(out)


def _rewrite(out, fn):
    f = out / "model.safetensors"
    t = load_file(str(f))
    fn(t)
    save_file(t, str(f))


def test_wrong_shape_names_tensor_and_expected_shape(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    p = "model.layers.0.self_attn.q_proj"

    def shrink(t):
        t[f"{p}.weight"] = t[f"{p}.weight"][:40].contiguous()
        t[f"{p}.weight_scale"] = t[f"{p}.weight_scale"][:40].contiguous()
    _rewrite(out, shrink)
    with pytest.raises(CheckpointError, match=r"q_proj.weight.*\[40, 32\].*expects \[48, 32\]"):
        load_nvfp4_checkpoint(out, expected_linear_shapes=LIN)


def test_scale_shape_mismatch(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    p = "model.layers.0.mlp.down_proj"
    _rewrite(out, lambda t: t.__setitem__(f"{p}.weight_scale", t[f"{p}.weight_scale"][:, :2].contiguous()))
    with pytest.raises(CheckpointError, match=r"down_proj.weight_scale.*expected \[32, 4\]"):
        load_nvfp4_checkpoint(out)


@pytest.mark.parametrize("suffix", ["weight_scale_2", "input_scale"])
def test_missing_scale(tmp_path, suffix, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    p = "model.layers.0.mlp.down_proj"
    _rewrite(out, lambda t: t.pop(f"{p}.{suffix}"))
    with pytest.raises(CheckpointError, match=f"down_proj.{suffix}.*missing"):
        load_nvfp4_checkpoint(out)


def test_missing_block_scale(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    p = "model.layers.0.mlp.down_proj"
    _rewrite(out, lambda t: t.pop(f"{p}.weight_scale"))
    with pytest.raises(CheckpointError, match="down_proj.weight_scale is missing"):
        load_nvfp4_checkpoint(out)


def test_wrong_dtype(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    p = "model.layers.0.mlp.down_proj"
    _rewrite(out, lambda t: t.__setitem__(f"{p}.weight_scale", t[f"{p}.weight_scale"].float()))
    with pytest.raises(CheckpointError, match="float8_e4m3fn"):
        load_nvfp4_checkpoint(out)


def test_missing_linear_listed_by_config(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    with pytest.raises(CheckpointError, match="o_proj.*missing.*uint8 \\[32, 16\\]"):
        load_nvfp4_checkpoint(out, {**LIN, "model.layers.0.self_attn.o_proj": (32, 32)})


def test_missing_quant_config_and_folder(tmp_path, rng):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    (out / "hf_quant_config.json").unlink()
    with pytest.raises(CheckpointError, match="hf_quant_config.json not found"):
        load_nvfp4_checkpoint(out)
    with pytest.raises(CheckpointError, match="not a folder"):
        load_nvfp4_checkpoint(tmp_path / "nope")


def test_w4a4_requires_input_scales(tmp_path, rng):
    with pytest.raises(CheckpointError, match="input_scale"):
        save_nvfp4_checkpoint(tmp_path / "x", config={}, dense={},
                              linears={"a": quantize(torch.randn(16, 16, generator=rng))},
                              quant_algo="NVFP4")


def test_sharded_round_trip_and_overwrite_leaves_no_stale_shard(tmp_path, monkeypatch, rng):
    from resetfp4.format import checkpoint

    monkeypatch.setattr(checkpoint, "_SHARD_BYTES", 600)  # force several shards + an index
    out, linears, _ = _make(tmp_path, "NVFP4", rng)
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("model-*.safetensors"))) > 1
    ck = load_nvfp4_checkpoint(out, expected_linear_shapes=LIN)
    for p, w in linears.items():
        assert_bitexact(ck.linears[p].packed, w.packed)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        _make(tmp_path, "NVFP4", rng)
    monkeypatch.setattr(checkpoint, "_SHARD_BYTES", 4 << 30)  # now one file: old shards must go
    new = {p: quantize(torch.randn(n, k, generator=rng)) for p, (n, k) in LIN.items()}
    save_nvfp4_checkpoint(out, config={}, dense={}, linears=new, quant_algo="W4A16_NVFP4",
                          overwrite=True)
    assert sorted(f.name for f in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    ck = load_nvfp4_checkpoint(out)
    for p, w in new.items():
        assert_bitexact(ck.linears[p].packed, w.packed)


@pytest.mark.parametrize("bad_byte,what", [(0x7F, "NaN"), (0xFF, "NaN"), (0xB8, "negative")])
def test_nan_or_negative_block_scale_is_rejected(tmp_path, rng, bad_byte, what):
    out, _, _ = _make(tmp_path, "NVFP4", rng)
    p = "model.layers.0.mlp.down_proj"

    def poison(t):
        s = t[f"{p}.weight_scale"].view(torch.uint8).clone()
        s[3, 1] = bad_byte
        t[f"{p}.weight_scale"] = s.view(torch.float8_e4m3fn)
    _rewrite(out, poison)
    with pytest.raises(CheckpointError, match=f"down_proj.weight_scale.*1 {what}" if what == "NaN"
                       else "down_proj.weight_scale.*1 negative"):
        load_nvfp4_checkpoint(out)
