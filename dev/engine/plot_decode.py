"""Plot of the decode benchmark: NVFP4 tokens/s over BF16 per batch size, from the JSON that
``resetfp4 bench decode`` writes (ratios measured in one run), with the issue's targets.

    python3 dev/engine/plot_decode.py --main bench_results/decode_h100_s6_gen1024.json \\
        --head bench_results/decode_h100_s6_lmhead_nvfp4.json --out docs/img/decode_speedup_h100.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGETS = {1: 3.0, 8: 2.5}  # issue 4: NVFP4 over BF16, Qwen3-8B shapes, H100


def ratios(path: Path, sampler: str = "fixed") -> tuple[dict, dict]:
    """``({precision: {batch: speedup}}, header)`` from one bench decode JSON."""
    d = json.loads(path.read_text())
    out: dict[str, dict[int, float]] = {}
    for r in d["rows"]:
        if r["sampler"] == sampler and r["precision"] != "bf16" and r.get("speedup_vs_bf16"):
            out.setdefault(r["precision"], {})[r["batch"]] = r["speedup_vs_bf16"]
    if not out:
        raise SystemExit(f"{path}: no '{sampler}' NVFP4 rows with a BF16 ratio (the run needs BF16 rows)")
    return out, d


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--main", type=Path, required=True, help="bench decode JSON (bf16 lm_head)")
    p.add_argument("--head", type=Path, default=None, help="bench decode JSON run with --lm-head nvfp4")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    main_r, d = ratios(a.main)
    series = [(f"{prec}, bf16 lm_head", r) for prec, r in sorted(main_r.items())]
    if a.head:
        head_r, hd = ratios(a.head)
        series += [(f"{prec}, NVFP4 lm_head (gen {hd.get('gen_len')}, own BF16 rows)", r)
                   for prec, r in sorted(head_r.items())]
    batches = sorted({b for _, r in series for b in r})
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / len(series)
    for i, (label, r) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j, b in enumerate(batches) if b in r]
        ys = [r[b] for b in batches if b in r]
        bars = ax.bar(xs, ys, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    for j, b in enumerate(batches):
        if b in TARGETS:
            ax.hlines(TARGETS[b], j - 0.45, j + 0.45, colors="k", linestyles="--", linewidth=1)
            ax.text(j - 0.45, TARGETS[b] + 0.03, f"target {TARGETS[b]:.1f}x", va="bottom", fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("decode tokens/s over BF16")
    env = d.get("environment", {})
    ax.set_title(f"{d.get('arch', '?')} shapes, {env.get('gpu', '?')}, prompt {d.get('prompt_len')} + "
                 f"{d.get('gen_len')} generated", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_ylim(0, max(max(r.values()) for _, r in series) * 1.35)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=130)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
