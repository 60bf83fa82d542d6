"""``resetfp4 compare RUN_A RUN_B [RUN ...]``: paired bootstrap of accuracy differences.

Every run after the first is compared with RUN_A over their common problems (diff = run -
RUN_A, 95% percentile CI, p-value); ``--vs RUN`` adds a second baseline (e.g. reference
T=0.6 next to W4A4 T=0.6). ``--recovery LOW HIGH TREATED`` (repeatable) adds the share of
the HIGH - LOW gap that TREATED recovers (e.g. W4A4 T=0.6, reference T=0.6, W4A4 ReSET).
Runs of different sizes pair on their common problem ids (a 300-problem sensitivity run
against a 1,319-problem baseline pairs on the 300).
``--analysis FILE.json`` adds step statistics of the traced runs (tokens.jsonl or
tokens.npz; see :mod:`resetfp4.eval.analysis`); fixed-temperature runs are replayed with
``--params FILE`` or, by default, the parameters of the first ReSET run given.
Optional outputs: a markdown table, a comparison JSON, accuracy bars and entropy histograms.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from resetfp4.fileutil import finite_or_null


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="paired bootstrap comparison of eval runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="eval run folders; the first is the baseline")
    p.add_argument("--labels", default=None, help="comma-separated labels, one per RUN")
    p.add_argument(
        "--recovery",
        nargs=3,
        action="append",
        metavar=("LOW", "HIGH", "TREATED"),
        default=None,
        help="report the share of the HIGH-LOW gap that TREATED recovers (repeatable)",
    )
    p.add_argument(
        "--vs",
        action="append",
        default=None,
        metavar="RUN",
        help="also pair every run against this baseline run (repeatable)",
    )
    p.add_argument(
        "--analysis",
        default=None,
        metavar="FILE.json",
        help="write step statistics of the traced runs here (and FILE.md beside it)",
    )
    p.add_argument(
        "--params",
        default=None,
        help="ReSET params JSON used to replay fixed-temperature runs in --analysis",
    )
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--markdown", default=None, help="write the results table (markdown) here")
    p.add_argument("--json", default=None, help="write the comparison as JSON here")
    p.add_argument("--bars", default=None, help="write an accuracy bar chart (PNG) here")
    p.add_argument(
        "--entropy-hist",
        default=None,
        help="write entropy histograms (PNG) of the runs that have tokens.jsonl",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resetfp4.eval.report import load_run, markdown_table
    from resetfp4.eval.stats import paired_bootstrap

    if len(args.runs) < 2:
        raise ValueError("compare needs at least two run folders (RUN_A RUN_B)")
    if args.n_boot < 100:
        raise ValueError(f"--n-boot must be >= 100, got {args.n_boot}")
    from resetfp4.cli.main import check_output_file

    for flag in ("analysis", "markdown", "json", "bars", "entropy_hist"):
        check_output_file(getattr(args, flag), f"--{flag.replace('_', '-')}")
    _check_distinct_outputs(args)
    runs = [load_run(r) for r in args.runs]
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else [r.label for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--labels has {len(labels)} entries for {len(runs)} runs")
    labels = _distinct_labels(labels, runs, given=bool(args.labels))
    tasks = {r.summary["config"].get("task_fingerprint") for r in runs}  # load_run checked "config"
    if len(tasks) > 1:
        print("warning: the runs were made on different problem sets; pairing uses common ids only")
    paired: list[dict | None] = [None]
    for r, label in zip(runs[1:], labels[1:], strict=True):
        res = paired_bootstrap(runs[0].scores, r.scores, n_boot=args.n_boot, seed=args.seed)
        paired.append(res)
        lo, hi = res["ci95"]
        print(
            f"{label} - {labels[0]}: {100 * res['diff']:+.2f} points [95% CI {100 * lo:+.2f}, "
            f"{100 * hi:+.2f}], p = {res['p_value']:.4f}, n = {res['n_problems']} paired problems"
        )
    out: dict = {"runs": [str(r.path) for r in runs], "labels": labels, "paired_vs_first": paired[1:]}
    extra_cols = _extra_baselines(args, runs, labels, out)
    if args.recovery:
        out["recoveries"] = [_recovery(args, trio) for trio in args.recovery]
        out["recovery"] = out["recoveries"][0]
    table = markdown_table(runs, labels, paired, extra=extra_cols)
    print(table)
    if args.analysis:
        out["analysis"] = _analysis(args, runs, labels)
    _write_outputs(args, runs, labels, table, out)
    return 0


def _check_distinct_outputs(args: argparse.Namespace) -> None:
    """No two outputs may be one file (``--analysis F.json`` also writes ``F.md``)."""
    outs: dict[Path, str] = {}

    def claim(path: str | Path | None, flag: str) -> None:
        if path is None:
            return
        key = Path(path).resolve()
        if key in outs:
            raise ValueError(f"{outs[key]} and {flag} both write {path}; give them different files")
        outs[key] = flag

    if args.analysis is not None:
        if Path(args.analysis).suffix.lower() == ".md":
            raise ValueError(f"--analysis {args.analysis}: give the JSON file (e.g. analysis.json); the "
                             "markdown goes beside it with the suffix .md")
        claim(args.analysis, "--analysis")
        claim(Path(args.analysis).with_suffix(".md"), "--analysis (its .md)")
    for flag in ("markdown", "json", "bars", "entropy_hist"):
        claim(getattr(args, flag), f"--{flag.replace('_', '-')}")


def _distinct_labels(labels: list[str], runs: list, given: bool) -> list[str]:
    """Labels key the series, columns and JSON entries, so they must differ: ``--labels``
    must be distinct; default labels (precision and sampler) that coincide get the run
    folder's name, then a position if even those coincide."""
    dup = {lab for lab in labels if labels.count(lab) > 1}
    if not dup:
        return labels
    if given:
        raise ValueError(f"--labels must be distinct; {sorted(dup)[0]!r} is given "
                         f"{labels.count(sorted(dup)[0])} times")
    out = [f"{lab} [{r.path.name}]" if lab in dup else lab for lab, r in zip(labels, runs, strict=True)]
    if len(set(out)) < len(out):
        out = [f"{lab} #{i + 1}" if out.count(lab) > 1 else lab for i, lab in enumerate(out)]
    return out


