"""Session-19 review findings in `resetfp4 generate` and the engine's stop strings."""

from __future__ import annotations

import json
import shutil

import pytest

from resetfp4.cli.main import main
from resetfp4.engine.engine import _stop_prefix_len


@pytest.mark.parametrize("text, stop, held", [
    ("To calculate 7*6, you", [", you multiply"], 5),   # ", you" may start the stop string
    ("To calculate 7*6,", [", you multiply"], 1),
    ("To calculate 7*6", [", you multiply"], 0),
    ("abc", ["xyz", "cd", "bcq"], 2),                   # the longest tail among the strings
    ("", ["x"], 0),
    ("ab", ["ab"], 0),                                  # a whole stop string is cut, not held
])
def test_stop_prefix_tail_is_held_back(text, stop, held):
    assert _stop_prefix_len(text, stop) == held


def test_streamed_text_never_shows_part_of_a_stop_string(capsys):
    """Greedy SmolLM2 writes "... 7*6, you ..."; stopping on ", you multiply" may not print ", you"
    (it used to, when the stop string straddled a read-back)."""
    argv = ["generate", "--prompt", "What is 7*6?", "--sampler", "greedy", "--precision", "fp32",
            "--device", "cpu", "--max-new-tokens", "16"]
    assert main([*argv, "--json"]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"]
    k = full.find(", you")
    if k < 0:
        pytest.skip(f"the greedy text has no ', you' to stop on: {full!r}")
    stop = full[k:k + 14]
    assert main([*argv, "--stop", stop]) == 0
    out = capsys.readouterr().out
    assert out.startswith(full[:k]) and stop[:2] not in out.split("\n")[0][k:]


def test_empty_stop_string_is_refused(capsys):
    assert main(["generate", "--prompt", "Hi", "--sampler", "greedy", "--precision", "fp32", "--device",
                 "cpu", "--max-new-tokens", "2", "--stop", ""]) == 2
    assert "stop strings must be non-empty" in capsys.readouterr().err


@pytest.fixture(scope="module")
def nvfp4_head_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "head"
    assert main(["quantize", "--model", "smollm2-135m-instruct", "--out", str(out), "--w4a16",
                 "--lm-head", "nvfp4", "--device", "cpu", "--no-verify", "--json"]) == 0
    return out


def test_explicit_bf16_head_on_an_nvfp4_head_folder_is_refused(nvfp4_head_folder, capsys):
    capsys.readouterr()
    assert main(["generate", "--model", str(nvfp4_head_folder), "--prompt", "Hi", "--sampler", "greedy",
                 "--device", "cpu", "--max-new-tokens", "2", "--lm-head", "bf16"]) == 2
    assert "holds an NVFP4 lm_head" in capsys.readouterr().err


def test_home_relative_nvfp4_folder_gets_its_own_precision(nvfp4_head_folder, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(nvfp4_head_folder, home / "q")
    monkeypatch.setenv("HOME", str(home))
    capsys.readouterr()
    assert main(["generate", "--model", "~/q", "--prompt", "Hi", "--sampler", "greedy", "--device", "cpu",
                 "--max-new-tokens", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["precision"] == "nvfp4-w4a16"


def test_color_with_json_is_refused(capsys):
    assert main(["generate", "--prompt", "Hi", "--sampler", "greedy", "--precision", "fp32", "--device",
                 "cpu", "--max-new-tokens", "2", "--json", "--color"]) == 2
    assert "--color draws a per-token view" in capsys.readouterr().err


def test_eval_max_seq_len_zero_is_an_error(tmp_path, capsys):
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": 2}) + "\n")
    assert main(["eval", "--task", str(task), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--max-seq-len", "0", "--no-progress"]) == 2
    assert "--max-seq-len must be >= 1, got 0" in capsys.readouterr().err


def test_uppercase_gguf_suffix_is_a_gguf(tmp_path):
    from resetfp4.engine.aliases import smollm2_path
    from resetfp4.engine.loader import locate

    f = tmp_path / "Model.GGUF"
    f.symlink_to(smollm2_path())
    assert locate(str(f)) == ("gguf", f)
    d = tmp_path / "folder"
    d.mkdir()
    (d / "m.GGUF").symlink_to(smollm2_path())
    assert locate(str(d)) == ("gguf", d / "m.GGUF")


def test_null_num_key_value_heads_means_one_per_head():
    from resetfp4.engine.config import ModelArgs

    cfg = {"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1,
           "num_attention_heads": 4, "num_key_value_heads": None, "intermediate_size": 48,
           "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "eos_token_id": 2}
    assert ModelArgs.from_hf_config(cfg).n_kv_heads == 4
