"""Bad config.json values: a clear error naming the file and the field, never a bare traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from resetfp4.engine.config import PRESETS, ModelArgs
from resetfp4.engine.loader import load_tokenizer, read_source

WHERE = "/m/config.json"


def _cfg(**changes):
    cfg = PRESETS["smollm2-135m"].to_hf_config()
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("num_attention_heads", 0, "num_attention_heads must be a positive integer, got 0"),
        ("num_attention_heads", -3, "num_attention_heads must be a positive integer, got -3"),
        ("hidden_size", "576", "hidden_size must be a positive integer, got '576'"),
        ("num_hidden_layers", 0, "num_hidden_layers must be a positive integer"),
        ("vocab_size", 1.5, "vocab_size must be a positive integer, got 1.5"),
        ("intermediate_size", True, "intermediate_size must be a positive integer, got True"),
        ("num_key_value_heads", 0, "num_key_value_heads must be a positive integer"),
        ("max_position_embeddings", 0, "max_position_embeddings must be a positive integer"),
        ("rms_norm_eps", -1, "rms_norm_eps must be a finite number > 0, got -1"),
        ("rms_norm_eps", 0.0, "rms_norm_eps must be a finite number > 0"),
        ("rope_theta", "abc", "rope_theta must be a finite number > 0, got 'abc'"),
        ("rope_theta", float("inf"), "rope_theta must be a finite number > 0, got inf"),
        ("tie_word_embeddings", "false", "tie_word_embeddings must be true or false"),
        ("eos_token_id", [2, "x"], "eos_token_id must be a token id"),
        ("bos_token_id", -1, "bos_token_id must be a token id"),
    ],
)
def test_bad_field_names_file_and_field(field, value, want):
    with pytest.raises(ValueError, match=f"^{WHERE}: {want}"):
        ModelArgs.from_hf_config(_cfg(**{field: value}), where=WHERE)


def test_heads_must_divide_hidden_and_kv_heads_divide_heads():
    want = f"{WHERE}: hidden_size 576 is not a multiple of num_attention_heads 7"
    with pytest.raises(ValueError, match=want):
        ModelArgs.from_hf_config(_cfg(num_attention_heads=7, head_dim=None, num_key_value_heads=7), WHERE)
    with pytest.raises(ValueError, match="num_attention_heads 9 is not a multiple of num_key_value_heads 2"):
        ModelArgs.from_hf_config(_cfg(num_key_value_heads=2), WHERE)
    # an explicit head_dim need not be hidden_size / heads (as in Qwen3-0.6B: 1024 / 16 != 128)
    cfg = _cfg(num_attention_heads=7, num_key_value_heads=7, head_dim=64)
    assert ModelArgs.from_hf_config(cfg).head_dim == 64


def test_top_level_must_be_an_object():
    with pytest.raises(ValueError, match=f"{WHERE} holds a JSON list, not an object"):
        ModelArgs.from_hf_config([1, 2], where=WHERE)


def test_valid_configs_still_load():
    for a in PRESETS.values():
        assert ModelArgs.from_hf_config(a.to_hf_config()) == a
    assert ModelArgs.from_hf_config(_cfg(rope_theta=100000, eos_token_id=[1, 2])).eos_token_ids == (1, 2)


def test_model_args_refuses_zero_sizes():
    with pytest.raises(ValueError, match=r"model sizes must be >= 1.*'n_heads': 0"):
        ModelArgs(**{**PRESETS["smollm2-135m"].as_dict(), "n_heads": 0, "head_dim": 0})


def test_folder_config_errors_name_the_file(tiny_folder, tmp_path):
    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    cfg_file = d / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"m/config\.json holds a JSON list, not an object"):
        read_source(str(d))
    cfg_file.write_text(json.dumps({**cfg, "num_attention_heads": 0}))
    with pytest.raises(ValueError, match=r"m/config\.json: num_attention_heads must be a positive integer"):
        read_source(str(d))
    cfg_file.write_text(json.dumps({**cfg, "rms_norm_eps": -1}))
    with pytest.raises(ValueError, match=r"m/config\.json: rms_norm_eps must be a finite number > 0, got -1"):
        read_source(str(d))


def test_tokenizer_config_validation_error_is_clear(tiny_folder, tmp_path):
    # transformers (huggingface_hub strict dataclasses) refuses an int rms_norm_eps while it
    # loads the tokenizer; our own check accepts it (a positive number), so the error is wrapped.
    from resetfp4.engine.loader import _hf_config_errors

    d = shutil.copytree(tiny_folder("llama"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    src = read_source(str(d))
    (d / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1}))
    if not _hf_config_errors():
        pytest.skip("this huggingface_hub does not validate configs strictly")
    with pytest.raises(ValueError, match=r"m/config\.json: transformers refuses it.*rms_norm_eps.*fix that"):
        load_tokenizer(src)
