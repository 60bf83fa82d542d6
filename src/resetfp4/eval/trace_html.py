"""Self-contained HTML view of one generation: per-token entropy, temperature, step starts.

Each token is a ``<span>``: its background shows the entropy (white = 0 nats, saturating
orange at ``2 * tau0`` or the 99th percentile), its underline the temperature (blue = T_low,
red = T_high, grey for a fixed temperature), and a ``▸`` marks a step start. Hovering shows
the exact values. All model text is HTML-escaped; the file has no scripts and no external
resources.
"""

from __future__ import annotations

import html
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


def _entropy_colour(e: float, scale: float) -> str:
    a = min(1.0, max(0.0, e / scale)) if scale > 0 else 0.0
    return f"rgba(255,140,0,{a:.3f})"


def _temp_colour(t: float, t_low: float | None, t_high: float | None) -> str:
    if t_low is None or t_high is None or t_high <= t_low:
        return "#999"
    a = min(1.0, max(0.0, (t - t_low) / (t_high - t_low)))
    return f"rgb({int(40 + 215 * a)},60,{int(255 - 215 * a)})"


def token_pieces(decode: Callable[[list[int]], str], ids: Sequence[int]) -> list[str]:
    """Text of each token, by prefix differences so multi-byte characters stay whole.

    ``decode``: ids -> text (e.g. a tokenizer's ``decode``). A token that ends inside a
    multi-byte character gets ``""`` and the character goes to the token completing it.
    Costs O(T^2) characters of decoding; fine for one trace of a few thousand tokens.
    """
    pieces: list[str] = []
    emitted = ""  # text already attributed to earlier tokens
    cur = ""
    for i in range(len(ids)):
        cur = decode(list(ids[: i + 1]))
        if cur.endswith("\ufffd"):
            pieces.append("")  # a partial character: it shows up with the token that completes it
        elif cur.startswith(emitted):
            pieces.append(cur[len(emitted) :])
            emitted = cur
        else:  # the decoder rewrote earlier text (e.g. space clean-up): fall back to this token alone
            pieces.append(decode([ids[i]]))
            emitted = cur
    if pieces and cur != emitted and cur.startswith(emitted):
        pieces[-1] += cur[len(emitted) :]  # text still pending at the end (a cut-off character)
    return pieces


def render_trace_html(
    tokens: Sequence[str],
    entropies: Sequence[float],
    temperatures: Sequence[float] = (),
    starts: Sequence[bool] = (),
    *,
    title: str = "generation trace",
    meta: dict[str, Any] | None = None,
    tau0: float | None = None,
    t_low: float | None = None,
    t_high: float | None = None,
) -> str:
    """The HTML document (a string) for one generation.

    ``tokens``: text of each generated token ``[T]``; ``entropies``: nats ``[T]``;
    ``temperatures``: ``[T]`` or empty; ``starts``: bool ``[T]`` or empty.
    """
    n = len(tokens)
    if len(entropies) != n or (temperatures and len(temperatures) != n) or (starts and len(starts) != n):
        raise ValueError(
            f"trace lengths differ: {n} tokens, {len(entropies)} entropies, "
            f"{len(temperatures)} temperatures, {len(starts)} starts"
        )
    ent = np.asarray(entropies, dtype=np.float64)
    scale = 2 * tau0 if tau0 else (float(np.percentile(ent, 99)) if n else 1.0)
    spans = []
    for i, tok in enumerate(tokens):
        temp = temperatures[i] if temperatures else None
        tip = f"#{i}  H={ent[i]:.3f} nats" + (f"  T={temp:.2f}" if temp is not None else "")
        style = f"background:{_entropy_colour(ent[i], scale)}"
        if temp is not None:
            style += f";border-bottom-color:{_temp_colour(temp, t_low, t_high)}"
        mark = '<span class="s" title="step start">▸</span>' if starts and starts[i] else ""
        spans.append(
            f'{mark}<span class="t" style="{style}" title="{html.escape(tip)}">{html.escape(tok)}</span>'
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
