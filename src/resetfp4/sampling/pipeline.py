"""The sampling pipeline as pure functions on fp32 logits (no host sync anywhere).

Order used by :class:`~resetfp4.sampling.BatchSampler` (and documented here once):

1. ``entropy`` of ``softmax(raw logits)`` in nats (before any temperature);
2. ``apply_temperature`` (per-row T; greedy rows bypass 3-4);
3. ``top_k`` -> ``top_p`` (nucleus over the top-k survivors, renormalised) -> ``min_p``
   (relative to the most likely token, so it does not care about renormalisation);
4. ``sample``: the exponential race ``argmax_i p_i / E_i`` with ``E_i ~ Exp(1)``, written as
   ``argmax_i (logit_i - log E_i)``; ``E_i`` comes from a counter-based hash of
   (per-row key, token id), so a request's draws depend only on its seed and token index,
   never on its batch position or on the other rows;
5. ``greedy``: ``argmax`` of the raw logits (first index among ties).

Every ``logits`` argument is a float32 tensor ``[B, V]`` (row = request, column = token id);
masked entries are ``-inf``. Per-row parameters are tensors ``[B]`` on the same device.
"""

from __future__ import annotations

import torch
from torch import Tensor

# 32-bit integer mixing constants (a well-studied xorshift-multiply finaliser with full
# avalanche). They are < 2**31 so products with 32-bit values stay below 2**63: int64 math
# never overflows and CPU and GPU give bit-identical hashes.
_HASH_MUL = 0x45D9F3B
_MASK32 = 0xFFFFFFFF
# Golden-ratio increment (odd, < 2**31) that spreads consecutive token indices of a request.
_COUNTER_MUL = 0x61C88647
# 24 random bits -> a float32 uniform in (0, 1) without ever hitting 0 or 1.
_U24 = 2.0**-24


def _mix32(x: Tensor) -> Tensor:
    """Bijective 32-bit mix of int64 tensors holding values in [0, 2**32)."""
    x = ((x >> 16) ^ x) * _HASH_MUL & _MASK32
    x = ((x >> 16) ^ x) * _HASH_MUL & _MASK32
    return (x >> 16) ^ x


def row_keys(seed: Tensor, counter: Tensor) -> Tensor:
    """Per-row 32-bit RNG key from ``seed`` int64 ``[B]`` and token index ``counter`` int64 ``[B]``."""
    s = _mix32(_mix32(seed & _MASK32) ^ ((seed >> 32) & _MASK32))
    return _mix32((s + (counter & _MASK32) * _COUNTER_MUL) & _MASK32)


def uniform_noise(keys: Tensor, token_ids: Tensor) -> Tensor:
    """Counter-based uniforms in (0, 1), float32, same shape as ``token_ids`` int64 ``[B, N]``.

    ``keys`` int64 ``[B]`` from :func:`row_keys`. Value for (row, token) depends only on the
    row's key and the token id, so sorting/permuting columns does not change a draw.
    """
    h = _mix32((token_ids ^ keys[:, None]) & _MASK32)
    return ((h >> 8).to(torch.float32) + 0.5) * _U24


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy in nats of ``softmax(logits)`` per row: float32 ``[B, V]`` -> ``[B]``.

    ``-inf`` entries contribute 0. A row with NaN/+inf or all ``-inf`` gives NaN.
    """
    p = torch.softmax(logits, dim=-1)
    return -torch.special.xlogy(p, p).sum(dim=-1)


def row_is_valid(logits: Tensor) -> Tensor:
    """bool ``[B]``: the row has no NaN / +inf and at least one finite logit."""
    return torch.isfinite(logits.amax(dim=-1))


def validate_logits(logits: Tensor) -> None:
    """Eager check (syncs!): raise ``ValueError`` naming the bad rows. Not for the hot path."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
    bad = (~row_is_valid(logits.float())).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"logits rows {bad} contain NaN/+inf or are all -inf; the model produced no "
            "usable distribution (check the forward pass / dtype overflow)"
        )


