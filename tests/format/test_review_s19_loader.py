"""Review s19: the GGUF tokenizer cache key, ``--overwrite`` leaving stale checkpoint files,
one tensor in two weight files, malformed ``group_size`` / ``weight_map`` values, and model
configs the engine would compute differently (non-SiLU activation, sliding-window attention)."""

from __future__ import annotations

import json
import os

import gguf
import pytest
import torch
from safetensors.torch import save_file

from resetfp4.engine.config import PRESETS, ModelArgs
from resetfp4.engine.loader import gguf_tokenizer
from resetfp4.format.checkpoint import (
    CheckpointError,
    load_nvfp4_checkpoint,
    read_quant_config,
    read_safetensors,
    safetensors_files,
    save_nvfp4_checkpoint,
)
from resetfp4.nvfp4 import quantize

P = "model.layers.0.mlp.down_proj"


# ---------------------------------------------------------------- 1. GGUF tokenizer cache
def _template(mark: str) -> str:
    return "{% for m in messages %}<|im_start|>" + mark + "{{ m.content }}<|im_end|>{% endfor %}"


def _tiny_gguf(path, mark: str):
    """A tensor-less GGUF holding a tiny BPE tokenizer whose chat template carries ``mark``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    toks = ["<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(97, 123)] + ["ab", "abc"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types([3, 3] + [1] * (len(toks) - 2))
    w.add_token_merges(["a b", "ab c"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_chat_template(_template(mark))
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_head_count(1)
    w.add_feed_forward_length(8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def conversions(monkeypatch, tmp_path):
    """Counts GGUF -> HF tokenizer conversions (cache misses); the cache lives in tmp_path."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("RESETFP4_CACHE", str(tmp_path / "cache"))
    calls = []
    real = AutoTokenizer.from_pretrained.__func__

    def counting(cls, *a, **kw):
        if "gguf_file" in kw:
            calls.append(kw["gguf_file"])
        return real(cls, *a, **kw)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(counting))
    return calls


def test_gguf_tokenizer_cache_tells_files_of_one_name_and_size_apart(tmp_path, conversions):
    a = _tiny_gguf(tmp_path / "a" / "model.gguf", "A")
    b = _tiny_gguf(tmp_path / "b" / "model.gguf", "B")
    assert a.stat().st_size == b.stat().st_size
    assert gguf_tokenizer(a).chat_template == _template("A")
    assert gguf_tokenizer(b).chat_template == _template("B")  # was A's, from the shared cache
    assert gguf_tokenizer(a).chat_template == _template("A")
    assert len(conversions) == 2  # the third call was a cache hit
    from resetfp4.engine.loader import gguf_tokenizer_cache

    assert gguf_tokenizer_cache(a) != gguf_tokenizer_cache(b)
    assert gguf_tokenizer_cache(a).name.startswith("model-")


