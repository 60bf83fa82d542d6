"""PNG figures: entropy histograms (reference vs NVFP4) and accuracy bars with 95% CIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

PERCENTILE = 80.0  # the tau0 line drawn on the histogram


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_entropy_hist(
    entropies: Mapping[str, np.ndarray], out_png: str | Path, *, bins: int = 80, title: str = ""
) -> dict:
    """Overlaid, density-normalised token-entropy histograms with a p80 line per series.

    ``entropies``: label -> float array ``[n_tokens]`` in nats (e.g. ``{"reference (bf16)":
    ..., "NVFP4 W4A4": ...}``). The y axis is logarithmic because most tokens sit near 0.
    Returns ``{label: p80}``.
    """
    if not entropies:
        raise ValueError("no entropy series to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    hi = max(float(np.max(e)) for e in entropies.values() if len(e)) or 1.0
    edges = np.linspace(0.0, hi, bins + 1)
    p80 = {}
    for i, (label, ent) in enumerate(entropies.items()):
        ent = np.asarray(ent, dtype=np.float64)
        if ent.size == 0:
            raise ValueError(f"entropy series {label!r} is empty")
        color = f"C{i}"
        p80[label] = float(np.percentile(ent, PERCENTILE))
        ax.hist(
            ent,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.4,
            color=color,
            label=f"{label} (n={ent.size:,}, mean {ent.mean():.3f})",
        )
        ax.axvline(
            p80[label],
            color=color,
            linestyle="--",
            linewidth=1.0,
            label=f"{label} p{PERCENTILE:g} = {p80[label]:.3f}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("density")
    ax.set_title(title or "Token entropy: reference vs NVFP4")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return p80


def plot_accuracy_bars(
    labels: Sequence[str],
    means: Sequence[float],
    cis: Sequence[Sequence[float]],
    out_png: str | Path,
    *,
    title: str = "",
) -> None:
    """Bar chart of accuracies (fractions in [0, 1]) with asymmetric 95% CI error bars."""
    if not labels or not (len(labels) == len(means) == len(cis)):
        raise ValueError("labels, means and cis must be non-empty and of equal length")
    plt = _pyplot()
    m = np.asarray(means, dtype=np.float64) * 100
    lo = m - np.asarray([c[0] for c in cis], dtype=np.float64) * 100
    hi = np.asarray([c[1] for c in cis], dtype=np.float64) * 100 - m
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 1), 4), dpi=120)
    x = np.arange(len(labels))
    ax.bar(x, m, yerr=np.vstack([lo, hi]), capsize=4, color=[f"C{i}" for i in range(len(labels))])
    for xi, mi in zip(x, m, strict=True):
        ax.text(xi, mi / 2, f"{mi:.1f}", ha="center", va="center", fontsize=8, color="white")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%), 95% CI over problems")
    ax.set_title(title or "Accuracy")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
