"""Read eval run folders and build a markdown results table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from resetfp4.eval.runner import PROBLEMS_FILE, SUMMARY_FILE


@dataclass
class Run:
    """One finished eval run: its folder, summary and per-problem scores (id -> mean correct)."""

    path: Path
    summary: dict
    scores: dict[str, float]

    @property
    def label(self) -> str:
        s = self.summary
        cfg = s.get("config", {})
        mode = cfg.get("sampler", {}).get("mode", s.get("sampler"))
        if mode == "fixed":
            mode = f"T={cfg.get('sampler', {}).get('temperature')}"
        elif mode == "reset":
            sp = cfg.get("sampler", {})
            mode = f"ReSET(T_low={sp.get('t_low')}, tau0={sp.get('tau0', 0):.3f})"
        return f"{s.get('precision')} {mode}"


# summary.json keys that the table and `resetfp4 compare` read (eval.runner.summarize writes them)
SUMMARY_KEYS = ("task", "n_problems", "samples_per_problem", "accuracy", "pass_at_k", "maj_at_k",
                "avg_length_tokens", "truncation_rate", "config")
_DAMAGED = "the run folder is damaged: restore it, or redo the run (`resetfp4 eval ... --overwrite`)"
# summary.json alone is rewritten by the same eval command (finished problems are not redone)
_RESUMMARIZE = "rerun the same `resetfp4 eval` command to rewrite it (finished problems are kept)"


def load_run(path: str | Path) -> Run:
    """A run folder written by ``resetfp4 eval`` (needs ``summary.json`` and ``problems.jsonl``)."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{path} {what}; is {path} an eval run folder (resetfp4 eval --out)? "
                                "Check the path")
    summ, probs = path / SUMMARY_FILE, path / PROBLEMS_FILE
    for f in (summ, probs):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; is {path} an eval run folder (resetfp4 eval --out)?")
    scores = {}
    text = probs.read_text(encoding="utf-8")
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines) and not text.endswith("\n"):  # cut while being written
                raise ValueError(
                    f"{probs}:{lineno}: the last record is cut off (the run was interrupted while "
                    "writing it); rerun the same `resetfp4 eval` command to finish the run (finished "
                    "problems are kept, the cut one is redone)") from None
            raise ValueError(f"{probs}:{lineno}: malformed record (not JSON); {_DAMAGED}") from None
        try:
            scores[rec["id"]] = float(rec["score"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{probs}:{lineno}: a record needs an 'id' and a numeric 'score', got "
                f"{line[:80]!r}; {_DAMAGED}"
            ) from None
    return Run(path=path, summary=_read_summary(summ), scores=scores)


def _read_summary(summ: Path) -> dict:
    try:
        summary = json.loads(summ.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{summ} is not valid JSON ({e}); {_RESUMMARIZE}") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{summ} is not a JSON object; {_RESUMMARIZE}")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"{summ} lacks {missing}, so it is not a `resetfp4 eval` summary; {_RESUMMARIZE}")
    if not isinstance(summary["config"], dict) or not isinstance(summary["accuracy"], dict):
        raise ValueError(f"{summ}: 'config' and 'accuracy' must be JSON objects; {_RESUMMARIZE}")
    acc = summary["accuracy"]
    if isinstance(acc.get("ci95"), list):  # null bounds (a one-problem run): NaN, as computed
        acc["ci95"] = [float("nan") if v is None else v for v in acc["ci95"]]
    if acc.get("stderr", 0) is None:
        acc["stderr"] = float("nan")
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _diff_cell(p: dict | None) -> str:
    return f"{_pct(p['diff'])} [{_pct(p['ci95'][0])}, {_pct(p['ci95'][1])}]" if p else "-"


def markdown_table(
    runs: Sequence[Run],
    labels: Sequence[str] | None = None,
    paired: Sequence[dict | None] | None = None,
    extra: Mapping[str, Sequence[dict | None]] | None = None,
) -> str:
    """A markdown table: accuracy [95% CI], pass@k, maj@k, length, truncation, tokens/s.

    ``paired[i]``: optional paired-bootstrap result of run ``i`` against the first run.
    ``extra``: more paired columns, ``{title: [result of run i or None]}`` (``--vs``).
    """
    labels = list(labels or [r.label for r in runs])
    extra = dict(extra or {})
    extra_head = "".join(f" {t}: diff [95% CI] |" for t in extra)
    head = (
        "| run | task | n | K | accuracy % [95% CI] | vs first: diff [95% CI] |"
        + extra_head
        + " pass@K | maj@K | avg len | trunc % | tok/s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        s = run.summary
        acc = s["accuracy"]
        diff = _diff_cell(paired[i] if paired else None)
        more = "".join(f" {_diff_cell(col[i])} |" for col in extra.values())
        tps = s.get("tokens_per_s")
        lines.append(
            f"| {label} | {s['task']} | {s['n_problems']} | {s['samples_per_problem']} | "
            f"{_pct(acc['mean'])} [{_pct(acc['ci95'][0])}, {_pct(acc['ci95'][1])}] | {diff} |{more} "
            f"{_pct(s['pass_at_k'])} | {_pct(s['maj_at_k'])} | {s['avg_length_tokens']:.0f} | "
            f"{_pct(s['truncation_rate'])} | {f'{tps:.0f}' if tps else '-'} |"
        )
    return "\n".join(lines) + "\n"
