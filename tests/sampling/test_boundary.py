"""BoundaryTables on the real SmolLM2 tokenizer and on a byte-level stand-in."""

from __future__ import annotations

import pytest
import torch

from resetfp4.sampling import BoundaryTables, vocab_fingerprint
from resetfp4.sampling.boundary import _byte_decoder


def test_smollm2_tables(smollm2_tokenizer):
    tok = smollm2_tokenizer
    tab = BoundaryTables.from_tokenizer(tok)
    assert BoundaryTables.from_tokenizer(tok) is tab  # cached
    assert tab.vocab_size == len(tok)
    nl, dnl = tok.encode("\n"), tok.encode("\n\n")
    assert len(nl) == 1 and tab.is_newline[nl[0]] and not tab.has_double_newline[nl[0]]
    assert len(dnl) == 1 and tab.has_double_newline[dnl[0]] and not tab.is_newline[dnl[0]]
    for sid in tok.all_special_ids:
        assert not tab.is_newline[sid] and not tab.has_double_newline[sid]
    # agrees with decoding every id on its own (the slow, obvious way)
    texts = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
    assert tab.has_double_newline.tolist() == ["\n\n" in t for t in texts]
    assert tab.is_newline.tolist() == [t == "\n" for t in texts]
    tab.check_tokenizer(tok)


class ByteLevelToy:
    """Minimal byte-level tokenizer: enough of the HF interface for the table scan."""

    def __init__(self, pieces: list[bytes], special: list[str]):
        enc = {b: c for c, b in _byte_decoder().items()}
        self.tokens = ["".join(enc[b] for b in p) for p in pieces] + special
        self.all_special_tokens = special

    def __len__(self):
        return len(self.tokens)

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}

    def get_added_vocab(self):
        first = len(self.tokens) - len(self.all_special_tokens)
        return {t: first + i for i, t in enumerate(self.all_special_tokens)}

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]

    def batch_decode(self, seqs, **_):
        # only the byte-level probe (the "\n" piece alone) may need decoding
        dec = _byte_decoder()
        assert [self.tokens[s[0]] for s in seqs] == ["Ċ"], "byte-level tokens must not need decoding"
        return [bytes(dec[c] for c in self.tokens[s[0]]).decode() for s in seqs]


def test_partial_utf8_and_special_tokens():
    # b"\xe4\xbd" is two thirds of a CJK character: it decodes to U+FFFD on its own
    toy = ByteLevelToy([b"\n", b"\n\n", b"\xe4\xbd\n\n", b"\xe4\xbd", b"x\n", b"\r\n"], ["<|im_end|>"])
    tab = BoundaryTables.from_tokenizer(toy)
    assert tab.has_double_newline.tolist() == [False, True, True, False, False, False, False]
    assert tab.is_newline.tolist() == [True, False, False, False, False, False, False]


def test_other_tokenizer_is_rejected(smollm2_tokenizer):
    toy = ByteLevelToy([b"\n", b"a"], [])
    tab = BoundaryTables.from_tokenizer(toy)
    with pytest.raises(ValueError, match="another tokenizer"):
        tab.check_tokenizer(smollm2_tokenizer)
    assert vocab_fingerprint(toy) != vocab_fingerprint(smollm2_tokenizer)
    with pytest.raises(ValueError, match="another model"):
        BoundaryTables.from_tokenizer(smollm2_tokenizer).padded(1000)


def test_padding_and_starts():
    tab = BoundaryTables.from_token_texts(["a", "\n", "\n\n"]).padded(5)
    assert tab.vocab_size == 5 and not tab.is_newline[4]
    prev, prev2 = torch.tensor([2, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 0, 0])
    n_gen = torch.tensor([1, 2, 1, 2, 0])
    assert tab.starts(prev, prev2, n_gen).tolist() == [True, True, False, False, False]


def _sentencepiece_tokenizer(extra: list[str]):
    """Llama-2 style SentencePiece BPE with byte fallback ("<0x0A>" is the newline byte)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t in ["▁", "a", "b", ".", "▁a", "▁b", *extra]:
        vocab[t] = len(vocab)
    m = tokenizers.models.BPE(vocab=vocab, merges=[("▁", "a"), ("▁", "b")], unk_token="<unk>",
                              byte_fallback=True, fuse_unk=True)
    tk = tokenizers.Tokenizer(m)
    n, d = tokenizers.normalizers, tokenizers.decoders
    tk.normalizer = n.Sequence([n.Prepend("▁"), n.Replace(" ", "▁")])
    tk.decoder = d.Sequence([d.Replace("▁", " "), d.ByteFallback(), d.Fuse(), d.Strip(" ", 1, 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>",
                                                bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("extra", [[], ["Ċ"]])
def test_sentencepiece_newline_bytes_even_with_a_c_dot_letter(extra):
    # "Ċ" (U+010A) as an ordinary SentencePiece piece used to switch the scan to the byte-level
    # alphabet: "<0x0A>" then read as text (no newline ever found) and "Ċ" itself as "\n"
    tok = _sentencepiece_tokenizer(extra)
    tab = BoundaryTables.from_tokenizer(tok)
    ids = tok.encode("a.\n\nb", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[2:4] == ["<0x0A>", "<0x0A>"]
    assert [bool(tab.is_newline[i]) for i in ids] == [False, False, True, True, False]
    assert tab.is_newline.nonzero().flatten().tolist() == [tok.convert_tokens_to_ids("<0x0A>")]
