"""PNG figures and the HTML trace."""

from __future__ import annotations

import numpy as np
import pytest

from resetfp4.eval.plots import plot_accuracy_bars, plot_entropy_hist
from resetfp4.eval.trace_html import render_trace_html, token_pieces

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_entropy_histogram_png_and_p80(tmp_path):
    rng = np.random.default_rng(0)
    ref, fp4 = rng.exponential(0.3, 5000), rng.exponential(0.4, 5000)
    p80 = plot_entropy_hist({"reference": ref, "NVFP4": fp4}, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC
    assert p80["reference"] == pytest.approx(np.percentile(ref, 80))
    assert p80["NVFP4"] > p80["reference"]
    with pytest.raises(ValueError, match="empty"):
        plot_entropy_hist({"x": np.zeros(0), "y": ref}, tmp_path / "e.png")


def test_accuracy_bars_png(tmp_path):
    plot_accuracy_bars(["a", "b"], [0.2, 0.3], [[0.1, 0.3], [0.2, 0.4]], tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="equal length"):
        plot_accuracy_bars(["a"], [0.2, 0.3], [[0, 1]], tmp_path / "c.png")


def test_html_trace_escapes_text_and_marks_steps():
    tokens = ["<script>", "alert(1)", "</script>", "\n\n", "x & y"]
    html = render_trace_html(
        tokens,
        [0.1, 2.0, 0.5, 0.0, 1.0],
        [0.2, 1.0, 0.2, 0.2, 1.0],
        [True, False, False, True, False],
        meta={"id": "<b>"},
        tau0=0.5,
        t_low=0.2,
        t_high=1.0,
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "x &amp; y" in html
    assert "&lt;b&gt;" in html
    assert html.count('step start">') == 2  # two ▸ markers (one more in the legend has no quote-gt)
    assert html.count('class="t"') == 5 and "H=2.000" in html and "T=1.00" in html
    assert "<link" not in html and "src=" not in html  # self-contained


def test_html_trace_length_mismatch():
    with pytest.raises(ValueError, match="lengths differ"):
        render_trace_html(["a", "b"], [0.1])


def test_token_pieces_keep_multibyte_characters():
    # a toy byte-level decoder: "é" is split over two tokens
    vocab = {1: b"a", 2: b"\xc3", 3: b"\xa9", 4: b"b"}
    decode = lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
    pieces = token_pieces(decode, [1, 2, 3, 4])
    assert "".join(pieces) == "aéb"
