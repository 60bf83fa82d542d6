"""Triton kernels of :class:`~resetfp4.sampling.BatchSampler`'s fast path (CUDA only).

One sampling step is 4-5 launches, all with static shapes (CUDA-graph capturable, no sync):

1. ``_stats_kernel`` grid ``(B, S)``: each program reads one of S slices of a logits row once
   for its max / first argmax / NaN-or-+inf flag, then again (from L2) for
   ``sum exp((x - m_s) / T_a)``, ``sum exp((x - m_s) / T_b)`` and, for ReSET, the raw
   ``sum e^(x-m_s)`` and ``sum (x-m_s) e^(x-m_s)`` that give the entropy. ``T_a``/``T_b`` are
   the two temperatures a row may get (ReSET: ``t_low``/``t_high``; fixed: both ``T``), so the
   partition function is ready before the policy has chosen.
2. ``_finalize_kernel`` grid ``(B,)``: merges the S partials (rescaled to the row max), and
   for ReSET snaps ``H_t``, runs the whole policy update of
   :meth:`~resetfp4.sampling.policy.ReSETState.step` in float64 and writes the trace views.
3. candidates: ``torch.topk`` of the raw logits (K, descending), or ``_hist_kernel`` /
   ``_compact_kernel`` (a top-n set, n <= K, unordered; sorted in 4) on the histogram rows
   that ``_finalize_kernel`` cleared.
4. ``_sample_kernel`` grid ``(B,)``: top-k / top-p / min-p over the candidates (see
   :mod:`resetfp4.sampling.candidates`), the seeded exponential race with the same counter
   hash as :mod:`resetfp4.sampling.pipeline`, greedy / invalid rows, boundary detection for
   the next token, the token counter and the truncation counter.

``import triton`` happens only here (``resetfp4.sampling.triton_available`` checks first).
"""

from __future__ import annotations

import triton
import triton.language as tl

MODE_GREEDY = tl.constexpr(0)
MODE_RESET = tl.constexpr(2)
NEG_INF = tl.constexpr(float("-inf"))
# entropies are snapped to k * 2**-24 nats (see resetfp4.sampling.policy.ENTROPY_QUANTUM)
QUANT_INV = tl.constexpr(16777216.0)
# GREEDY_EPS of batch.py: temperatures below it sample greedily
GREEDY_EPS = tl.constexpr(1e-5)


@triton.jit
def _stats_kernel(x_ptr, stride_x, V, chunk, ta_ptr, tb_ptr, pm_ptr, pam_ptr, pbad_ptr,
                  pza_ptr, pzb_ptr, pz1_ptr, ps1_ptr, S_MAX,
                  ENTROPY: tl.constexpr, TWO: tl.constexpr, BLOCK: tl.constexpr):
    """Per (row, slice) partials; outputs ``[B, S_MAX]`` float32 / int32 buffers."""
    row = tl.program_id(0)
    sl = tl.program_id(1)
    base = x_ptr + row.to(tl.int64) * stride_x
    lo = sl * chunk  # chunk is a multiple of BLOCK: only the vocabulary end needs a mask
    offs = tl.arange(0, BLOCK)
    vmax = tl.full([BLOCK], NEG_INF, tl.float32)
    imax = tl.zeros([BLOCK], tl.int32)
    bad = tl.zeros([BLOCK], tl.int32)
    for start in range(0, chunk, BLOCK):
        o = lo + start + offs
        x = tl.load(base + o, mask=o < V, other=NEG_INF).to(tl.float32)
        bad = tl.maximum(bad, ((x != x) | (x == float("inf"))).to(tl.int32))
        up = x > vmax  # strict: a lane keeps its first index among ties
        vmax = tl.where(up, x, vmax)
        imax = tl.where(up, o, imax)
    m = tl.max(vmax, 0)
    am = tl.min(tl.where(vmax == m, imax, V), 0)
    m0 = tl.where(m > NEG_INF, m, 0.0)  # an all -inf slice sums to 0 instead of NaN
    inv_a = 1.0 / tl.load(ta_ptr + row)
    za = tl.zeros([BLOCK], tl.float32)
    zb = tl.zeros([BLOCK], tl.float32)
    z1 = tl.zeros([BLOCK], tl.float32)
    s1 = tl.zeros([BLOCK], tl.float32)
    if TWO:
        inv_b = 1.0 / tl.load(tb_ptr + row)
    for start in range(0, chunk, BLOCK):
        o = lo + start + offs
        d = tl.load(base + o, mask=o < V, other=NEG_INF).to(tl.float32) - m0
        za += tl.exp(d * inv_a)
        if TWO:
            zb += tl.exp(d * inv_b)
        if ENTROPY:
            e = tl.exp(d)
            z1 += e
            s1 += tl.where(d > NEG_INF, d * e, 0.0)
    p = row * S_MAX + sl
    tl.store(pm_ptr + p, m)
    tl.store(pam_ptr + p, am)
    tl.store(pbad_ptr + p, tl.max(bad, 0))
    tl.store(pza_ptr + p, tl.sum(za, 0))
    if TWO:
        tl.store(pzb_ptr + p, tl.sum(zb, 0))
    if ENTROPY:
        tl.store(pz1_ptr + p, tl.sum(z1, 0))
        tl.store(ps1_ptr + p, tl.sum(s1, 0))