def _run_label(path: str, runs: list, labels: list[str]) -> tuple[object, str]:
    from resetfp4.eval.report import load_run

    for r, lab in zip(runs, labels, strict=True):
        if r.path.resolve() == Path(path).resolve():
            return r, lab
    run = load_run(path)
    return run, run.label


def _extra_baselines(args: argparse.Namespace, runs: list, labels: list[str], out: dict) -> dict:
    """Pair every run against each ``--vs`` baseline; returns ``{column title: [result|None]}``."""
    from resetfp4.eval.stats import paired_bootstrap

    cols: dict[str, list] = {}
    out["paired_vs"] = {}
    for path in args.vs or []:
        base, blab = _run_label(path, runs, labels)
        if f"vs {blab}" in cols:  # two --vs baselines with one label
            blab = f"{blab} [{base.path.name}]"
        res: list[dict | None] = []
        for r, lab in zip(runs, labels, strict=True):
            if r.path.resolve() == base.path.resolve():
                res.append(None)
                continue
            d = paired_bootstrap(base.scores, r.scores, n_boot=args.n_boot, seed=args.seed)
            res.append(d)
            print(
                f"{lab} - {blab}: {100 * d['diff']:+.2f} points [95% CI {100 * d['ci95'][0]:+.2f}, "
                f"{100 * d['ci95'][1]:+.2f}], n = {d['n_problems']} paired problems"
            )
        cols[f"vs {blab}"] = res
        out["paired_vs"][blab] = res
    return cols


def _recovery(args: argparse.Namespace, trio: list[str]) -> dict:
    from resetfp4.eval.report import load_run
    from resetfp4.eval.stats import gap_recovered

    low, high, treated = (load_run(p).scores for p in trio)
    rec = gap_recovered(low, high, treated, n_boot=args.n_boot, seed=args.seed)
    if math.isnan(rec["share"]):  # the two reference runs score the same
        print(f"gap recovered: undefined, {trio[0]} and {trio[1]} have the same accuracy on their "
              f"{rec['n_problems']} common problems (a 0-point gap); {trio[2]} gains "
              f"{100 * rec['gain']:+.2f} points over {trio[0]}")
    else:
        print(
            f"gap recovered: {100 * rec['share']:.1f}% [95% CI {100 * rec['ci95'][0]:.1f}, "
            f"{100 * rec['ci95'][1]:.1f}] of a {100 * rec['gap']:.2f}-point gap, by {trio[2]} "
            f"(n = {rec['n_problems']} problems)"
        )
    return {"low": trio[0], "high": trio[1], "treated": trio[2], **rec}


def _analysis(args: argparse.Namespace, runs: list, labels: list[str]) -> list[dict]:
    from resetfp4.eval.analysis import TOKENS_NPZ, Policy, analysis_markdown, analyze_run, run_policy
    from resetfp4.eval.runner import TOKENS_FILE

    traced = [
        (r, lab)
        for r, lab in zip(runs, labels, strict=True)
        if (r.path / TOKENS_FILE).is_file() or (r.path / TOKENS_NPZ).is_file()
    ]
    if not traced:
        raise FileNotFoundError("--analysis needs runs with tokens.jsonl or tokens.npz (--dump-tokens)")
    policy = None
    if args.params:
        from resetfp4.eval.params import load_params

        prm = load_params(args.params)
        policy = Policy(tau0=prm.tau0, t_high=prm.t_high, window=prm.window)
    else:
        policy = next((pol for r, _ in traced if (pol := run_policy(r.path)[1]) is not None), None)
    results = [analyze_run(r.path, policy, lab) for r, lab in traced]
    md = analysis_markdown(results)
    print(md)
    Path(args.analysis).write_text(json.dumps(finite_or_null(results), indent=2) + "\n")
    Path(args.analysis).with_suffix(".md").write_text(md)
    return results


def _write_outputs(args: argparse.Namespace, runs: list, labels: list[str], table: str, out: dict) -> None:
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps(finite_or_null(out), indent=2) + "\n")
    if args.bars:
        from resetfp4.eval.plots import plot_accuracy_bars

        plot_accuracy_bars(
            labels,
            [r.summary["accuracy"]["mean"] for r in runs],
            [r.summary["accuracy"]["ci95"] for r in runs],
            args.bars,
            title=f"{runs[0].summary['task']}: accuracy, 95% CI over problems",
        )
    if args.entropy_hist:
        from resetfp4.eval.analysis import TOKENS_NPZ, collect_run_entropies
        from resetfp4.eval.plots import plot_entropy_hist

        series = {
            lab: collect_run_entropies(r.path)
            for r, lab in zip(runs, labels, strict=True)
            if (r.path / "tokens.jsonl").is_file() or (r.path / TOKENS_NPZ).is_file()
        }
        if not series:
            raise FileNotFoundError("--entropy-hist needs runs made with `resetfp4 eval --dump-tokens`")
        p80 = plot_entropy_hist(series, args.entropy_hist)
        print("p80 entropy: " + ", ".join(f"{k}: {v:.4f}" for k, v in p80.items()))
