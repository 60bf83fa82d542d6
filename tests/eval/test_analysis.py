"""Step statistics (resetfp4.eval.analysis), the compact token dump, packing, and
`resetfp4 compare --analysis/--vs/--recovery` on small synthetic run folders."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from resetfp4.cli.main import main
from resetfp4.eval import pack as pack_mod
from resetfp4.eval.analysis import (
    Policy,
    analysis_markdown,
    analyze_run,
    regimes,
    step_lengths,
    write_tokens_npz,
)
from resetfp4.eval.datasets import Problem, Task
from resetfp4.eval.runner import EvalConfig, run_eval
from resetfp4.sampling.config import SamplerConfig
from resetfp4.sampling.policy import reset_temperatures


def make_task(n: int) -> Task:
    probs = [
        Problem(id=f"q{i}", question=f"Question q{i}: what is {i} + {i}?", answer=str(2 * i))
        for i in range(n)
    ]
    return Task(name="toy", problems=probs)


def test_replayed_regime_matches_the_policy_oracle():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 300))
        h = rng.exponential(0.5, n) * (rng.random(n) < 0.6)
        st = rng.random(n) < 0.05
        for w in (3, 32):
            t = reset_temperatures(
                torch.tensor(h), torch.tensor(st), t_low=0.3, t_high=1.0, tau0=0.4, window=w
            )
            _, hot = regimes(h, st, Policy(tau0=0.4, t_high=1.0, window=w))
            assert np.array_equal(hot, t.numpy() == np.float32(1.0))


def test_step_lengths_treat_token_0_as_a_start():
    assert step_lengths(np.array([False, False, True, False, True])).tolist() == [2, 2, 1]
    assert step_lengths(np.array([True])).tolist() == [1]
    assert step_lengths(np.zeros(0, bool)).tolist() == []


def _write_run(path, sampler: dict, samples: list[dict]) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"sampler": sampler}))
    (path / "tokens.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def _reset_sample(pid, h, starts, correct, pol: Policy, t_low=0.3):
    t = reset_temperatures(
        torch.tensor(h),
        torch.tensor(starts),
        t_low=t_low,
        t_high=pol.t_high,
        tau0=pol.tau0,
        window=pol.window,
    )
    return {
        "id": pid,
        "sample": 0,
        "correct": correct,
        "entropies": h,
        "temperatures": t.tolist(),
        "starts": starts,
    }


POL = Policy(tau0=0.5, t_high=1.0, window=2)
RESET_CFG = {"mode": "reset", "t_low": 0.3, "tau0": 0.5, "t_high": 1.0, "window": 2}
# entropies exactly representable in float16, so tokens.npz gives the same statistics
H = [
    [0.0, 0.0, 2.0, 0.0, 0.0, 1.25, 0.0, 0.5],
    [0.0, 0.25, 0.0, 0.0],
    [1.5, 2.0, 0.0, 3.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0],
]
S = [
    [True, False, False, True, False, False, False, True],
    [True, False, True, False],
    [True, False, False, False, True, False],
    [True, False, False, False, False],
]


def test_analysis_of_a_reset_run_by_hand(tmp_path):
    recs = [_reset_sample(f"p{i}", h, s, i % 2 == 0, POL) for i, (h, s) in enumerate(zip(H, S, strict=True))]
    _write_run(tmp_path / "r", RESET_CFG, recs)
    a = analyze_run(tmp_path / "r")
    hot = [np.isclose(r["temperatures"], 1.0) for r in recs]
    n_tok = sum(len(h) for h in H)
    assert a["hot_source"] == "sampled" and a["replay_agreement"] == 1.0
    assert a["n_samples"] == 4 and a["n_tokens"] == n_tok
    assert a["hot_share"] == pytest.approx(sum(x.sum() for x in hot) / n_tok)
    assert a["steps_per_sample"]["mean"] == pytest.approx((3 + 2 + 2 + 1) / 4)
    assert a["tokens_per_step"]["mean"] == pytest.approx(n_tok / 8)
    assert sum(a["hot_position_tenths"]) == pytest.approx(1.0)
    e = np.concatenate([np.array(h) for h in H])
    assert a["entropy"]["p80"] == pytest.approx(np.percentile(e, 80))
    # the hot tokens are split between high- and low-entropy steps
    hot_in = a["share_of_hot_from_high_steps"]
    assert 0.0 <= hot_in <= 1.0
    # quartiles: 4 samples -> one per group, ranked by hot share; sample 3 (all 0) is least hot
    q = a["accuracy_by_hot_quartile"]
    assert [g["n"] for g in q] == [1, 1, 1, 1]
    assert q[0]["hot_share_max"] == 0.0 and q[0]["accuracy"] == 0.0  # sample p3 is wrong
    assert [g["hot_share_min"] for g in q] == sorted(g["hot_share_min"] for g in q)
    md = analysis_markdown([a])
    assert md.count("| r |") == 3  # one row in each of the three tables


def test_fixed_run_needs_a_policy_and_is_replayed(tmp_path):
    recs = [
        {
            "id": f"p{i}",
            "sample": 0,
            "correct": True,
            "entropies": h,
            "temperatures": [0.6] * len(h),
            "starts": s,
        }
        for i, (h, s) in enumerate(zip(H, S, strict=True))
    ]
    _write_run(tmp_path / "f", {"mode": "fixed", "temperature": 0.6}, recs)
    with pytest.raises(ValueError, match="replay"):
        analyze_run(tmp_path / "f")
    a = analyze_run(tmp_path / "f", POL)
    ref = [_reset_sample(f"p{i}", h, s, True, POL) for i, (h, s) in enumerate(zip(H, S, strict=True))]
    n_hot = sum(int(np.isclose(r["temperatures"], 1.0).sum()) for r in ref)
    assert a["hot_source"] == "replayed" and a["hot_share"] == pytest.approx(n_hot / sum(map(len, H)))
    # no agreement figure for a replayed run: its hot tokens are the replay (100% by construction)
    assert a["replay_agreement"] is None


def test_tokens_npz_roundtrip_gives_the_same_analysis(tmp_path):
    recs = [_reset_sample(f"p{i}", h, s, i < 2, POL) for i, (h, s) in enumerate(zip(H, S, strict=True))]
    _write_run(tmp_path / "r", RESET_CFG, recs)
    before = analyze_run(tmp_path / "r")
    write_tokens_npz(tmp_path / "r")
    (tmp_path / "r" / "tokens.jsonl").unlink()
    after = analyze_run(tmp_path / "r")
    assert after == before
    (tmp_path / "r" / "tokens.npz").unlink()
    with pytest.raises(FileNotFoundError, match="--dump-tokens"):
        analyze_run(tmp_path / "r")


def _runs(tmp_path, fe):
    """Fake-engine runs: low (30 problems, fixed), high (30, fixed), treated (first 12, ReSET)."""
    full, head = make_task(30), make_task(12)
    acc = {"low": 0.3, "high": 0.8, "treated": 0.6}
    cfg = EvalConfig(samples=2, max_new_tokens=16, batch_size=8, trace=True)
    fixed = SamplerConfig(mode="fixed", temperature=0.6)
    rs = SamplerConfig(mode="reset", t_low=0.3, tau0=0.7, t_high=1.0, window=4)
    for name, task, sp in (("low", full, fixed), ("high", full, fixed), ("treated", head, rs)):
        eng = fe({p.question: p.answer for p in full.problems}, accuracy=lambda s, a=acc[name]: a)
        run_eval(eng, task, sp, cfg, tmp_path / name)
    return [tmp_path / n for n in ("low", "high", "treated")]


def test_compare_analysis_vs_and_two_recoveries(tmp_path, capsys, fake_engine_cls):
    low, high, treated = _runs(tmp_path, fake_engine_cls)
    rc = main(
        [
            "compare", str(low), str(high), str(treated), "--n-boot", "200",
            "--labels", "low,high,treated",
            "--vs", str(high),
            "--recovery", str(low), str(high), str(treated),
            "--recovery", str(low), str(high), str(high),
            "--json", str(tmp_path / "c.json"),
            "--markdown", str(tmp_path / "t.md"),
            "--analysis", str(tmp_path / "an.json"),
            "--entropy-hist", str(tmp_path / "ent.png"),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    comp = json.loads((tmp_path / "c.json").read_text())
    assert comp["paired_vs_first"][1]["n_problems"] == 12  # the 12-problem run pairs on its ids
    vs = comp["paired_vs"]["high"]
    assert vs[1] is None and vs[0]["n_problems"] == 30 and vs[2]["n_problems"] == 12
    assert [r["n_problems"] for r in comp["recoveries"]] == [12, 30]
    assert comp["recoveries"][1]["share"] == pytest.approx(1.0) and comp["recovery"] == comp["recoveries"][0]
    assert "vs high: diff [95% CI]" in (tmp_path / "t.md").read_text()
    an = json.loads((tmp_path / "an.json").read_text())
    assert [a["hot_source"] for a in an] == ["replayed", "replayed", "sampled"]
    assert all(a["policy"]["tau0"] == 0.7 for a in an)  # fixed runs replayed with the ReSET run's params
    assert (tmp_path / "an.md").read_text().startswith("| run |") and "hot by tenth" in out


def test_compare_analysis_with_params_file_and_without_dumps(tmp_path, capsys, fake_engine_cls):
    low, high, _ = _runs(tmp_path, fake_engine_cls)
    (tmp_path / "p.json").write_text(json.dumps({"t_low": 0.2, "tau0": 1.5}))
    args = ["compare", str(low), str(high), "--n-boot", "100", "--analysis", str(tmp_path / "a.json")]
    assert main([*args, "--params", str(tmp_path / "p.json")]) == 0
    assert {a["policy"]["tau0"] for a in json.loads((tmp_path / "a.json").read_text())} == {1.5}
    for r in (low, high):
        (r / "tokens.jsonl").unlink()
    assert main(args) != 0
    assert "tokens.jsonl or tokens.npz" in capsys.readouterr().err


def _members(parts) -> dict[str, bytes]:
    data = b"".join(p.read_bytes() for p in sorted(parts))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_pack_runs_splits_and_drops_token_dumps_when_too_big(tmp_path, fake_engine_cls):
    low, high, treated = _runs(tmp_path, fake_engine_cls)
    rng = np.random.default_rng(0)  # a big, incompressible dump in one run
    big = {"id": "x", "sample": 0, "correct": True, "entropies": rng.random(200_000).tolist(),
           "temperatures": [], "starts": []}  # fmt: skip
    (low / "tokens.jsonl").write_text(json.dumps(big) + "\n")
    info = pack_mod.pack_runs(tmp_path, tmp_path / "out", part_mib=0.1, max_parts=10)
    assert info["kept_tokens_npz"] and len(info["parts"]) > 1
    files = _members((tmp_path / "out").glob("study.tgz.*"))
    assert "low/tokens.npz" in files and "treated/problems.jsonl" in files
    assert not any(n.endswith("tokens.jsonl") for n in files)
    small = len(pack_mod._tar_bytes(tmp_path, keep_npz=False))
    info = pack_mod.pack_runs(tmp_path, tmp_path / "out", part_mib=small / pack_mod.MIB, max_parts=1)
    assert not info["kept_tokens_npz"] and info["parts"] == ["study.tgz.000"]
    assert not any(n.endswith("tokens.npz") for n in _members((tmp_path / "out").glob("study.tgz.*")))
    with pytest.raises(RuntimeError, match="copy fewer runs"):
        pack_mod.pack_runs(tmp_path, tmp_path / "out", part_mib=small / pack_mod.MIB / 3, max_parts=2)


def test_resumed_run_merges_npz_and_jsonl_and_repacks_all(tmp_path):
    recs = [_reset_sample(f"p{i}", h, s, i < 2, POL) for i, (h, s) in enumerate(zip(H, S, strict=True))]
    _write_run(tmp_path / "full", RESET_CFG, recs)
    full = analyze_run(tmp_path / "full")
    _write_run(tmp_path / "r", RESET_CFG, recs[:2])  # first machine: p0, p1 -> tokens.npz
    write_tokens_npz(tmp_path / "r")
    (tmp_path / "r" / "tokens.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[1:]))  # p1 again
    merged = analyze_run(tmp_path / "r")
    assert {k: v for k, v in merged.items() if k not in ("run", "label")} == {
        k: v for k, v in full.items() if k not in ("run", "label")
    }
    write_tokens_npz(tmp_path / "r")  # repack: the npz now holds all four samples
    (tmp_path / "r" / "tokens.jsonl").unlink()
    assert analyze_run(tmp_path / "r")["n_samples"] == 4


def test_compare_reads_packed_runs_with_tokens_npz_only(tmp_path, fake_engine_cls):
    low, high, treated = _runs(tmp_path, fake_engine_cls)
    for r in (low, high, treated):
        write_tokens_npz(r)
        (r / "tokens.jsonl").unlink()  # as unpacked from study.tgz parts
    argv = ["compare", str(low), str(treated), "--n-boot", "100", "--entropy-hist", str(tmp_path / "e.png")]
    assert main([*argv, "--analysis", str(tmp_path / "a.json")]) == 0
    assert (tmp_path / "e.png").stat().st_size > 0
    assert [a["n_samples"] for a in json.loads((tmp_path / "a.json").read_text())] == [60, 24]
