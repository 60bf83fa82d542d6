"""Tiny CPU smoke run of ``resetfp4 bench sampler`` through the real CLI."""

from __future__ import annotations

import json

from resetfp4.cli.main import main


def test_bench_sampler_smoke(tmp_path, capsys):
    out = tmp_path / "s.json"
    decode = tmp_path / "decode.json"
    decode.write_text(json.dumps({"rows": [{"batch": 2, "precision": "nvfp4-w4a16", "ms_per_step": 5.0},
                                           {"batch": 2, "precision": "bf16", "ms_per_step": 9.0}]}))
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


def _rec(batch, precision, sampler, graphs, compiled, ms):
    return {"batch": batch, "precision": precision, "sampler": sampler, "graphs": graphs,
            "compiled": compiled, "ms_per_step": ms}


def test_bench_sampler_decode_record_is_like_for_like(tmp_path):
    # `bench decode` rows (as in bench_results/decode_*.json): ReSET rows and eager rows came first
    # and were taken because the text held "nvfp4"; the precision is now asked for, and the
    # fixed-sampler, graphed, compiled step preferred
    decode = tmp_path / "decode.json"
    rows = [_rec(1, "bf16", "fixed", True, True, 9.0), _rec(1, "nvfp4-w4a16", "reset", True, False, 6.2),
            _rec(1, "nvfp4-w4a16", "fixed", True, True, 4.0), _rec(1, "nvfp4-w4a4", "fixed", True, True, 4.2)]
    decode.write_text(json.dumps({"benchmark": "decode", "rows": rows}))
    base = ["bench", "sampler", "--device", "cpu", "--batch", "1", "--vocab", "256", "--iters", "1",
            "--repeats", "1", "--decode-json", str(decode)]
    for extra, ms in (([], 4.0), (["--decode-precision", "nvfp4-w4a4"], 4.2),
                      (["--decode-precision", "bf16"], 9.0)):
        out = tmp_path / "s.json"
        assert main([*base, *extra, "--json", str(out)]) == 0
        reset = json.loads(out.read_text())["results"][1]
        assert reset["decode_step_ms"] == ms
        assert reset["decode_record"]["source"] == str(decode)
        assert reset["decode_record"]["sampler"] == "fixed" and reset["decode_record"]["graphs"] is True


def test_bench_sampler_decode_json_without_the_precision(tmp_path, capsys):
    decode = tmp_path / "decode.json"
    decode.write_text(json.dumps({"rows": [_rec(1, "bf16", "fixed", True, True, 9.0)]}))
    rc = main(["bench", "sampler", "--device", "cpu", "--batch", "1", "--vocab", "64", "--iters", "1",
               "--repeats", "1", "--decode-json", str(decode), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "no record with precision 'nvfp4-w4a16'" in err and "['bf16']" in err
