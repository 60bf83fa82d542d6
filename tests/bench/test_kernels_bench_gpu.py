"""``resetfp4 bench kernels --smoke`` on a GPU, through the real CLI: every column present,
the engine-form check passed, the table printed."""

from __future__ import annotations

import json

import pytest

from resetfp4.cli.main import main

pytestmark = pytest.mark.gpu


def test_bench_kernels_smoke(tmp_path, capsys):
    out = tmp_path / "k.json"
    assert main(["bench", "kernels", "--smoke", "--m", "1", "3", "16", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    want = [(s, m) for s in ("smoke.a", "smoke.b") for m in (1, 3, 16)]
    assert [(r["shape"], r["M"]) for r in rows] == want
    assert res["copy_gbs"] > 0
    for r in rows:
        for tag in ("bf16", "w4a16", "w4a4s", "w4a4", "eng_w4a16", "eng_w4a4"):
            assert r[f"{tag}_us"] > 0, (r["shape"], r["M"], tag)
        assert r["eng_family"] == "qkv"  # smoke shapes run the producer + GEMV form
        assert r["eng_ratio"] == pytest.approx(r["eng_w4a4_us"] / r["eng_w4a16_us"])
        # the engine-form GEMV on the producer's inputs against the op on the same activations:
        # the same codes through the same kernel give the same bits (err 0 here); the bound is
        # the benchmark's own (1e-3, below bf16's 8e-3 output tier), which a systematic
        # producer / quantizer mismatch exceeds
        assert r["eng_check_rel_err_w4a4"] < 1e-3 and r["eng_check_rel_err_w4a16"] < 1e-3
    text = capsys.readouterr().out
    assert "engine form" in text and "eng4us" in text
