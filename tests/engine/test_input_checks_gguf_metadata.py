"""Bad GGUF metadata values: checked as config.json's are (the same code), the error naming the
GGUF file and the metadata key, never a bare traceback or a model built with nonsense sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resetfp4.cli.main import main
from resetfp4.engine.config import ModelArgs
from resetfp4.engine.loader import read_source

FIX = ("the file's metadata is wrong: re-download the file, or convert the original model again "
       "(llama.cpp's convert_hf_to_gguf.py)")
GOOD = {
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.feed_forward_length": 96,
    "llama.context_length": 128,
    "llama.attention.layer_norm_rms_epsilon": 0.5,
    "llama.rope.freq_base": 10000.0,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
}


def _write_gguf(path, **changes):
    """A llama GGUF with the GOOD metadata, ``changes`` applied (None removes a key), and one
    tensor (token_embd.weight: 100 tokens x 64)."""
    from gguf import GGUFWriter

    meta = {**GOOD, **changes}
    w = GGUFWriter(str(path), "llama")
    for key, v in meta.items():
        if v is None:
            continue
        if isinstance(v, bool):
            w.add_bool(key, v)
        elif isinstance(v, int):
            (w.add_int32 if v < 0 else w.add_uint32)(key, v)
        elif isinstance(v, float):
            w.add_float32(key, v)
        elif isinstance(v, str):
            w.add_string(key, v)
        else:
            w.add_array(key, v)
    w.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_good_metadata_loads(tmp_path):
    a = read_source(str(_write_gguf(tmp_path / "m.gguf"))).args
    assert (a.n_layers, a.dim, a.n_heads, a.n_kv_heads, a.head_dim) == (2, 64, 4, 2, 16)
    assert a.intermediate_size == 96
    assert (a.vocab_size, a.max_position, a.norm_eps, a.rope_theta) == (100, 128, 0.5, 10000.0)
    assert (a.bos_token_id, a.eos_token_ids, a.tie_embeddings) == (1, (2,), True)


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("llama.block_count", 0, "a positive integer, got 0"),
        ("llama.block_count", "2", "a positive integer, got '2'"),
        ("llama.embedding_length", -64, "a positive integer, got -64"),
        ("llama.attention.head_count", 0, "a positive integer, got 0"),
        ("llama.attention.head_count_kv", 0, "a positive integer, got 0"),
        ("llama.attention.head_count_kv", [2, 2], "a positive integer, got [2, 2]"),
        ("llama.attention.key_length", -16, "a positive integer, got -16"),
        ("llama.feed_forward_length", True, "a positive integer, got True"),
        ("llama.context_length", 0, "a positive integer, got 0"),
        ("llama.attention.layer_norm_rms_epsilon", -1.0, "a finite number > 0, got -1.0"),
        ("llama.attention.layer_norm_rms_epsilon", 0.0, "a finite number > 0, got 0.0"),
        ("llama.rope.freq_base", math.inf, "a finite number > 0, got inf"),
        ("llama.rope.freq_base", math.nan, "a finite number > 0, got nan"),
        ("llama.rope.freq_base", "1e4", "a finite number > 0, got '1e4'"),
        ("tokenizer.ggml.bos_token_id", -1, "a token id (an integer >= 0), got -1"),
        ("tokenizer.ggml.eos_token_id", "</s>", "a token id (an integer >= 0), got '</s>'"),
    ],
)
def test_bad_value_names_the_file_and_the_key(tmp_path, key, value, want):
    path = _write_gguf(tmp_path / "m.gguf", **{key: value})
    with pytest.raises(ValueError) as e:
        read_source(str(path))
    assert str(e.value) == f"{path}: metadata key {key} must be {want}; {FIX}"


def test_heads_must_divide_hidden_and_kv_heads_divide_heads(tmp_path):
    three = {"llama.attention.head_count": 3, "llama.attention.head_count_kv": 3}
    path = _write_gguf(tmp_path / "m.gguf", **three)
    with pytest.raises(ValueError) as e:
        read_source(str(path))
    assert str(e.value) == (
        f"{path}: metadata key llama.embedding_length 64 is not a multiple of metadata key "
        "llama.attention.head_count 3 (and there is no llama.attention.key_length or "
        f"llama.rope.dimension_count); {FIX}")
    path = _write_gguf(tmp_path / "kv.gguf", **{"llama.attention.head_count_kv": 3})
    with pytest.raises(ValueError) as e:
        read_source(str(path))
    assert str(e.value) == (
        f"{path}: metadata key llama.attention.head_count 4 is not a multiple of metadata "
        f"key llama.attention.head_count_kv 3; {FIX}")
    # a head size given by key_length (or rope.dimension_count) need not be hidden / heads
    path = _write_gguf(tmp_path / "hd.gguf", **three, **{"llama.rope.dimension_count": 32})
    assert read_source(str(path)).args.head_dim == 32


def test_missing_key_names_the_file(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", **{"llama.block_count": None})
    with pytest.raises(ValueError) as e:
        read_source(str(path))
    assert str(e.value) == (
        f"{path}: GGUF metadata lacks 'llama.block_count'; the file may be corrupt or not a causal LM")


def test_generate_reports_it_before_any_weight_is_used(tmp_path, capsys):
    path = _write_gguf(tmp_path / "m.gguf", **{"llama.attention.head_count": 0})
    argv = ["generate", "--model", str(path), "--device", "cpu", "--precision", "fp32", "--prompt", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"resetfp4 generate: error: {path}: metadata key llama.attention.head_count must be a positive " \
           "integer, got 0" in err, err


def test_fields_dict_without_a_file_name():
    fields = {"general.architecture": "llama", **GOOD, "llama.block_count": 2.0}  # integral float: 2
    assert ModelArgs.from_gguf_fields(fields, 100, True).n_layers == 2
    with pytest.raises(ValueError, match=r"^the GGUF file: metadata key llama\.block_count must be a pos"):
        ModelArgs.from_gguf_fields({**fields, "llama.block_count": 2.5}, 100, True)
    with pytest.raises(ValueError, match=r"unknown architecture: x\.gguf has GGUF general\.architecture="):
        ModelArgs.from_gguf_fields({"general.architecture": "gpt2"}, 100, True, where="x.gguf")