def test_gguf_tokenizer_cache_follows_an_in_place_edit_of_the_same_size(tmp_path, conversions):
    a = _tiny_gguf(tmp_path / "model.gguf", "A")
    assert gguf_tokenizer(a).chat_template == _template("A")
    size, data = a.stat().st_size, a.read_bytes()
    old_mtime = a.stat().st_mtime_ns
    a.write_bytes(data.replace(_template("A").encode(), _template("Z").encode()))
    if a.stat().st_mtime_ns == old_mtime:  # a file system with coarse timestamps
        os.utime(a, ns=(old_mtime + 10**9, old_mtime + 10**9))
    assert a.stat().st_size == size
    assert gguf_tokenizer(a).chat_template == _template("Z")
    assert gguf_tokenizer(a).chat_template == _template("Z")
    assert len(conversions) == 2
    assert not [p for p in (tmp_path / "cache" / "tokenizers").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- checkpoints
def _save(out, rng, **kw):
    dense = {"model.embed_tokens.weight": torch.randn(10, 32, generator=rng).bfloat16(),
             "model.norm.weight": torch.ones(32, dtype=torch.bfloat16)}
    return save_nvfp4_checkpoint(out, config={"architectures": ["LlamaForCausalLM"]}, dense=dense,
                                 linears={P: quantize(torch.randn(32, 64, generator=rng))},
                                 input_scales={P: torch.tensor(0.01)}, **kw)


# ---------------------------------------------------------------- 2. --overwrite
def test_overwrite_removes_every_file_of_the_old_checkpoint(tmp_path, rng):
    toks = tmp_path / "tok"
    toks.mkdir()
    (toks / "tokenizer_config.json").write_text('{"new": true}')
    (toks / "special_tokens_map.json").write_text('{"eos_token": "<old>"}')
    out = _save(tmp_path / "ck", rng, tokenizer_files=[toks / "tokenizer_config.json",
                                                      toks / "special_tokens_map.json"])
    stale = ["generation_config.json", "chat_template.jinja", "tokenizer.model", "vocab.json",
             "merges.txt", "added_tokens.json", "model-00002-of-00002.safetensors"]
    for name in stale:
        (out / name).write_text("stale")
    (out / "additional_chat_templates").mkdir()
    (out / "additional_chat_templates" / "tool_use.jinja").write_text("stale")
    (out / "notes.txt").write_text("mine")  # not a checkpoint file: kept
    (out / "README.md").write_text("mine")
    _save(out, rng, tokenizer_files=[toks / "tokenizer_config.json"], overwrite=True)
    left = sorted(p.name for p in out.iterdir())
    assert left == ["README.md", "config.json", "hf_quant_config.json", "model.safetensors", "notes.txt",
                    "tokenizer_config.json"]
    assert (out / "notes.txt").read_text() == "mine"
    load_nvfp4_checkpoint(out)


def test_a_folder_with_only_hf_quant_config_needs_overwrite(tmp_path, rng):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "hf_quant_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"holds a checkpoint \(hf_quant_config.json.*overwrite"):
        _save(out, rng)
    _save(out, rng, overwrite=True)


def test_overwrite_with_bad_arguments_keeps_the_old_checkpoint(tmp_path, rng):
    out = _save(tmp_path / "ck", rng)
    (out / "generation_config.json").write_text("{}")
    before = sorted(p.name for p in out.iterdir())
    bad = quantize(torch.randn(2, 16, 64, generator=rng))  # not 2-D: found after the old delete was
    with pytest.raises(CheckpointError, match="must be 2-D"):
        save_nvfp4_checkpoint(out, config={}, dense={}, linears={P: bad},
                              input_scales={P: torch.tensor(0.01)}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before


# ---------------------------------------------------------------- 3. one tensor, two files
def test_a_tensor_in_two_weight_files_is_refused(tmp_path, rng):
    out = _save(tmp_path / "ck", rng)
    norm = torch.ones(32, dtype=torch.bfloat16) * 2
    save_file({"model.norm.weight": norm}, str(out / "zz-old.safetensors"))
    msg = (f"tensor 'model.norm.weight' is in two weight files, {out / 'model.safetensors'} and "
           f"{out / 'zz-old.safetensors'}, so which one the model uses is unknown")
    with pytest.raises(CheckpointError) as e:
        read_safetensors(safetensors_files(out))
    assert str(e.value).startswith(msg)
    assert "remove the file that does not belong to this model" in str(e.value)
    with pytest.raises(CheckpointError, match="is in two weight files"):
        load_nvfp4_checkpoint(out)


def test_an_hf_folder_with_a_tensor_in_two_files_is_refused(tmp_path):
    from resetfp4.engine.loader import read_source

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(PRESETS["smollm2-135m"].to_hf_config()))
    save_file({"model.norm.weight": torch.ones(4)}, str(d / "a.safetensors"))
    save_file({"model.norm.weight": torch.zeros(4)}, str(d / "b.safetensors"))
    with pytest.raises(CheckpointError, match=r"'model.norm.weight' is in two weight files, .*a\.safetensors "
                       r"and .*b\.safetensors"):
        read_source(str(d))


# ---------------------------------------------------------------- 4. malformed values
def _with_quantization(tmp_path, rng, edit):
    """A saved checkpoint whose hf_quant_config.json "quantization" went through ``edit``."""
    out = _save(tmp_path / "ck", rng)
    f = out / "hf_quant_config.json"
    qc = json.loads(f.read_text())
    edit(qc["quantization"])
    f.write_text(json.dumps(qc))
    return out, f


@pytest.mark.parametrize("value", [None, "sixteen", "16", 16.9, 16.0, True, 32, [16], {"v": 16}])
def test_group_size_must_be_the_integer_16(tmp_path, rng, value):
    out, f = _with_quantization(tmp_path, rng, lambda q: q.__setitem__("group_size", value))
    with pytest.raises(CheckpointError) as e:
        read_quant_config(out)
    assert str(e.value).startswith(
        f"{f}: quantization.group_size must be the integer 16 (NVFP4 scales blocks of 16 weights), "
        f"got {value!r}; ")


def test_group_size_16_or_absent_is_read(tmp_path, rng):
    out, _ = _with_quantization(tmp_path, rng, lambda q: q.pop("group_size"))
    assert read_quant_config(out)["quantization"]["quant_algo"] == "NVFP4"


@pytest.mark.parametrize("value", [5, None, ["model.safetensors"], "../model.safetensors",
                                   "/etc/model.safetensors", "sub/../../x.safetensors", "..\\x.safetensors",
                                   "C:\\x.safetensors", "config.json", ""])
def test_weight_map_values_must_name_a_shard_in_the_folder(tmp_path, rng, value):
    out = _save(tmp_path / "ck", rng)
    index = out / "model.safetensors.index.json"
    weight_map = {"model.norm.weight": "model.safetensors", "model.embed_tokens.weight": value}
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(CheckpointError) as e:
        load_nvfp4_checkpoint(out)
    assert str(e.value).startswith(
        f"{index}: weight_map['model.embed_tokens.weight'] is {value!r}; each weight_map value must name a "
        f"*.safetensors shard inside {out}")


def test_an_index_that_is_not_an_object_is_refused(tmp_path, rng):
    out = _save(tmp_path / "ck", rng)
    (out / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="has no 'weight_map' object"):
        load_nvfp4_checkpoint(out)


# ---------------------------------------------------------------- 5. unsupported config variants
WHERE = "/m/config.json"
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}
QWEN25_CODER_15B = {
    **QWEN25_05B, "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12,
    "num_hidden_layers": 28, "sliding_window": 131072, "max_window_layers": 21,
}
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
    "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}
SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192,
    "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 100000,
    "tie_word_embeddings": True, "vocab_size": 49152,
}