def apply_temperature(logits: Tensor, temperature: Tensor) -> Tensor:
    """``logits / T`` per row; ``temperature`` float32 ``[B]``, every value > 0."""
    return logits / temperature[:, None]


def greedy(logits: Tensor) -> Tensor:
    """int64 ``[B]``: argmax per row (the lowest token id among exact ties)."""
    return logits.argmax(dim=-1)


def keep_sorted(sorted_logits: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor) -> Tensor:
    """bool keep-mask ``[B, V]`` over logits sorted in descending order per row.

    ``top_k`` int64 ``[B]`` (0 = off), ``top_p`` float32 ``[B]`` in (0, 1] (1 = off),
    ``min_p`` float32 ``[B]`` in [0, 1) (0 = off). The most likely token is always kept.
    """
    B, V = sorted_logits.shape
    pos = torch.arange(V, device=sorted_logits.device)
    k = torch.where(top_k > 0, top_k.clamp(max=V), V)
    keep = pos[None, :] < k[:, None]
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(dim=-1)
    mass_k = cum.gather(1, (k - 1)[:, None])  # probability mass of the top-k survivors
    # mass strictly before this token; top_p >= 1 is off (a float32 running sum reaches 1.0
    # before the tail, which would drop the last ~1e-7 of mass)
    keep &= ((cum - probs) < top_p[:, None] * mass_k) | (top_p[:, None] >= 1)
    keep &= probs >= min_p[:, None] * probs[:, :1]
    keep[:, 0] = True
    return keep


def filter_logits(logits: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor) -> Tensor:
    """Top-k, then top-p, then min-p (see :func:`keep_sorted`): masked entries become ``-inf``."""
    sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)  # ties: lower id first
    keep = torch.empty_like(logits, dtype=torch.bool)
    keep.scatter_(1, order, keep_sorted(sorted_logits, top_k, top_p, min_p))
    return logits.masked_fill(~keep, float("-inf"))


def top_k(logits: Tensor, k: Tensor) -> Tensor:
    """Keep the ``k[B]`` largest logits per row (0 = all); others become ``-inf``."""
    one, zero = torch.ones_like(k, dtype=torch.float32), torch.zeros_like(k, dtype=torch.float32)
    return filter_logits(logits, k, one, zero)


def top_p(logits: Tensor, p: Tensor) -> Tensor:
    """Nucleus: keep the smallest prefix (by probability) whose mass reaches ``p[B]``."""
    return filter_logits(logits, torch.zeros_like(p, dtype=torch.long), p, torch.zeros_like(p))


def min_p(logits: Tensor, m: Tensor) -> Tensor:
    """Keep tokens with ``prob >= m * max prob`` per row."""
    return filter_logits(logits, torch.zeros_like(m, dtype=torch.long), torch.ones_like(m), m)


def race_scores(logits: Tensor, keys: Tensor, token_ids: Tensor) -> Tensor:
    """Exponential-race scores ``logit - log(E)`` with ``E = -log(U)``; argmax = the sample.

    ``token_ids`` int64 ``[B, N]`` names the token of each column of ``logits`` ``[B, N]``.
    """
    e = -torch.log(uniform_noise(keys, token_ids))
    return logits - torch.log(e)


def sample(logits: Tensor, keys: Tensor) -> Tensor:
    """Seeded draw from ``softmax(logits)`` (already tempered/filtered): int64 ``[B]``.

    ``keys`` int64 ``[B]`` from :func:`row_keys`. No host sync, no generator state.
    """
    ids = torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)
    return race_scores(logits, keys, ids).argmax(dim=-1)


def topk_by_id(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``torch.topk`` of the last dim, with tied values ordered by token id ascending (the
    order of the sort path and of the histogram kernel), so that which of several tied tokens
    stays in a nucleus does not depend on the path taken. Ties at the k-th value itself may
    still keep any of the tied ids."""
    vals, idx = torch.topk(x, k, dim=-1)
    idx, by_id = idx.sort(dim=-1)
    vals, order = vals.gather(-1, by_id).sort(dim=-1, descending=True, stable=True)
    return vals, idx.gather(-1, order)
