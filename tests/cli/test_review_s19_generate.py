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
