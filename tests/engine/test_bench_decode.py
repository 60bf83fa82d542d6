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


def test_critical_path_charges_only_exposed_time():
    from resetfp4.bench.decode import critical_path

    # A GEMV launched early (PDL) at 2 while the producer runs 0..5; it ends at 12. Then a
    # 1 µs gap and attention 13..17, fully inside it a second attention kernel 14..16.
    spans = [(0.0, 5.0, "prod"), (2.0, 12.0, "gemv"), (13.0, 17.0, "attn"), (14.0, 16.0, "attn")]
    got = critical_path(spans)
    assert got == {"gemv": 7.0, "prod": 5.0, "attn": 4.0, "idle (gaps)": 1.0}
    assert sum(got.values()) == 17.0  # the charges add up to the span
    # Per call: two identical calls shifted by 20 µs, averaged (the 3 µs between them is idle).
    two = spans + [(a + 20, b + 20, c) for a, b, c in spans]
    assert critical_path(two, reps=2) == {"gemv": 7.0, "prod": 5.0, "attn": 4.0, "idle (gaps)": 2.5}
    assert critical_path([]) == {}


def test_batch_list_is_checked():
    import pytest

    from resetfp4.bench.decode import parse_batches

    assert parse_batches("8,1,4,1") == [1, 4, 8]
    with pytest.raises(ValueError, match="comma-separated integers.*'1,x'"):
        parse_batches("1,x")
    with pytest.raises(ValueError, match=r"between 1 and 256.*\[300\]"):
        parse_batches("1,300")
    with pytest.raises(ValueError, match=r"\[0\]"):
        parse_batches("0")
