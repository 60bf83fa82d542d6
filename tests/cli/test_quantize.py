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
