"""The ``bench kernels`` table on synthetic rows (CPU): the engine-form columns print where a
row has them, a dash where it has none, and the geomean line names the engine form only
when every row of that M has it."""

from __future__ import annotations

import math

from resetfp4.bench import kernels as bk


def _row(shape: str, m: int, eng: bool) -> dict:
    r = {"shape": shape, "M": m, "bf16_us": 30.0, "w4a16_us": 10.0, "w4a16_gbs": 2500.0,
         "w4a16_pct_copy": 60.0, "w4a16_speedup": 3.0, "w4a4s_us": 11.0, "w4a4s_speedup": 30 / 11,
         "w4a4_us": 13.0, "w4a4_speedup": 30 / 13}
    if eng:
        r.update(eng_w4a16_us=12.0, eng_w4a4_us=12.3, eng_ratio=12.3 / 12.0)
    return r


def test_table_engine_columns(capsys):
    rows = [_row("8B.qkv", 1, True), _row("8B.o", 1, True), _row("8B.qkv", 17, False)]
    bk._print_table(rows, 4000.0)
    out = capsys.readouterr().out.splitlines()
    assert "eng4us" in out[2] and "e4/e16" in out[2]
    assert out[3].split()[-3:] == ["12.0", "12.3", "1.025"]
    assert out[5].split()[-3:] == ["-", "-", "-"]
    m1 = next(line for line in out if line.startswith("M=1:"))
    m17 = next(line for line in out if line.startswith("M=17:"))
    assert "engine form 1.025" in m1 and "static 1.100" in m1
    assert "engine form" not in m17


def test_geomean():
    assert math.isclose(bk._geomean([1.0, 4.0]), 2.0)