@triton.jit
def _snap(h):
    """float64 ``h`` -> nearest multiple of 2**-24 (ties to even), like ``snap_entropy``."""
    y = h * QUANT_INV
    f = tl.floor(y)
    d = y - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    up = (d > 0.5) | ((d == 0.5) & odd)
    return tl.where(up, f + 1.0, f) / QUANT_INV


@triton.jit
def _finalize_kernel(
    pm_ptr, pam_ptr, pbad_ptr, pza_ptr, pzb_ptr, pz1_ptr, ps1_ptr, S, S_MAX,
    mode_ptr, ta_ptr, tb_ptr, fixed_ptr, tlow_ptr, thigh_ptr, tau0_ptr, win_ptr, start_ptr,
    ring_ptr, ssum_ptr, sn_ptr, tot_ptr, n_ptr, MAXW,
    m_out, am_out, z_out, teff_out, valid_out, h_out, temp_out, lstart_out, lerr_out, err_ptr,
    hist_ptr,
    RESET: tl.constexpr, TWO: tl.constexpr, SP2: tl.constexpr, WP2: tl.constexpr,
    ZERO_HIST: tl.constexpr, HP2: tl.constexpr,
):
    """Merge the slice partials of one row; ReSET: the policy step of ``ReSETState.step``.
    ``ZERO_HIST``: also clear the row's ``hist`` ``[B, HIST_BINS + 1]`` for ``_hist_kernel``
    (which runs after this kernel), so the step needs no memset launch."""
    row = tl.program_id(0)
    if ZERO_HIST:
        hb = tl.arange(0, HP2)
        tl.store(hist_ptr + row * (HIST_BINS + 1) + hb, tl.zeros([HP2], tl.int32), mask=hb < HIST_BINS + 1)
    s = tl.arange(0, SP2)
    sm = s < S
    q = row * S_MAX + s
    pm = tl.load(pm_ptr + q, mask=sm, other=NEG_INF)
    m = tl.max(pm, 0)
    am = tl.min(tl.where(sm & (pm == m), tl.load(pam_ptr + q, mask=sm, other=0), 2147483647), 0)
    valid = (tl.max(tl.load(pbad_ptr + q, mask=sm, other=0), 0) == 0) & (m > NEG_INF)
    live = sm & (pm > NEG_INF)
    dm = tl.where(live, pm - m, 0.0)  # <= 0: rescale each slice's sums to the row max
    ta = tl.load(ta_ptr + row)
    za = tl.sum(tl.where(live, tl.load(pza_ptr + q, mask=sm, other=0.0) * tl.exp(dm / ta), 0.0), 0)
    zb = za
    if TWO:
        tb = tl.load(tb_ptr + row)
        zb = tl.sum(tl.where(live, tl.load(pzb_ptr + q, mask=sm, other=0.0) * tl.exp(dm / tb), 0.0), 0)
    mode = tl.load(mode_ptr + row)
    temp = tl.load(fixed_ptr + row).to(tl.float64)
    hi = mode == -1  # False: fixed rows use the T_a sum
    start = tl.load(start_ptr + row) != 0
    if RESET:
        ed = tl.exp(dm)
        z1 = tl.sum(tl.where(live, tl.load(pz1_ptr + q, mask=sm, other=0.0) * ed, 0.0), 0)
        s1p = tl.load(ps1_ptr + q, mask=sm, other=0.0) + dm * tl.load(pz1_ptr + q, mask=sm, other=0.0)
        s1 = tl.sum(tl.where(live, s1p * ed, 0.0), 0)
        h32 = tl.log(z1) - s1 / z1  # H = log Z - E[x - m]
        h = _snap(h32.to(tl.float64))
        tl.store(h_out + row, tl.where(valid, h.to(tl.float32), float("nan")))
        t_reset, hi = _policy(row, h, start, valid, tlow_ptr, thigh_ptr, tau0_ptr, win_ptr,
                              ring_ptr, ssum_ptr, sn_ptr, tot_ptr, n_ptr, MAXW, WP2)
        temp = tl.where(mode == MODE_RESET, t_reset, temp)
        hi = hi & (mode == MODE_RESET)
    else:
        tl.store(h_out + row, float("nan"))
    temp = tl.where(mode == MODE_GREEDY, 0.0, temp)
    teff = tl.where(temp < GREEDY_EPS, 0.0, temp.to(tl.float32))
    tl.store(m_out + row, m)
    tl.store(am_out + row, am.to(tl.int64))
    tl.store(z_out + row, tl.where(hi, zb, za))
    tl.store(teff_out + row, teff)
    tl.store(valid_out + row, valid)
    tl.store(temp_out + row, temp.to(tl.float32))
    tl.store(lstart_out + row, start & valid)
    tl.store(lerr_out + row, ~valid)
    tl.store(err_ptr + row, (tl.load(err_ptr + row) != 0) | ~valid)


