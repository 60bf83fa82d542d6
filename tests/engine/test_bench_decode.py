"""Smoke run of ``resetfp4 bench decode`` on tiny shapes (CPU or GPU)."""

from __future__ import annotations

import json

from resetfp4.cli.main import main


def test_bench_decode_smoke(tmp_path, capsys):
    out = tmp_path / "d.json"
    argv = [
        "bench",
        "decode",
        "--arch",
        "smollm2-135m",
        "--layers",
        "1",
        "--random-weights",
        "--batch",
        "1,2",
        "--prompt-len",
        "8",
        "--gen-len",
        "3",
        "--precisions",
        "bf16,nvfp4-w4a16",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    d = json.loads(out.read_text())
    assert d["weights"] == "random" and len(d["rows"]) == 2 * 2 * 2
    for r in d["rows"]:
        assert r["tokens_per_s"] > 0 and r["bytes_per_step"] > 0 and r["prefill_ms"] > 0
    nv = next(r for r in d["rows"] if r["precision"] == "nvfp4-w4a16")
    bf = next(r for r in d["rows"] if r["precision"] == "bf16")
    assert nv["bytes_per_step"] < bf["bytes_per_step"]  # 4.5-bit weights read fewer bytes
    assert "RANDOM WEIGHTS" in capsys.readouterr().out


def test_bench_decode_needs_random_weights(capsys):
    assert main(["bench", "decode", "--arch", "smollm2-135m"]) == 2
    assert "--random-weights" in capsys.readouterr().err
    argv = ["bench", "decode", "--random-weights", "--model", "smollm2-135m-instruct"]
    assert main(argv) == 2
    assert "not both" in capsys.readouterr().err
