"""Token-id lookup tables for reasoning-step boundaries, built once per tokenizer.

A new step begins before token t when token t-1 decodes to text containing ``"\\n\\n"``, or
tokens t-1 and t-2 both decode exactly to ``"\\n"``. Each token is judged on its own bytes:
byte-level BPE tokens are mapped back to raw bytes (so a token holding half of a UTF-8
character plus ``"\\n\\n"`` still counts; ``0x0A`` never occurs inside a multi-byte UTF-8
sequence), added/special tokens use their literal content, and other tokenizers fall back to
decoding each id alone. Tables are cached by a fingerprint of the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

_CACHE: dict[str, BoundaryTables] = {}


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level alphabet: printable char -> byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:  # non-printable bytes are moved to code points 256, 257, ...
            chars[chr(256 + shift)] = b
            shift += 1
    return chars


def vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 (hex, 16 chars) over the full token -> id map, added tokens included."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def _is_byte_level(tokenizer: Any) -> bool:
    """Does the tokenizer spell its pieces in the GPT-2 byte-level alphabet?

    ``"Ċ"`` is that alphabet's spelling of ``"\n"``, but also an ordinary letter (U+010A) that
    a SentencePiece vocabulary may hold; so the piece must also decode to ``"\n"``.
    """
    nl = tokenizer.get_vocab().get("Ċ")
    if nl is None:
        return False
    text = tokenizer.batch_decode([[nl]], skip_special_tokens=False,
                                  clean_up_tokenization_spaces=False)[0]
    return text == "\n"


def _token_texts(tokenizer: Any, n: int) -> list[bytes]:
    """Raw bytes (or UTF-8 of the decoded text) of every token id in ``range(n)``."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(getattr(tokenizer, "all_special_tokens", []))
    added = set(getattr(tokenizer, "get_added_vocab", dict)().keys())
    dec = _byte_decoder()
    byte_level = _is_byte_level(tokenizer)
    out: list[bytes | None] = []
    for p in pieces:
        if p is None:
            out.append(b"")
        elif p in special or p in added:
            out.append(p.encode())
        elif byte_level and all(c in dec for c in p):
            out.append(bytes(dec[c] for c in p))
        else:
            out.append(None)
    todo = [i for i, b in enumerate(out) if b is None]
    if todo:
        texts = tokenizer.batch_decode(
            [[i] for i in todo], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        for i, t in zip(todo, texts, strict=True):
            out[i] = t.encode()
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class BoundaryTables:
    """bool lookup tables ``[vocab_size]`` on one device.

    ``has_double_newline[v]``: token v's text contains ``"\\n\\n"``.
    ``is_newline[v]``: token v's text is exactly ``"\\n"``.
    ``fingerprint``: :func:`vocab_fingerprint` of the tokenizer they were built from.
    """

    vocab_size: int
    fingerprint: str
    has_double_newline: Tensor
    is_newline: Tensor

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> BoundaryTables:
        """Scan the vocabulary of a HF tokenizer (``len(tokenizer)`` ids); cached on CPU."""
        fp = vocab_fingerprint(tokenizer)
        if fp not in _CACHE:
            n = len(tokenizer)
            texts = _token_texts(tokenizer, n)
            dnl = torch.tensor([b"\n\n" in t for t in texts], dtype=torch.bool)
            nl = torch.tensor([t == b"\n" for t in texts], dtype=torch.bool)
            _CACHE[fp] = cls(n, fp, dnl, nl)
        return _CACHE[fp]

    @classmethod
    def from_token_texts(cls, texts: list[str | bytes], fingerprint: str = "custom") -> BoundaryTables:
        """Tables from the decoded text of each token id (tests, custom vocabularies)."""
        bs = [t.encode() if isinstance(t, str) else t for t in texts]
        dnl = torch.tensor([b"\n\n" in t for t in bs], dtype=torch.bool)
        nl = torch.tensor([t == b"\n" for t in bs], dtype=torch.bool)
        return cls(len(bs), fingerprint, dnl, nl)

    def to(self, device: torch.device | str) -> BoundaryTables:
        """Copy of the tables on ``device``."""
        return BoundaryTables(self.vocab_size, self.fingerprint, self.has_double_newline.to(device),
                              self.is_newline.to(device))

    def padded(self, vocab_size: int) -> BoundaryTables:
        """Extend to a model's (larger, padded) vocabulary; extra ids never mark a boundary.

        Raises ``ValueError`` when the tokenizer has more ids than the model: they belong to
        different models.
        """
        if vocab_size < self.vocab_size:
            raise ValueError(
                f"tokenizer has {self.vocab_size} token ids but the model's vocabulary has only "
                f"{vocab_size}: the tokenizer belongs to another model (fingerprint {self.fingerprint})"
            )
        if vocab_size == self.vocab_size:
            return self
        pad = vocab_size - self.vocab_size

        def grow(t: Tensor) -> Tensor:
            return torch.cat([t, torch.zeros(pad, dtype=torch.bool, device=t.device)])

        dnl, nl = grow(self.has_double_newline), grow(self.is_newline)
        return BoundaryTables(vocab_size, self.fingerprint, dnl, nl)

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ``ValueError`` unless ``tokenizer`` is the one these tables were built from."""
        fp = vocab_fingerprint(tokenizer)
        if fp != self.fingerprint:
            raise ValueError(
                f"boundary tables were built from another tokenizer (fingerprint {self.fingerprint}, "
                f"this tokenizer {fp}, {len(tokenizer)} ids); rebuild them with "
                "BoundaryTables.from_tokenizer(tokenizer)"
            )

    def starts(self, prev: Tensor, prev2: Tensor, n_generated: Tensor) -> Tensor:
        """bool ``[B]``: does a step start before the next token?

        ``prev``/``prev2``: int64 ``[B]`` ids of the last and second-to-last tokens;
        ``n_generated``: int64 ``[B]`` generated tokens so far (prompt tokens never count).
        """
        dnl = self.has_double_newline[prev] & (n_generated >= 1)
        two_nl = self.is_newline[prev] & self.is_newline[prev2] & (n_generated >= 2)
        return dnl | two_nl