@triton.jit
def _policy(row, h, start, update, tlow_ptr, thigh_ptr, tau0_ptr, win_ptr,
            ring_ptr, ssum_ptr, sn_ptr, tot_ptr, n_ptr, MAXW, WP2: tl.constexpr):
    """float64 steps 3-7 of the policy for one row; returns ``(T, T == t_high chosen)``."""
    w = tl.load(win_ptr + row)
    n = tl.load(n_ptr + row)
    total = tl.load(tot_ptr + row)
    step_sum = tl.where(start, 0.0, tl.load(ssum_ptr + row))
    step_n = tl.where(start, 0.0, tl.load(sn_ptr + row))
    k = tl.arange(0, WP2)
    rbase = ring_ptr + row * (MAXW + 1)
    ring_sum = tl.sum(tl.load(rbase + k, mask=k < MAXW, other=0.0), 0)
    win_n = tl.minimum(n, w)
    win_mean = ring_sum / tl.maximum(win_n, 1.0)
    h_step = tl.where(step_n >= w, step_sum / tl.maximum(step_n, 1.0), tl.where(win_n > 0, win_mean, h))
    h_bar = tl.where(n > 0, total / tl.maximum(n, 1.0), h_step)
    tau = tl.where(h_step > h_bar, h_step, tl.load(tau0_ptr + row))
    hi = h >= tau
    temp = tl.where(hi, tl.load(thigh_ptr + row), tl.load(tlow_ptr + row))
    pos = n.to(tl.int64) % w.to(tl.int64)
    tl.store(rbase + pos, h, mask=update)
    tl.store(ssum_ptr + row, step_sum + h, mask=update)
    tl.store(sn_ptr + row, step_n + 1.0, mask=update)
    tl.store(tot_ptr + row, total + h, mask=update)
    tl.store(n_ptr + row, n + 1.0, mask=update)
    return temp, hi


# Candidate selection without a sort ("hist"): tokens are binned by their raw-logit distance to
# the row max, HIST_RES bins per nat (1/8 nat), HIST_BINS bins (everything >= 32 nats below the
# max shares the last one). The candidates are the tokens of the longest prefix of bins
# holding <= K tokens: a top-n set (n <= K), since bins are ordered by value.
# The cost of tl.histogram grows with the bin count (per warp, a ballot per bin bit and a
# popcount per bin): graph-replayed step at vocab 151,936 on an H100
# (dev/engine/sampler_select_bench.py): 2048 bins of 1/16 nat 40.6 / 89.0 µs at batch 1 / 8,
# 256 bins of 1/8 nat 26.6 / 39.9 µs (torch.topk: 78.6 / 90.2). A token 32 raw nats below the
# max weighs e^-32/T of it: outside any nucleus at the temperatures reasoning models use.
HIST_BINS_N = 256
HIST_BINS = tl.constexpr(HIST_BINS_N)
HIST_RES = tl.constexpr(8.0)


