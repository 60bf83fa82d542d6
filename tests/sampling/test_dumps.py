"""Entropy dump JSONL round trip and tau0 calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resetfp4.sampling import EntropyRecord, calibrate_tau0, read_entropy_dump, write_entropy_dump


def test_round_trip(tmp_path):
    recs = [EntropyRecord("a", True, [0.5, 1.25], [0.1, 1.0], [False, True]),
            EntropyRecord("b", None, [2.0])]
    path = tmp_path / "d.jsonl"
    assert write_entropy_dump(path, recs) == 2
    assert read_entropy_dump(path) == recs
    line = path.read_text().splitlines()[0]
    assert all(f'"{k}"' in line for k in ("id", "correct", "entropies", "temperatures", "starts"))


def test_malformed_dump(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "entropies": [1]}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2"):
        read_entropy_dump(path)
    with pytest.raises(ValueError, match="temperatures"):
        EntropyRecord("x", True, [1.0, 2.0], [0.1])


def test_calibrate_tau0():
    rng = np.random.default_rng(0)
    runs = [rng.exponential(0.5, size=n).tolist() for n in (10, 200, 37)]
    want = float(np.percentile(np.concatenate(runs), 80))
    assert calibrate_tau0(runs) == pytest.approx(want)
    assert calibrate_tau0([EntropyRecord(str(i), None, r) for i, r in enumerate(runs)]) == pytest.approx(want)
    assert calibrate_tau0([0.0, 1.0, 2.0, 3.0, 4.0], percentile=50) == 2.0


@pytest.mark.parametrize("arg, kw, match", [([], {}, "no entropies"), ([[1.0, math.nan]], {}, "NaN"),
                                            ([[1.0]], {"percentile": 100}, "percentile")])
def test_calibrate_errors(arg, kw, match):
    with pytest.raises(ValueError, match=match):
        calibrate_tau0(arg, **kw)


def test_non_finite_values_are_strict_json_null(tmp_path):
    # the NaN entropy of an invalid-logits token used to be written as a bare NaN (not JSON)
    import json

    path = tmp_path / "d.jsonl"
    write_entropy_dump(path, [EntropyRecord("a", None, [math.nan, 0.5], [1.0, math.inf])])
    line = path.read_text().splitlines()[0]
    obj = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert obj["entropies"] == [None, 0.5] and obj["temperatures"] == [1.0, None]
    back = read_entropy_dump(path)[0]
    assert math.isnan(back.entropies[0]) and back.entropies[1] == 0.5 and math.isnan(back.temperatures[1])


def test_calibrate_tau0_takes_numpy_and_torch_values():
    torch = pytest.importorskip("torch")
    vals = [0.0, 1.0, 2.0, 3.0, 4.0]
    for arg in (np.asarray(vals, dtype=np.float32), [np.float32(v) for v in vals],
                torch.tensor(vals), [torch.tensor(v) for v in vals], [torch.tensor(vals[:2]), vals[2:]]):
        assert calibrate_tau0(arg, percentile=50) == 2.0
    with pytest.raises(ValueError, match="takes EntropyRecords"):
        calibrate_tau0(["high", "low"])
