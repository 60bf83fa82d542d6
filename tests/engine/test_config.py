import pytest

from resetfp4.engine.config import PRESETS, ModelArgs, preset


def test_from_hf_config_qwen3():
    cfg = {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 4096,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 12288,
        "head_dim": 128,
        "rope_theta": 1000000,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "max_position_embeddings": 40960,
        "eos_token_id": 151645,
    }
    a = ModelArgs.from_hf_config(cfg)
    assert a == PRESETS["qwen3-8b"].__class__(**{**PRESETS["qwen3-8b"].as_dict(), "eos_token_ids": (151645,)})
    assert a.qk_norm and not a.qkv_bias


def test_hf_round_trip_every_preset():
    for name, a in PRESETS.items():
        back = ModelArgs.from_hf_config(a.to_hf_config())
        assert back == a, name


def test_qwen2_has_bias_llama_has_neither():
    assert preset("qwen2.5-coder-0.5b").qkv_bias
    assert not preset("smollm2-135m").qkv_bias and not preset("smollm2-135m").qk_norm


def test_rope_parameters_form_of_transformers_v5():
    cfg = PRESETS["smollm2-135m"].to_hf_config()
    del cfg["rope_theta"]
    cfg["rope_parameters"] = {"rope_theta": 100000.0, "rope_type": "default"}
    assert ModelArgs.from_hf_config(cfg).rope_theta == 100000.0


def test_unknown_architecture_is_clear():
    cfg = PRESETS["smollm2-135m"].to_hf_config()
    cfg["model_type"] = "mamba"
    with pytest.raises(ValueError, match="unknown architecture.*mamba.*supported"):
        ModelArgs.from_hf_config(cfg)
    with pytest.raises(ValueError, match="unknown architecture.*gpt2"):
        ModelArgs.from_gguf_fields({"general.architecture": "gpt2"}, vocab_size=10, tied=True)
    with pytest.raises(ValueError, match="unknown architecture preset"):
        preset("llama-7b")


def test_missing_config_key_is_clear():
    cfg = PRESETS["smollm2-135m"].to_hf_config()
    del cfg["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        ModelArgs.from_hf_config(cfg)


@pytest.mark.parametrize(
    ("key", "value", "rope_type"),
    [
        ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}, "llama3"),
        ("rope_scaling", {"type": "linear", "factor": 2.0}, "linear"),
        ("rope_parameters", {"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}, "yarn"),
    ],
)
def test_rope_scaling_is_refused(key, value, rope_type):
    cfg = PRESETS["smollm2-135m"].to_hf_config()
    cfg[key] = value
    with pytest.raises(ValueError, match=f"RoPE scaling type '{rope_type}' is not supported"):
        ModelArgs.from_hf_config(cfg)


def test_plain_rope_scaling_entries_are_accepted():
    cfg = PRESETS["smollm2-135m"].to_hf_config()
    cfg["rope_scaling"] = None
    assert ModelArgs.from_hf_config(cfg).rope_theta == PRESETS["smollm2-135m"].rope_theta
    cfg["rope_scaling"] = {"rope_type": "default"}
    assert ModelArgs.from_hf_config(cfg).rope_theta == PRESETS["smollm2-135m"].rope_theta


def _gguf_fields(**extra):
    return {
        "general.architecture": "llama",
        "llama.attention.head_count": 4,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 96,
        **extra,
    }


def test_gguf_rope_scaling_is_refused():
    assert ModelArgs.from_gguf_fields(_gguf_fields(), 100, True).dim == 64
    plain = _gguf_fields(**{"llama.rope.scaling.type": "none"})
    assert ModelArgs.from_gguf_fields(plain, 100, True).dim == 64
    with pytest.raises(ValueError, match="GGUF llama.rope.scaling.type.*'yarn' is not supported"):
        ModelArgs.from_gguf_fields(_gguf_fields(**{"llama.rope.scaling.type": "yarn"}), 100, True)