@triton.jit
def _bin_of(x, m):
    """int32 bin of logits ``x`` below the row max ``m`` (NaN and -inf go to the last bin)."""
    d = (m - x) * HIST_RES
    return tl.where(d < HIST_BINS - 1.0, d, HIST_BINS - 1.0).to(tl.int32)


@triton.jit
def _hist_kernel(x_ptr, stride_x, V, chunk, m_ptr, hist_ptr, BLOCK: tl.constexpr):
    """Per (row, slice): add the slice's bin counts to ``hist`` ``[B, HIST_BINS + 1]`` int32."""
    row = tl.program_id(0)
    lo = tl.program_id(1) * chunk
    base = x_ptr + row.to(tl.int64) * stride_x
    m = tl.load(m_ptr + row)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([HIST_BINS], tl.int32)
    for start in range(0, chunk, BLOCK):
        o = lo + start + offs
        x = tl.load(base + o, mask=o < V, other=float("-inf")).to(tl.float32)
        acc += tl.histogram(_bin_of(x, m), HIST_BINS)  # padding lands in the last bin: harmless
    b = tl.arange(0, HIST_BINS)
    tl.atomic_add(hist_ptr + row * (HIST_BINS + 1) + b, acc, mask=acc > 0)


@triton.jit
def _compact_kernel(x_ptr, stride_x, V, chunk, m_ptr, hist_ptr, cval_ptr, cidx_ptr, K,
                    BLOCK: tl.constexpr):
    """Per (row, slice): append the slice's candidates (unordered) to ``cval``/``cidx``
    ``[B, K]``; the row's candidate count is ``hist[row, HIST_BINS]`` (may exceed K)."""
    row = tl.program_id(0)
    lo = tl.program_id(1) * chunk
    base = x_ptr + row.to(tl.int64) * stride_x
    m = tl.load(m_ptr + row)
    b = tl.arange(0, HIST_BINS)
    cum = tl.cumsum(tl.load(hist_ptr + row * (HIST_BINS + 1) + b), 0)
    # last bin of the <= K prefix; a top bin with > K tokens is still taken (capped, inexact)
    bstar = tl.maximum(tl.max(tl.where(cum <= K, b, -1), 0), 0)
    cnt_ptr = hist_ptr + row * (HIST_BINS + 1) + HIST_BINS
    offs = tl.arange(0, BLOCK)
    for start in range(0, chunk, BLOCK):
        o = lo + start + offs
        x = tl.load(base + o, mask=o < V, other=float("-inf")).to(tl.float32)
        sel = (_bin_of(x, m) <= bstar) & (o < V)
        si = sel.to(tl.int32)
        first = tl.atomic_add(cnt_ptr, tl.sum(si, 0))
        at = first + tl.cumsum(si, 0) - 1
        ok = sel & (at < K)
        tl.store(cval_ptr + row * K + at, x, mask=ok)
        tl.store(cidx_ptr + row * K + at, o.to(tl.int64), mask=ok)


@triton.jit
def _sort_candidates(v, ids):
    """Sort candidates by value descending, token id ascending among ties (packed int64 keys:
    order-preserving float bits, shifted to a signed range, over the inverted id)."""
    u = v.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    okey = tl.where(u >= 0x80000000, u ^ 0xFFFFFFFF, u | 0x80000000)
    key = tl.sort(((okey - 0x80000000) << 32) | (0xFFFFFFFF - ids), 0, descending=True)
    ok = (key >> 32) + 0x80000000
    u = tl.where(ok >= 0x80000000, ok ^ 0x80000000, ok ^ 0xFFFFFFFF)
    return u.to(tl.int32).to(tl.float32, bitcast=True), 0xFFFFFFFF - (key & 0xFFFFFFFF)


