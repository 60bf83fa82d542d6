"""Top-p over a top-K candidate set: the fast sampler's algorithm, in plain torch.

The full-vocabulary sort of :func:`~resetfp4.sampling.pipeline.keep_sorted` costs hundreds of
µs per step at vocab 151,936. Instead, the ``K`` largest raw logits of each row are taken with
``torch.topk`` (temperature is monotone, so they are also the K largest tempered logits), and
top-k / top-p / min-p and the exponential race run on those K candidates only, with every
probability normalised by the FULL-vocabulary partition function ``Z_T`` (one extra reduction).

Exactness: the nucleus, and so the draw, equal the full-sort pipeline's whenever it lies inside
the candidates, i.e. when ``top_k`` is in ``1..K``, or the K candidates carry at least
``top_p`` of the tempered mass. Otherwise (a very flat distribution, or ``K < top_k < V``) the
nucleus is truncated to the K candidates (renormalised) and the row is reported in ``exact``
= False; :class:`~resetfp4.sampling.BatchSampler` counts such tokens per slot
(``truncated``). Greedy rows never need candidates.

This module is the reference for the Triton kernels in :mod:`resetfp4.sampling.kernels` and
the path used on CPU or where Triton is missing. Shapes: B rows, V vocabulary, K candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from resetfp4.sampling.pipeline import race_scores


def partition(logits: Tensor, m: Tensor, temperature: Tensor) -> Tensor:
    """float32 ``[B]``: ``Z_T = sum_v exp((x_v - m) / T)`` over the full row.

    ``logits`` float32 ``[B, V]``; ``m`` float32 ``[B]`` the row max (finite for valid rows);
    ``temperature`` float32 ``[B]`` > 0. The max token contributes 1, so ``Z_T >= 1``.
    """
    m_safe = torch.where(torch.isfinite(m), m, 0.0)
    return torch.exp((logits - m_safe[:, None]) / temperature[:, None]).sum(dim=-1)


def candidate_keep(
    vals: Tensor, m: Tensor, z: Tensor, temperature: Tensor, vocab: int,
    top_k: Tensor, top_p: Tensor, min_p: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep-mask over the candidates, their tempered logits, and whether the row is exact.

    ``vals`` float32 ``[B, K]``: the K largest raw logits per row, descending. ``m``, ``z``,
    ``temperature`` float32 ``[B]`` (see :func:`partition`); ``top_k`` int64 ``[B]`` (0 = off),
    ``top_p`` / ``min_p`` float32 ``[B]``. Returns ``(keep bool [B, K], tempered float32
    [B, K], exact bool [B])``; the first candidate is always kept.
    """
    K = vals.shape[1]
    pos = torch.arange(K, device=vals.device)
    tempered = vals / temperature[:, None]
    probs = torch.exp((vals - m[:, None]) / temperature[:, None]) / z[:, None]
    cum = probs.cumsum(dim=-1)
    k_eff = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
    inside = k_eff <= K  # the top-k survivors are all candidates: their mass is known exactly
    mass_k = torch.where(inside, cum.gather(1, (k_eff.clamp(max=K) - 1)[:, None]).squeeze(1), 1.0)
    keep = pos[None, :] < k_eff[:, None]
    # mass strictly before this token; top_p >= 1 is off, as in pipeline.keep_sorted
    keep &= ((cum - probs) < (top_p * mass_k)[:, None]) | (top_p >= 1)[:, None]
    keep &= probs >= (min_p / z)[:, None]  # p_max = 1 / Z_T (the max token has x = m)
    keep[:, 0] = True
    # outside: the nucleus ends inside the candidates iff their total mass reaches top_p
    # (exact only when top-k is off, i.e. mass_k = 1); with top_p >= 1 the nucleus is the
    # whole vocabulary, which K < V candidates never hold (their float32 sum may still round
    # to 1.0)
    exact = inside | ((k_eff == vocab) & (cum[:, -1] >= top_p) & ((top_p < 1) | (K >= vocab)))
    return keep, tempered, exact


def draw(vals: Tensor, idx: Tensor, keys: Tensor, keep: Tensor, tempered: Tensor) -> Tensor:
    """int64 ``[B]``: the exponential-race winner among kept candidates.

    ``idx`` int64 ``[B, K]`` token ids of the candidates (the noise is keyed by token id, so
    the draw equals the full-vocabulary race restricted to the same kept set); ``keys`` int64
    ``[B]`` from :func:`~resetfp4.sampling.pipeline.row_keys`.
    """
    scores = race_scores(tempered, keys, idx).masked_fill(~keep, float("-inf"))
    return idx.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1)
