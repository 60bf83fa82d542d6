"""Tiny CPU smoke run of ``resetfp4 bench sampler`` through the real CLI."""

from __future__ import annotations

import json

from resetfp4.cli.main import main


def test_bench_sampler_smoke(tmp_path, capsys):
    out = tmp_path / "s.json"
    decode = tmp_path / "decode.json"
    decode.write_text(json.dumps({"results": [{"batch": 2, "format": "nvfp4-w4a16", "decode_step_ms": 5.0},
                                              {"batch": 2, "format": "bf16", "decode_step_ms": 9.0}]}))
    rc = main(["bench", "sampler", "--device", "cpu", "--batch", "1", "2", "--vocab", "512", "--iters", "2",
               "--repeats", "1", "--decode-json", str(decode), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"]
    assert [(r["batch"], r["mode"]) for r in res] == [(1, "fixed"), (1, "reset"), (2, "fixed"), (2, "reset")]
    assert all(r["eager_us"] > 0 for r in res)
    assert res[3]["decode_step_ms"] == 5.0 and res[3]["overhead_pct_of_decode"] is not None
    assert res[1]["decode_step_ms"] is None
    assert "% decode" in capsys.readouterr().out


def test_bench_sampler_bad_decode_arg(tmp_path, capsys):
    rc = main(["bench", "sampler", "--device", "cpu", "--batch", "1", "2", "--vocab", "64", "--iters", "1",
               "--repeats", "1", "--decode-step-ms", "1", "2", "3", "--json", str(tmp_path / "x.json")])
    assert rc == 2 and "one per batch" in capsys.readouterr().err