@triton.jit
def _mix32(x):
    """Bijective 32-bit mix of int64 values in [0, 2**32) (same as pipeline._mix32)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    return (x >> 16) ^ x


@triton.jit
def _sample_kernel(
    vals_ptr, idx_ptr, K, V, m_ptr, am_ptr, z_ptr, teff_ptr, valid_ptr,
    topk_ptr, topp_ptr, minp_ptr, seed_ptr, counter_ptr,
    nl_tab, dnl_tab, pending_ptr, lastnl_ptr, ids_ptr, trunc_ptr, count_ptr, count_stride,
    KP2: tl.constexpr, SORTED: tl.constexpr,
):
    """Top-k/p/min-p over the candidates, the race, and the per-row bookkeeping.

    ``SORTED``: candidates come from ``torch.topk`` (all K, descending); else from
    ``_compact_kernel`` (``count_ptr[row * count_stride]`` of them, unordered)."""
    row = tl.program_id(0)
    c = tl.arange(0, KP2)
    full = True
    if SORTED:
        n = K
    else:
        total = tl.load(count_ptr + row * count_stride)
        full = total <= K  # False: a top bin overflowed the buffer, the set is not a top-n
        n = tl.minimum(total, K)
    cm = c < n
    v = tl.load(vals_ptr + row * K + c, mask=cm, other=NEG_INF).to(tl.float32)
    ids = tl.load(idx_ptr + row * K + c, mask=cm, other=0)
    if not SORTED:
        v, ids = _sort_candidates(v, ids)  # padding (-inf) sorts last
    m = tl.load(m_ptr + row)
    z = tl.load(z_ptr + row)
    t = tl.load(teff_ptr + row)
    greedy = t == 0.0
    t1 = tl.where(greedy, 1.0, t)
    tempered = tl.math.div_rn(v, t1)  # IEEE division, as torch's logits / T
    probs = tl.where(cm, tl.exp((v - m) / t1) / z, 0.0)
    cum = tl.cumsum(probs, 0)
    top_k = tl.load(topk_ptr + row)
    k_eff = tl.where(top_k > 0, tl.minimum(top_k, V), V)
    inside = (k_eff <= n) & full
    mass_k = tl.where(inside, tl.sum(tl.where(c == k_eff - 1, cum, 0.0), 0), 1.0)
    top_p = tl.load(topp_ptr + row)
    lim = tl.where(top_p >= 1.0, float("inf"), top_p * mass_k)  # top_p >= 1 is off
    keep = cm & (c < k_eff) & ((cum - probs) < lim)
    keep = keep & (probs >= tl.load(minp_ptr + row) / z)
    keep = keep | (c == 0)
    mass_all = tl.sum(tl.where(c == n - 1, cum, 0.0), 0)  # mass of all n candidates
    # top_p >= 1: the nucleus is the whole vocabulary, which n < V candidates never hold
    reach = tl.where(top_p >= 1.0, n >= V, mass_all >= top_p)
    exact = inside | (full & (k_eff == V) & reach)
    # counter-based noise keyed by (seed, token index, token id): pipeline.row_keys/uniform_noise
    seed = tl.load(seed_ptr + row)
    counter = tl.load(counter_ptr + row)
    sk = _mix32(_mix32(seed & 0xFFFFFFFF) ^ ((seed >> 32) & 0xFFFFFFFF))
    key = _mix32((sk + (counter & 0xFFFFFFFF) * 0x61C88647) & 0xFFFFFFFF)
    hsh = _mix32((ids ^ key) & 0xFFFFFFFF)
    u = ((hsh >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08  # 2**-24
    score = tl.where(keep, tempered - tl.log(-tl.log(u)), NEG_INF)
    win = tl.argmax(score, 0, tie_break_left=True)
    drawn = tl.sum(tl.where(c == win, ids, 0), 0)
    valid = tl.load(valid_ptr + row) != 0
    tok = tl.where(greedy, tl.load(am_ptr + row), drawn)
    tok = tl.where(valid, tok, 0)
    tl.store(ids_ptr + row, tok)
    # boundary flags for the next token (an invalid row keeps its pending start)
    nl = tl.load(nl_tab + tok) != 0
    start_next = (tl.load(dnl_tab + tok) != 0) | (nl & (tl.load(lastnl_ptr + row) != 0))
    tl.store(pending_ptr + row, start_next, mask=valid)
    tl.store(lastnl_ptr + row, nl, mask=valid)
    tl.store(counter_ptr + row, counter + 1)
    cut = valid & (~greedy) & (~exact)
    tl.store(trunc_ptr + row, tl.load(trunc_ptr + row) + cut.to(tl.int64))


# Partial buffers hold up to this many slices per row (B=1 at vocab 151,936: ~75 slices).
MAX_SLICES = 128
# Elements per load in the stats kernel (4 warps x 32 lanes x 8 fp32).
STATS_BLOCK = 1024


# Warps of the one program per row that sorts the candidates and draws (_sample_kernel).
SAMPLE_WARPS = 16  # H100 graph step, vocab 151,936: batch 1 48.7 -> 41.7 µs vs 4 warps (8: 42.2)


def slices_for(batch: int, vocab: int, n_sm: int) -> tuple[int, int]:
    """``(slices per row, elements per slice)``: about two programs per SM over the batch."""
    want = max(1, min(MAX_SLICES, triton.cdiv(2 * n_sm, batch)))
    chunk = triton.cdiv(triton.cdiv(vocab, want), STATS_BLOCK) * STATS_BLOCK
    return triton.cdiv(vocab, chunk), chunk


# num_warps of the step's kernels besides _sample_kernel (SAMPLE_WARPS); module constants so
# that a decode-step A/B can set them (dev/engine/step_ms.py --set).
STATS_WARPS = 4
FINALIZE_WARPS = 1
HIST_WARPS = 4
COMPACT_WARPS = 4


def launch_step(s, x, B: int, vals=None, idx=None) -> None:
    """One fast step of ``BatchSampler`` ``s`` on logits ``x`` ``[B, V]`` (fp32/bf16, unit
    stride along V). Candidates: ``vals``/``idx`` ``[B, K]`` from ``torch.topk``, or None to
    select them with the histogram kernels (no sort)."""
    f = s.fast
    V = s.vocab_size
    S, chunk = slices_for(B, V, f["n_sm"])
    reset = s.track_entropy
    hist = f["hist"]
    ordered = vals is not None
    _stats_kernel[(B, S)](
        x, x.stride(0), V, chunk, s.temp_a, s.temp_b, f["pm"], f["pam"], f["pbad"], f["pza"],
        f["pzb"], f["pz1"], f["ps1"], MAX_SLICES, ENTROPY=reset, TWO=reset, BLOCK=STATS_BLOCK,
        num_warps=STATS_WARPS,
    )
    st = s.state
    _finalize_kernel[(B,)](
        f["pm"], f["pam"], f["pbad"], f["pza"], f["pzb"], f["pz1"], f["ps1"], S, MAX_SLICES,
        s.mode, s.temp_a, s.temp_b, s.fixed_t, s.t_low, s.t_high, s.tau0, s.window,
        s.pending_start, st.ring, st.step_sum, st.step_n, st.total, st.n, st.max_window,
        f["m"], f["am"], f["z"], f["teff"], f["valid"], s.last_entropy, s.last_temperature,
        s.last_start, s.last_error, s.error, hist,
        RESET=reset, TWO=reset, SP2=triton.next_power_of_2(S),
        WP2=triton.next_power_of_2(st.max_window), ZERO_HIST=not ordered,
        HP2=triton.next_power_of_2(HIST_BINS_N + 1), num_warps=FINALIZE_WARPS,
    )
    K = s.candidates
    if not ordered:
        vals, idx = f["cval"], f["cidx"]
        _hist_kernel[(B, S)](x, x.stride(0), V, chunk, f["m"], hist, BLOCK=STATS_BLOCK,
                             num_warps=HIST_WARPS)
        _compact_kernel[(B, S)](x, x.stride(0), V, chunk, f["m"], hist, vals, idx, K,
                                BLOCK=STATS_BLOCK, num_warps=COMPACT_WARPS)
    _sample_kernel[(B,)](
        vals, idx, K, V, f["m"], f["am"], f["z"], f["teff"], f["valid"], s.top_k, s.top_p,
        s.min_p, s.seed, s.counter, s.boundary.is_newline, s.boundary.has_double_newline,
        s.pending_start, s.last_nl, s.ids, s.truncated, hist[:, HIST_BINS_N], HIST_BINS_N + 1,
        KP2=triton.next_power_of_2(K), SORTED=ordered, num_warps=SAMPLE_WARPS,
    )
