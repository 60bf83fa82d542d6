"""Self-contained HTML view of one generation: per-token entropy, temperature, step starts.

Each token is a ``<span>``: its background shows the entropy (white = 0 nats, saturating
orange at ``2 * tau0`` or the 99th percentile), its underline the temperature (blue = T_low,
red = T_high, grey for a fixed temperature), and a ``▸`` marks a step start. Hovering shows
the exact values. All model text is HTML-escaped; the file has no scripts and no external
resources.
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}
.gen{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.9;
  border:1px solid #ccc;padding:1em}
.t{border-bottom:3px solid transparent}
.s{color:#090;font-weight:bold}
table.meta td{padding:0 1em 0 0;font-size:90%}
.legend span{display:inline-block;padding:0 .5em;margin-right:.5em}
"""

_LOOKBACK = 4  # tokens of context decoded before each new one (for leading spaces and clean-up)
_MAX_PENDING = 8  # tokens held back for a partial character (a UTF-8 one spans at most 4)


def _entropy_colour(e: float, scale: float) -> str:
    a = min(1.0, max(0.0, e / scale)) if scale > 0 else 0.0
    return f"rgba(255,140,0,{a:.3f})"


def _temp_colour(t: float, t_low: float | None, t_high: float | None) -> str:
    if t_low is None or t_high is None or t_high <= t_low:
        return "#999"
    a = min(1.0, max(0.0, (t - t_low) / (t_high - t_low)))
    return f"rgb({int(40 + 215 * a)},60,{int(255 - 215 * a)})"


def token_pieces(decode: Callable[[list[int]], str], ids: Sequence[int]) -> list[str]:
    """Text of each token, by incremental detokenization so multi-byte characters stay whole.

    ``decode``: ids -> text (e.g. a tokenizer's ``decode``). Each token's piece is the
    difference between decoding a short window ending with it and the same window without
    it. The window starts at least ``_LOOKBACK`` tokens back, at a token boundary where the
    text so far was whole characters, so leading spaces of SentencePiece / byte-level tokens
    and decoder clean-up come out as when decoding every prefix (the old way), at O(T) cost
    instead of O(T^2). A token that ends inside a multi-byte character gets ``""`` and the
    character goes to the token completing it; a character still cut off at the end goes to
    the last token. A run of more than ``_MAX_PENDING`` tokens whose text keeps ending in
    U+FFFD (invalid bytes from a broken generation, not a character split over tokens) is
    shown as decoded, replacement characters included, to keep the cost linear.
    """
    ids = [int(t) for t in ids]
    pieces: list[str] = []
    bounds = deque([0])  # token offsets after emitted tokens, newest last (the read offset)
    start = 0  # window start, the oldest kept boundary
    prefix = ""  # decode(ids[start:bounds[-1]]): the window's text already attributed
    cur = ""
    for i in range(len(ids)):
        cur = decode(ids[start : i + 1])
        if cur.endswith("\ufffd") and i + 1 - bounds[-1] <= _MAX_PENDING:
            pieces.append("")  # a partial character: it shows up with the token that completes it
            continue
        if cur.startswith(prefix):
            pieces.append(cur[len(prefix) :])
        else:  # the decoder rewrote earlier text (e.g. space clean-up): fall back to this token alone
            pieces.append(decode([ids[i]]))
        bounds.append(i + 1)
        while len(bounds) > 2 and bounds[-1] - bounds[1] >= _LOOKBACK:
            bounds.popleft()  # keep the newest boundary at least _LOOKBACK tokens back
        if bounds[0] != start:
            start = bounds[0]
            prefix = decode(ids[start : i + 1])
        else:
            prefix = cur
    if pieces and bounds[-1] < len(ids) and cur != prefix and cur.startswith(prefix):
        pieces[-1] += cur[len(prefix) :]  # text still pending at the end (a cut-off character)
    return pieces


def render_trace_html(
    tokens: Sequence[str],
    entropies: Sequence[float],
    temperatures: Sequence[float] | None = (),
    starts: Sequence[bool] | None = (),
    *,
    title: str = "generation trace",
    meta: dict[str, Any] | None = None,
    tau0: float | None = None,
    t_low: float | None = None,
    t_high: float | None = None,
) -> str:
    """The HTML document (a string) for one generation.

    ``tokens``: text of each generated token ``[T]``; ``entropies``: nats ``[T]``;
    ``temperatures``: ``[T]``, empty or ``None``; ``starts``: bool ``[T]``, empty or ``None``.
    Lists and numpy arrays (as :func:`resetfp4.eval.analysis.iter_samples` yields them) alike.
    """
    n = len(tokens)
    n_temp = 0 if temperatures is None else len(temperatures)
    n_start = 0 if starts is None else len(starts)
    if len(entropies) != n or n_temp not in (0, n) or n_start not in (0, n):
        raise ValueError(
            f"trace lengths differ: {n} tokens, {len(entropies)} entropies, "
            f"{n_temp} temperatures, {n_start} starts"
        )
    ent = np.asarray(entropies, dtype=np.float64).reshape(n)
    temps = np.asarray(temperatures, dtype=np.float64).reshape(n) if n_temp else None
    marks = np.asarray(starts, dtype=bool).reshape(n) if n_start else None
    finite = ent[np.isfinite(ent)]
    scale = 2 * tau0 if tau0 else (float(np.percentile(finite, 99)) if finite.size else 1.0)
    spans = []
    for i, tok in enumerate(tokens):
        temp = float(temps[i]) if temps is not None else None
        tip = f"#{i}  H={ent[i]:.3f} nats" + (f"  T={temp:.2f}" if temp is not None else "")
        style = f"background:{_entropy_colour(ent[i], scale)}"
        if temp is not None:
            style += f";border-bottom-color:{_temp_colour(temp, t_low, t_high)}"
        mark = '<span class="s" title="step start">▸</span>' if marks is not None and marks[i] else ""
        spans.append(
            f'{mark}<span class="t" style="{style}" title="{html.escape(tip)}">{html.escape(str(tok))}</span>'
        )
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in (meta or {}).items()
    )
    legend = (
        f'<p class="legend"><span style="background:{_entropy_colour(0.5, 1)}">entropy (full at '
        f'{scale:.2f} nats)</span><span style="border-bottom:3px solid {_temp_colour(0, 0, 1)}">T_low</span>'
        f'<span style="border-bottom:3px solid {_temp_colour(1, 0, 1)}">T_high</span>'
        '<span class="s">▸ step start</span></p>'
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h2>{html.escape(title)}</h2>"
        f'<table class="meta">{rows}</table>{legend}<div class="gen">{"".join(spans)}</div></body></html>\n'
    )


def write_trace_html(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`render_trace_html` written to ``path`` (UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_trace_html(*args, **kwargs), encoding="utf-8")
    return path


def engine_decoder(engine: Any) -> Callable[[list[int]], str] | None:
    """A ``decode(ids) -> str`` from an engine (``.tokenizer.decode`` or ``.decode``), if any."""
    tok = getattr(engine, "tokenizer", None)
    if tok is not None and callable(getattr(tok, "decode", None)):
        return lambda ids: tok.decode(ids)
    if callable(getattr(engine, "decode", None)):
        return engine.decode
    return None
