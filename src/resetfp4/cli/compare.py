"""``resetfp4 compare RUN_A RUN_B [RUN ...]``: paired bootstrap of accuracy differences.

Every run after the first is compared with RUN_A over their common problems (diff = run -
RUN_A, 95% percentile CI, p-value). ``--recovery LOW HIGH TREATED`` adds the share of the
HIGH - LOW gap that TREATED recovers (e.g. W4A4 T=0.6, reference T=0.6, W4A4 ReSET).
Optional outputs: a markdown table, a comparison JSON, accuracy bars and entropy histograms.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
        metavar=("LOW", "HIGH", "TREATED"),
        default=None,
        help="report the share of the HIGH-LOW gap that TREATED recovers",
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
    from resetfp4.eval.stats import gap_recovered, paired_bootstrap

    if len(args.runs) < 2:
        raise ValueError("compare needs at least two run folders (RUN_A RUN_B)")
    if args.n_boot < 100:
        raise ValueError(f"--n-boot must be >= 100, got {args.n_boot}")
    runs = [load_run(r) for r in args.runs]
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else [r.label for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--labels has {len(labels)} entries for {len(runs)} runs")
    tasks = {r.summary["config"].get("task_fingerprint") for r in runs}
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
    if args.recovery:
        low, high, treated = (load_run(p).scores for p in args.recovery)
        rec = gap_recovered(low, high, treated, n_boot=args.n_boot, seed=args.seed)
        out["recovery"] = {
            "low": args.recovery[0],
            "high": args.recovery[1],
            "treated": args.recovery[2],
            **rec,
        }
        print(
            f"gap recovered: {100 * rec['share']:.1f}% [95% CI {100 * rec['ci95'][0]:.1f}, "
            f"{100 * rec['ci95'][1]:.1f}] of a {100 * rec['gap']:.2f}-point gap"
        )
    table = markdown_table(runs, labels, paired)
    print(table)
    _write_outputs(args, runs, labels, table, out)
    return 0


def _write_outputs(args: argparse.Namespace, runs: list, labels: list[str], table: str, out: dict) -> None:
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
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
        from resetfp4.eval.calibrate import collect_entropies
        from resetfp4.eval.plots import plot_entropy_hist

        series = {
            lab: collect_entropies(r.path / "tokens.jsonl")
            for r, lab in zip(runs, labels, strict=True)
            if (r.path / "tokens.jsonl").is_file()
        }
        if not series:
            raise FileNotFoundError("--entropy-hist needs runs made with `resetfp4 eval --dump-tokens`")
        p80 = plot_entropy_hist(series, args.entropy_hist)
        print("p80 entropy: " + ", ".join(f"{k}: {v:.4f}" for k, v in p80.items()))
