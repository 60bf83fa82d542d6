"""The decode step's bookkeeping in one Triton launch (CUDA only; imports triton).

After the sampler, a step stores each row's token, entropy, temperature and step-start flag
at the row's history column ``hidx``, copies the token to ``tok`` (the next step's input),
counts the step, and advances ``hidx`` and ``pos`` (both clamped). In torch that is ten
small kernels, about 18 µs of a graph-replayed Qwen3-8B step on an H100 at any batch size
(``dev/engine/step_timeline.py``); :func:`launch_record` does it in one.
:meth:`resetfp4.engine.decode.DecodeRunner._record_torch` is the reference (CPU, or no
Triton); ``tests/engine/test_record_kernel.py`` checks them bit for bit.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _record_kernel(ids_ptr, ent_ptr, temp_ptr, start_ptr, tok_ptr, pos_ptr, hidx_ptr, step_ptr,
                   hid_ptr, hent_ptr, htemp_ptr, hstart_ptr, s_id, s_ent, s_temp, s_start,
                   B, POS_MAX, HIDX_MAX, ADVANCE_POS: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    m = r < B
    ids = tl.load(ids_ptr + r, mask=m, other=0)
    col = tl.load(hidx_ptr + r, mask=m, other=0)
    row = r.to(tl.int64)
    tl.store(hid_ptr + row * s_id + col, ids, mask=m)
    tl.store(hent_ptr + row * s_ent + col, tl.load(ent_ptr + r, mask=m, other=0.0), mask=m)
    tl.store(htemp_ptr + row * s_temp + col, tl.load(temp_ptr + r, mask=m, other=0.0), mask=m)
    tl.store(hstart_ptr + row * s_start + col, tl.load(start_ptr + r, mask=m, other=0), mask=m)
    tl.store(tok_ptr + r, ids, mask=m)
    tl.store(hidx_ptr + r, tl.minimum(col + 1, HIDX_MAX), mask=m)
    if ADVANCE_POS:
        p = tl.load(pos_ptr + r, mask=m, other=0)
        tl.store(pos_ptr + r, tl.minimum(p + 1, POS_MAX), mask=m)
    one = r < 1
    tl.store(step_ptr + r, tl.load(step_ptr + r, mask=one, other=0) + 1, mask=one)


def launch_record(ids: Tensor, ent: Tensor, temp: Tensor, start: Tensor, tok: Tensor, pos: Tensor,
                  hidx: Tensor, step: Tensor, hist_ids: Tensor, hist_ent: Tensor, hist_temp: Tensor,
                  hist_start: Tensor, pos_max: int, advance_pos: bool) -> None:
    """The bookkeeping of one step for rows ``0..B-1`` (``B = ids.numel()``): see the module
    docstring. ``ids`` int64, ``ent`` / ``temp`` float32, ``start`` bool, all ``[B]`` with unit
    stride; ``tok``, ``pos``, ``hidx`` int64 ``[>= B]``; ``step`` int64 ``[1]``; the histories
    ``[>= B, T]`` with unit column stride. ``pos`` becomes ``min(pos + 1, pos_max)`` when
    ``advance_pos``; ``hidx`` becomes ``min(hidx + 1, T - 1)``."""
    b = ids.numel()
    for t in (hist_ids, hist_ent, hist_temp, hist_start):
        if t.stride(1) != 1:
            raise ValueError("launch_record needs history buffers with unit column stride")
    _record_kernel[(1,)](
        ids, ent, temp, start, tok, pos, hidx, step, hist_ids, hist_ent, hist_temp, hist_start,
        hist_ids.stride(0), hist_ent.stride(0), hist_temp.stride(0), hist_start.stride(0),
        b, pos_max, hist_ids.shape[1] - 1, ADVANCE_POS=advance_pos,
        BLOCK=max(16, triton.next_power_of_2(b)), num_warps=4 if b > 128 else 1,
    )
