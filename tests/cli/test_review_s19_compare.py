"""Session-19 review findings in `resetfp4 compare` and the statistics it prints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from resetfp4.cli.main import main
from resetfp4.eval.stats import accuracy_ci, paired_bootstrap, wilson_interval


def _run(folder: Path, scores: dict[str, float], precision: str = "nvfp4-w4a4", temp: float = 0.6) -> str:
    """A minimal eval run folder (what load_run reads)."""
    folder.mkdir(parents=True)
    (folder / "problems.jsonl").write_text(
        "".join(json.dumps({"id": k, "score": v}) + "\n" for k, v in scores.items()))
    acc = accuracy_ci([[v >= 0.5] for v in scores.values()])
    summary = {"task": "t", "n_problems": len(scores), "samples_per_problem": 1, "accuracy": acc,
               "pass_at_k": acc["mean"], "maj_at_k": acc["mean"], "avg_length_tokens": 10.0,
               "truncation_rate": 0.0, "precision": precision,
               "config": {"sampler": {"mode": "fixed", "temperature": temp}, "task_fingerprint": "x"}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return str(folder)


def test_all_right_is_no_zero_width_interval():
    acc = accuracy_ci([[True] * 4] * 50)
    lo, hi = acc["ci95"]
    assert acc["mean"] == 1.0 and hi == 1.0 and 0.92 < lo < 0.94  # Wilson, 50 of 50
    assert accuracy_ci([[False] * 4] * 50)["ci95"][0] == 0.0
    assert accuracy_ci([[False] * 4] * 50)["ci95"][1] == pytest.approx(1 - lo)
    assert wilson_interval(1.0, 50) == pytest.approx((lo, 1.0))
    mixed = accuracy_ci([[True], [False]] * 25)  # a spread: the normal interval as before
    half = 1.959964 * mixed["stderr"]
    assert mixed["ci95"] == pytest.approx([0.5 - half, 0.5 + half])


def test_paired_bootstrap_p_is_never_zero_and_one_problem_has_no_ci():
    a = {str(i): 0.0 for i in range(40)}
    b = {str(i): 1.0 for i in range(40)}
    res = paired_bootstrap(a, b, n_boot=1000)
    assert res["diff"] == 1.0 and res["p_value"] == pytest.approx(2 / 1001)
    one = paired_bootstrap({"x": 0.0}, {"x": 1.0}, n_boot=1000)
    assert one["diff"] == 1.0 and math.isnan(one["p_value"]) and all(math.isnan(v) for v in one["ci95"])


def test_compare_one_problem_writes_strict_json(tmp_path, capsys):
    a = _run(tmp_path / "a", {"p": 0.0})
    b = _run(tmp_path / "b", {"p": 1.0}, temp=1.0)
    assert main(["compare", a, b, "--n-boot", "200", "--json", str(tmp_path / "c.json")]) == 0
    text = (tmp_path / "c.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["paired_vs_first"][0]["p_value"] is None


def test_compare_default_labels_that_coincide_get_the_folder_name(tmp_path, capsys):
    runs = [_run(tmp_path / n, {"p1": 1.0, "p2": 0.0, "p3": 1.0}) for n in ("seed0", "seed1", "seed2")]
    assert main(["compare", *runs, "--n-boot", "200", "--json", str(tmp_path / "c.json")]) == 0
    labels = json.loads((tmp_path / "c.json").read_text())["labels"]
    assert labels == [f"nvfp4-w4a4 T=0.6 [seed{i}]" for i in range(3)]


def test_compare_given_labels_must_be_distinct(tmp_path, capsys):
    a, b = _run(tmp_path / "a", {"p": 1.0}), _run(tmp_path / "b", {"p": 0.0})
    assert main(["compare", a, b, "--labels", "x,x"]) == 2
    assert "--labels must be distinct; 'x' is given 2 times" in capsys.readouterr().err


@pytest.mark.parametrize("extra, msg", [
    (["--analysis", "{t}/an.md"], "--analysis {t}/an.md: give the JSON file"),
    (["--analysis", "{t}/res.json", "--markdown", "{t}/res.md"],
     "--analysis (its .md) and --markdown both write"),
    (["--json", "{t}/o.json", "--markdown", "{t}/o.json"], "--markdown and --json both write"),
])
def test_compare_outputs_must_not_overwrite_each_other(tmp_path, capsys, extra, msg):
    a, b = _run(tmp_path / "a", {"p": 1.0}), _run(tmp_path / "b", {"p": 0.0})
    assert main(["compare", a, b, *[e.format(t=tmp_path) for e in extra]]) == 2
    assert msg.format(t=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "res.md").exists() and not (tmp_path / "o.json").exists()



def test_a_cut_last_record_says_to_rerun_not_overwrite(tmp_path):
    from resetfp4.eval.report import load_run

    a = _run(tmp_path / "a", {"p1": 1.0, "p2": 0.0})
    probs = Path(a) / "problems.jsonl"
    probs.write_text(probs.read_text() + '{"id": "p3", "sco')  # interrupted mid-write
    with pytest.raises(ValueError, match="the last record is cut off .* rerun the same `resetfp4 eval`"):
        load_run(a)
    probs.write_text('{"id": "p1", "sco\n' + '{"id": "p2", "score": 1.0}\n')  # damage elsewhere
    with pytest.raises(ValueError, match="malformed record"):
        load_run(a)


def test_calibrate_grid_values_that_share_a_folder_are_refused():
    from resetfp4.eval.calibrate import calibrate

    with pytest.raises(ValueError, match=r"names T_low 0\.123457 twice"):
        calibrate(None, None, None, None, None, "out", t_low_grid=(0.1234567, 0.1234568))