@pytest.mark.parametrize("cfg", [QWEN25_05B, QWEN25_CODER_15B, QWEN3_8B, SMOLLM2,
                                 *(a.to_hf_config() for a in PRESETS.values())])
def test_published_configs_still_load(cfg):
    ModelArgs.from_hf_config(cfg, WHERE)


@pytest.mark.parametrize(("key", "value"), [("hidden_act", "gelu"), ("hidden_act", "gelu_pytorch_tanh"),
                                            ("hidden_act", "relu"), ("hidden_act", None),
                                            ("hidden_activation", "gelu_pytorch_tanh")])
def test_an_activation_other_than_silu_is_refused(key, value):
    with pytest.raises(ValueError) as e:
        ModelArgs.from_hf_config({**SMOLLM2, key: value}, WHERE)
    assert str(e.value) == (
        f"{WHERE}: {key} {value!r} is not supported: the engine's MLP runs SiLU ({key} 'silu' or 'swish') "
        "only, so it would compute a different model; this model cannot be served by resetfp4")


@pytest.mark.parametrize("cfg", [{**SMOLLM2, "hidden_act": "swish"},
                                 {**QWEN3_8B, "hidden_activation": "silu"},
                                 {k: v for k, v in SMOLLM2.items() if k != "hidden_act"}])
def test_silu_under_any_name_loads(cfg):
    ModelArgs.from_hf_config(cfg, WHERE)


@pytest.mark.parametrize(
    ("changes", "layers"),
    [
        ({"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 0}, "24 of the 24 layers "
         "(from layer 0)"),
        ({"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 21}, "3 of the 24 layers "
         "(from layer 21)"),
        ({"use_sliding_window": True, "max_window_layers": 21, "sliding_window": ...},  # absent: HF's 4096
         "3 of the 24 layers"),
        ({"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 99,
          "layer_types": ["full_attention"] * 23 + ["sliding_attention"]},
         "1 of the 24 layers (from layer 23)"),
    ],
)
def test_sliding_window_attention_in_effect_is_refused(changes, layers):
    cfg = {k: v for k, v in {**QWEN25_05B, **changes}.items() if v is not ...}
    with pytest.raises(ValueError) as e:
        ModelArgs.from_hf_config(cfg, WHERE)
    msg = str(e.value)
    assert msg.startswith(f"{WHERE}: use_sliding_window is true with sliding_window ")
    assert f"< max_position_embeddings 32768, so transformers runs sliding-window attention on {layers}" \
        in msg
    assert "the engine runs full causal attention on every layer" in msg
    assert msg.endswith("this model cannot be served by resetfp4")


def test_sliding_window_is_refused_for_qwen3_too():
    with pytest.raises(ValueError, match="sliding-window attention is not supported"):
        ModelArgs.from_hf_config({**QWEN3_8B, "use_sliding_window": True, "sliding_window": 4096,
                                  "max_window_layers": 0}, WHERE)


@pytest.mark.parametrize(
    "changes",
    [
        {"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 0},  # not in use
        {"use_sliding_window": True, "sliding_window": 32768, "max_window_layers": 0},  # window >= positions
        {"use_sliding_window": True, "sliding_window": None, "max_window_layers": 0},
        {"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 24},  # no layer slides
        {"use_sliding_window": True, "sliding_window": 4096, "layer_types": ["full_attention"] * 24},
        {"use_sliding_window": None},
    ],
)
def test_sliding_window_not_in_effect_loads(changes):
    ModelArgs.from_hf_config({**QWEN25_05B, **changes}, WHERE)


def test_llama_ignores_sliding_window_keys_as_transformers_does():
    ModelArgs.from_hf_config({**SMOLLM2, "use_sliding_window": True, "sliding_window": 16}, WHERE)


@pytest.mark.parametrize(("changes", "want"), [
    ({"use_sliding_window": "yes"}, "use_sliding_window must be true or false, got 'yes'"),
    ({"use_sliding_window": True, "sliding_window": "4096", "max_window_layers": 0},
     "sliding_window must be a positive integer or null, got '4096'"),
    ({"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": "0"},
     "max_window_layers must be an integer, got '0'"),
])
def test_malformed_sliding_window_keys_are_refused(changes, want):
    with pytest.raises(ValueError) as e:
        ModelArgs.from_hf_config({**QWEN25_05B, **changes}, WHERE)
    assert str(e.value) == f"{WHERE}: {want}; fix that field of the model's config"
