"""PNG figures: entropy histograms (reference vs NVFP4) and accuracy bars with 95% CIs."""

from __future__ import annotations

import warnings
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
    Non-finite entropies (NaN/inf, e.g. from a token whose logits overflowed) are left out
    with a warning and a note in the legend; a series that is empty or has no finite value
    raises ``ValueError`` naming it. Returns ``{label: p80}`` over the finite values.
    """
    if not entropies:
        raise ValueError(
            "no entropy series to plot: pass {label: entropies}, from runs made with "
            "`resetfp4 eval --dump-tokens`"
        )
    series: dict[str, tuple[np.ndarray, int]] = {}
    for label, e in entropies.items():
        ent = np.asarray(e, dtype=np.float64).ravel()
        if ent.size == 0:
            raise ValueError(
                f"entropy series {label!r} is empty (no tokens): plot runs made with "
                "`resetfp4 eval --dump-tokens`, or leave this series out"
            )
        ok = np.isfinite(ent)
        n_bad = int(ent.size - ok.sum())
        if n_bad == ent.size:
            raise ValueError(
                f"entropy series {label!r} has no finite value ({n_bad} NaN/inf entropies): "
                "its token dump is broken; check the run's logits or leave this series out"
            )
        if n_bad:
            warnings.warn(
                f"entropy series {label!r}: left out {n_bad} non-finite (NaN/inf) of {ent.size} entropies",
                RuntimeWarning,
                stacklevel=2,
            )
        series[label] = (ent[ok], n_bad)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    lo = min(0.0, min(float(e.min()) for e, _ in series.values()))
    hi = max(float(e.max()) for e, _ in series.values())
    if hi <= lo:  # every entropy is the same (e.g. all 0 under greedy decoding)
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    p80 = {}
    for i, (label, (ent, n_bad)) in enumerate(series.items()):
        color = f"C{i}"
        p80[label] = float(np.percentile(ent, PERCENTILE))
        note = f", {n_bad:,} non-finite left out" if n_bad else ""
        ax.hist(
            ent,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.4,
            color=color,
            label=f"{label} (n={ent.size:,}, mean {ent.mean():.3f}{note})",
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
