"""``resetfp4 quantize`` on a tiny random HF folder: writes a ModelOpt folder and proves the round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from resetfp4.cli.main import main
from resetfp4.engine.aliases import smollm2_path
from resetfp4.engine.config import ModelArgs
from resetfp4.engine.loader import gguf_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    args = ModelArgs("qwen2", 49152, 64, 2, 4, 2, 96, 16, tie_embeddings=True, eos_token_ids=(2,))
    d = tmp_path_factory.mktemp("tiny-qwen2")
    g = torch.Generator().manual_seed(0)
    from resetfp4.engine.model import Transformer

    with torch.device("meta"):
        shapes = {n: p.shape for n, p in Transformer(args, torch.float32).named_parameters()}
    sd = {
        n: (torch.randn(s, generator=g) * 0.1 + (1.0 if "norm" in n else 0.0)).to(torch.bfloat16)
        for n, s in shapes.items()
        if n != "lm_head.weight"
    }
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(args.to_hf_config()))
    gguf_tokenizer(smollm2_path()).save_pretrained(str(d))
    return d


def test_quantize_w4a4_round_trip(tiny_dir, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(out), "--device", "cpu", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["verified"] and rep["quant_algo"] == "NVFP4" and rep["linears"] == 14
    assert (out / "hf_quant_config.json").is_file() and (out / "tokenizer.json").is_file()
    qc = json.loads((out / "hf_quant_config.json").read_text())
    assert qc["producer"]["calibration"]["method"] == "max"


def test_quantize_w4a16_human_output(tiny_dir, tmp_path, capsys):
    assert (
        main(
            ["quantize", "--model", str(tiny_dir), "--out", str(tmp_path / "q"), "--w4a16", "--device", "cpu"]
        )
        == 0
    )
    assert "W4A16_NVFP4" in capsys.readouterr().out


def test_quantize_missing_model(tmp_path, capsys):
    assert main(["quantize", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "q")]) == 2
    assert "neither a known alias" in capsys.readouterr().err


def test_quantize_into_an_existing_checkpoint_needs_overwrite(tiny_dir, tmp_path, capsys):
    out = tmp_path / "q"
    base = ["quantize", "--model", str(tiny_dir), "--out", str(out), "--device", "cpu", "--w4a16", "--json"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base) == 2  # refused at once, before quantizing again
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main([*base, "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verified"]
    assert sorted(f.name for f in out.glob("*.safetensors")) == ["model.safetensors"]


def _input_scales(folder):
    from safetensors import safe_open

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            out.update({k: sf.get_tensor(k) for k in sf.keys() if k.endswith("input_scale")})
    return out


def test_quantize_with_own_calibration_data(tiny_dir, tmp_path, capsys):
    """--calib-data replaces the built-in prompts: the scales change, the checkpoint records
    the file (name, sha256, count, token cut), and the round trip still holds."""
    from resetfp4.fileutil import sha256_file

    data = tmp_path / "calib.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"text": "The quick brown fox jumps over the lazy dog. " * 8},
        {"prompt": "Compute 17 * 23 step by step."},
        {"question": "What is the capital of France?"},
        "a bare JSON string also works",
        {"text": ""},  # skipped
    ]) + "\n")
    base = ["quantize", "--model", str(tiny_dir), "--device", "cpu", "--json"]
    assert main([*base, "--out", str(tmp_path / "default")]) == 0
    assert main([*base, "--out", str(tmp_path / "own"), "--calib-data", str(data),
                 "--calib-samples", "3", "--calib-max-tokens", "16"]) == 0
    reps = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines() if line.startswith("{")]
    assert all(r["verified"] for r in reps)
    calib = json.loads((tmp_path / "own" / "hf_quant_config.json").read_text())["producer"]["calibration"]
    assert calib == {"prompts": 3, "max_tokens": 16, "set": "calib.jsonl", "sha256": sha256_file(data),
                     "method": "max"}
    a, b = _input_scales(tmp_path / "default"), _input_scales(tmp_path / "own")
    assert a.keys() == b.keys() and len(a) == 14
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_quantize_calibration_txt_and_sample_count(tiny_dir, tmp_path, capsys):
    data = tmp_path / "calib.txt"
    data.write_text("first prompt\n\nsecond prompt\nthird prompt\n")
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(out), "--device", "cpu", "--json",
                 "--calib-data", str(data), "--calib-samples", "2"]) == 0
    calib = json.loads((out / "hf_quant_config.json").read_text())["producer"]["calibration"]
    assert calib["prompts"] == 2 and calib["set"] == "calib.txt" and calib["max_tokens"] == 256


@pytest.mark.parametrize("setup, args, msg", [
    (None, ["--calib-data", "{d}/missing.jsonl"], "no such file"),
    ("dir", ["--calib-data", "{d}/calib.jsonl"], "is a directory, not a file"),
    ("csv", ["--calib-data", "{d}/calib.csv"], "unknown format '.csv'"),
    ("badjson", ["--calib-data", "{d}/calib.jsonl"], "calib.jsonl:2: not JSON"),
    ("nokey", ["--calib-data", "{d}/calib.jsonl"],
     "needs a string field among ['text', 'prompt', 'question']"),
    ("empty", ["--calib-data", "{d}/calib.jsonl"], "holds no prompt"),
    (None, ["--calib-samples", "9"], "the built-in set has 8 prompts"),
    (None, ["--calib-samples", "0"], "the built-in set has 8 prompts"),
    (None, ["--calib-max-tokens", "0"], "--calib-max-tokens 0: need at least 1"),
    (None, ["--w4a16", "--calib-samples", "2"], "--w4a16 has none"),
])
def test_quantize_bad_calibration_input(tiny_dir, tmp_path, capsys, setup, args, msg):
    d = tmp_path / "data"
    d.mkdir()
    f = d / "calib.jsonl"
    if setup == "dir":
        f.mkdir()
    elif setup == "csv":
        (d / "calib.csv").write_text("a,b\n")
    elif setup == "badjson":
        f.write_text('{"text": "ok"}\n{"text": \n')
    elif setup == "nokey":
        f.write_text('{"content": "hello"}\n')
    elif setup == "empty":
        f.write_text('\n{"text": "  "}\n')
    out = tmp_path / "q"
    argv = ["quantize", "--model", str(tiny_dir), "--out", str(out), "--device", "cpu",
            *[a.format(d=d) for a in args]]
    assert main(argv) == 2
    assert msg in capsys.readouterr().err
    assert not (out / "hf_quant_config.json").exists()


def test_quantized_head_of_a_tied_model_is_untied_in_config(tiny_dir, tmp_path, capsys):
    """tiny_dir ties lm_head to the embeddings; with --lm-head nvfp4 the head is its own NVFP4
    tensor, so config.json must not say tie_word_embeddings (HF / vLLM would drop the head and
    run the embedding matrix); the round trip through our loader still holds."""
    out = tmp_path / "q"
    assert json.loads((tiny_dir / "config.json").read_text())["tie_word_embeddings"] is True
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(out), "--device", "cpu", "--json",
                 "--w4a16", "--lm-head", "nvfp4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verified"]
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    qc = json.loads((out / "hf_quant_config.json").read_text())
    assert "lm_head" not in (qc["quantization"].get("exclude_modules") or [])
