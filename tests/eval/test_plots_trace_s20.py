"""Token pieces at linear cost, numpy traces in the HTML view, clear errors from the entropy plot."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from resetfp4.eval.analysis import iter_samples, write_tokens_npz
from resetfp4.eval.plots import plot_entropy_hist
from resetfp4.eval.trace_html import render_trace_html, token_pieces

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MIXED = (
    "Let's solve it step by step.\n\n  x = 3 * (y + 2), so x² ≤ π·r²; naïve café — déjà vu!\n"
    "数学题：你好世界，求解方程。 日本語のテキストも。 한국어 문장.\n"
    "Emoji: 🤖🎉👨‍👩‍👧 ✅ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\t<b>&amp;</b> \"quoted\" 'single'\n"
)


def _prefix_pieces(decode, ids):
    """The previous O(T^2) algorithm (decode every prefix), kept as the reference."""
    pieces, emitted, cur = [], "", ""
    for i in range(len(ids)):
        cur = decode(list(ids[: i + 1]))
        if cur.endswith("\ufffd"):
            pieces.append("")
        elif cur.startswith(emitted):
            pieces.append(cur[len(emitted) :])
            emitted = cur
        else:
            pieces.append(decode([ids[i]]))
            emitted = cur
    if pieces and cur != emitted and cur.startswith(emitted):
        pieces[-1] += cur[len(emitted) :]
    return pieces


class _Budget:
    """A decoder that counts the ids it decodes and fails once past a linear budget, so a
    quadratic algorithm fails at once instead of after minutes (and without wall-time flakiness)."""

    def __init__(self, decode, max_ids: int):
        self.decode, self.max_ids, self.calls, self.ids = decode, max_ids, 0, 0

    def __call__(self, ids):
        self.calls += 1
        self.ids += len(ids)
        if self.ids > self.max_ids:
            raise AssertionError(f"decoded {self.ids} ids in {self.calls} calls: more than linear")
        return self.decode(ids)


def _ids(tok, n):
    ids = tok.encode(MIXED * (n // 40 + 1), add_special_tokens=False)[:n]
    assert len(ids) == n
    return ids


def test_token_pieces_match_prefix_decoding(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = _ids(tok, 2000)
    pieces = token_pieces(tok.decode, ids)
    assert pieces == _prefix_pieces(tok.decode, ids)
    assert "".join(pieces) == tok.decode(ids)
    assert "" in pieces and not any("\ufffd" in p for p in pieces)  # split characters, no garbage
    assert any(p.startswith(" ") for p in pieces)  # leading spaces of byte-level tokens kept
    # cut off inside a character: the replacement goes to the last token
    cut = next(i for i in range(1, len(ids)) if pieces[i - 1] == "")
    assert "".join(token_pieces(tok.decode, ids[:cut])) == tok.decode(ids[:cut])
    assert token_pieces(tok.decode, np.asarray(ids[:cut])) == token_pieces(tok.decode, ids[:cut])


def test_token_pieces_linear_decode_cost(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = _ids(tok, 8000)
    dec = _Budget(tok.decode, max_ids=20 * len(ids))  # decoding every prefix is 32M ids
    pieces = token_pieces(dec, ids)
    assert "".join(pieces) == tok.decode(ids) and len(pieces) == len(ids)
    assert dec.calls <= 3 * len(ids)


def test_token_pieces_sentencepiece_leading_spaces():
    # a Llama-style decoder: "▁" is a space, <0xNN> bytes, one leading space stripped
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import BPE

    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": b + 1 for b in range(256)}}
    for w in ["▁Hello", "▁world", "▁", ",", "▁the", "▁'", "s"]:
        vocab[w] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    decode = tok.decode
    byte = [vocab[f"<0x{b:02X}>"] for b in "你🤖".encode()]
    words = [vocab[w] for w in ["▁Hello", ",", "▁world", "▁", "▁the", "▁'", "s"]]
    ids = words + byte + words * 3 + byte[:2]  # ends inside a character
    pieces = token_pieces(decode, ids)
    assert pieces == _prefix_pieces(decode, ids)
    assert pieces[:7] == ["Hello", ",", " world", " ", " the", " '", "s"]
    assert pieces[7:14] == ["", "", "你", "", "", "", "🤖"]
    assert pieces[-2:] == ["", "\ufffd\ufffd"] and "".join(pieces) == decode(ids)


def test_token_pieces_bounded_on_invalid_bytes():
    # a broken model looping on a lone lead byte: the text ends in U+FFFD after every token
    vocab = {1: b"a", 2: b"\xe4", 3: b"\xbd", 4: b"\xa0"}

    def decode(ids):
        return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")

    ids = [1] + [2] * 5000 + [2, 3, 4, 1]
    dec = _Budget(decode, max_ids=40 * len(ids))
    pieces = token_pieces(dec, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == decode(ids)
    assert pieces[-4:-2] == ["", ""] and pieces[-2].endswith("你") and pieces[-1] == "a"
    assert set("".join(pieces[1:-2])) == {"\ufffd"}
    assert sum(p != "" for p in pieces) > 500  # shown as it comes, not all on the last token


def test_html_trace_accepts_numpy_records(tmp_path):
    recs = [
        {
            "id": "p1",
            "sample": 0,
            "correct": True,
            "entropies": [0.1, 2.0, 0.5],
            "temperatures": [0.2, 1.0, 0.2],
            "starts": [False, True, False],
        },
    ]
    write_tokens_npz(tmp_path, recs)
    (rec,) = iter_samples(tmp_path)
    assert isinstance(rec["temperatures"], np.ndarray) and isinstance(rec["starts"], np.ndarray)
    tokens = ["a", "<b>", "c"]
    kw = {"tau0": 0.5, "t_low": 0.2, "t_high": 1.0}
    html = render_trace_html(tokens, rec["entropies"], rec["temperatures"], rec["starts"], **kw)
    assert html == render_trace_html(tokens, [0.1, 2.0, 0.5], [0.2, 1.0, 0.2], [False, True, False], **kw)
    assert html.count('step start">') == 1 and "T=1.00" in html and "&lt;b&gt;" in html
    # no temperatures / starts: empty arrays, empty lists and None alike
    plain = render_trace_html(tokens, rec["entropies"], np.zeros(0), np.zeros(0, dtype=bool))
    assert plain == render_trace_html(tokens, rec["entropies"], None, None)
    assert plain == render_trace_html(tokens, rec["entropies"])
    assert "T=" not in plain and 'step start">' not in plain
    with pytest.raises(ValueError, match="lengths differ"):
        render_trace_html(tokens, rec["entropies"], np.ones(2), rec["starts"])
    nan_html = render_trace_html(tokens, np.array([np.nan, 1.0, 0.5]), rec["temperatures"], rec["starts"])
    assert "H=nan" in nan_html and "rgba(255,140,0,1.000)" in nan_html  # finite values still scaled


def test_html_trace_escapes_attributes_and_text():
    tokens = ['" onmouseover="alert(1)', "<img src=x onerror=alert(1)>", "</div></body>", "'&"]
    html = render_trace_html(tokens, [0.1] * 4, title='<script>t</script>"', meta={"<k>": '"v"<'})
    assert 'onmouseover="' not in html and "&quot; onmouseover=&quot;" in html
    assert "<img" not in html and "<script>" not in html and html.count("</div>") == 1
    assert "&#x27;&amp;" in html and "&lt;k&gt;" in html and "&quot;v&quot;&lt;" in html


def test_entropy_hist_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no entropy series"):
        plot_entropy_hist({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"'ref' is empty.*--dump-tokens"):
        plot_entropy_hist({"ref": np.zeros(0), "fp4": []}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"'fp4' has no finite value \(2 NaN/inf"):
        plot_entropy_hist({"ref": [0.1, 0.2], "fp4": [np.nan, np.inf]}, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_entropy_hist_drops_non_finite_with_note(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.exponential(0.3, 1000)
    fp4 = np.concatenate([rng.exponential(0.4, 1000), [np.nan, np.inf, np.nan]])
    with pytest.warns(RuntimeWarning, match=r"'fp4': left out 3 non-finite"):
        p80 = plot_entropy_hist({"ref": ref, "fp4": fp4}, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC
    assert p80["fp4"] == pytest.approx(np.percentile(fp4[np.isfinite(fp4)], 80))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all finite (all zero, greedy): no warning, a plot
        assert plot_entropy_hist({"greedy": np.zeros(50)}, tmp_path / "z.png") == {"greedy": 0.0}
    assert (tmp_path / "z.png").read_bytes()[:8] == PNG_MAGIC
