"""Step statistics of ReSET runs from their per-token dumps (CPU, after the GPU study).

For every sample of a traced run (``tokens.jsonl`` or its compact ``tokens.npz``) it
replays the *regime* of ReSET's step-aware threshold -- which tokens sit in a
high-entropy step (``H_step > H_bar``: the threshold is ``H_step``) and which in a
low-entropy one (the threshold is ``tau0``) -- and reports, per run:

- steps per sample and tokens per step (steps are the dump's ``starts``);
- the share of "hot" tokens: sampled at ``T_high`` (ReSET runs, ``hot_source:
  sampled``), or for fixed-temperature runs the tokens ReSET *would* sample hot with
  the given parameters (``hot_source: replayed``);
- the hot share inside high- and low-entropy-step tokens;
- where in a step the hot tokens fall: by tenth of the step, and inside the first ``w``
  tokens of a step (where the threshold comes from the cross-step window) or after;
- accuracy by quartile of a sample's hot share (samples ranked, split in 4 equal groups);
- the entropy percentiles.

The replay follows :func:`resetfp4.sampling.policy.reset_temperatures` in float64
without its entropy snapping, so it can differ from the sampled temperatures on a few
tokens at the threshold; ``replay_agreement`` reports how often they agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resetfp4.eval.calibrate import ENTROPY_PERCENTILES, entropies_of, iter_token_dump
from resetfp4.eval.runner import CONFIG_FILE, TOKENS_FILE, TOKENS_NPZ

PERCENTILES = ENTROPY_PERCENTILES  # the ones params.json records too
N_POSITION_BINS = 10  # tenths of a step
TEMP_ATOL = 1e-3  # temperatures stored as float16 in tokens.npz: 0.3 -> 0.2998


@dataclass(frozen=True)
class Policy:
    """ReSET parameters used to classify tokens (entropies in nats)."""

    tau0: float
    t_high: float = 1.0
    window: int = 32


def regimes(h: np.ndarray, starts: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """(high_step, replayed_hot) for one sample, both bool ``[T]``.

    ``h``: float ``[T]`` token entropies (nats); ``starts``: bool ``[T]``, True where a new
    step begins before token t (token 0 always begins one). ``high_step[t]``: the step-aware
    threshold at t is ``H_step`` (``H_step > H_bar``); ``replayed_hot[t]``: ``h[t] >=`` the
    threshold, i.e. ReSET would sample token t at ``T_high``.
    """
    h = np.asarray(h, dtype=np.float64)
    n = h.size
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    w = policy.window
    t = np.arange(n)
    cs = np.concatenate([[0.0], np.cumsum(h)])  # cs[t] = sum of h[:t]
    st = np.asarray(starts, dtype=bool).copy()
    st[0] = True
    step0 = np.maximum.accumulate(np.where(st, t, 0))
    step_n = t - step0
    with np.errstate(invalid="ignore", divide="ignore"):
        step_mean = (cs[t] - cs[step0]) / step_n
        win_n = np.minimum(w, t)
        win_mean = (cs[t] - cs[np.maximum(0, t - w)]) / win_n
        h_step = np.where(step_n >= w, step_mean, np.where(t > 0, win_mean, h))
        h_bar = np.where(t > 0, cs[t] / np.maximum(t, 1), h_step)
    high = h_step > h_bar
    tau = np.where(high, h_step, policy.tau0)
    return high, h >= tau


def step_lengths(starts: np.ndarray) -> np.ndarray:
    """Token counts of the steps of one sample (``starts``: bool ``[T]``), int ``[n_steps]``."""
    st = np.asarray(starts, dtype=bool).copy()
    if st.size == 0:
        return np.zeros(0, dtype=np.int64)
    st[0] = True
    idx = np.flatnonzero(st)
    return np.diff(np.append(idx, st.size))


def _positions(lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index within its step, length of its step) per token, int ``[T]`` each, from the
    step lengths of :func:`step_lengths`."""
    first = np.cumsum(lens) - lens
    n = int(lens.sum())
    return np.arange(n) - np.repeat(first, lens), np.repeat(lens, lens)


def iter_samples(run_dir: str | Path) -> Iterator[dict]:
    """Per-sample token records of a run: ``tokens.jsonl`` and ``tokens.npz`` merged.

    Each record has ``id``, ``sample``, ``correct``, ``entropies``, ``temperatures`` and
    ``starts`` (arrays or lists). A run resumed on another machine may hold the early
    problems in ``tokens.npz`` and the later ones in ``tokens.jsonl``; a (problem, sample)
    present in both is taken from the JSONL.
    """
    run = Path(run_dir)
    jsonl, npz = run / TOKENS_FILE, run / TOKENS_NPZ
    if not jsonl.is_file() and not npz.is_file():
        raise FileNotFoundError(
            f"{run} has neither {TOKENS_FILE} nor {TOKENS_NPZ}: analyse runs made with tracing on "
            "(`resetfp4 eval --dump-tokens`)"
        )
    seen: set[tuple[str, int]] = set()
    if jsonl.is_file():
        for rec in iter_token_dump(jsonl):
            seen.add((str(rec["id"]), int(rec["sample"])))
            yield rec
    if npz.is_file():
        for rec in _iter_npz(npz):
            if (rec["id"], rec["sample"]) not in seen:
                yield rec


def collect_run_entropies(run_dir: str | Path) -> np.ndarray:
    """All token entropies of a run (``tokens.jsonl`` and/or ``tokens.npz``), float64 ``[n]``."""
    return entropies_of(iter_samples(run_dir), run_dir)


def write_tokens_npz(run_dir: str | Path, records: Iterable[dict] | None = None) -> Path:
    """Pack the token records of a run into ``tokens.npz`` (compressed, ~5 bytes a token).

    ``records``: default :func:`iter_samples` (``tokens.jsonl`` merged with an existing
    ``tokens.npz``, so packing a resumed run keeps the problems dumped before).
    Arrays: ``ids`` (str), ``sample`` int32, ``correct`` bool, ``offsets`` int64
    ``[n_samples + 1]``, and per token ``entropies`` float16 (nats), ``temperatures``
    float16 and ``starts`` bool. Token ids are not kept.
    """
    run = Path(run_dir)
    recs = list(iter_samples(run) if records is None else records)
    lens = [len(r["entropies"]) for r in recs]

    def cat(key: str, dtype, fill) -> np.ndarray:
        parts = [
            np.asarray(r[key] if len(r[key]) else [fill] * n, dtype=dtype)
            for r, n in zip(recs, lens, strict=True)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    path = run / TOKENS_NPZ
    np.savez_compressed(
        path,
        ids=np.array([str(r["id"]) for r in recs], dtype=str),
        sample=np.array([int(r["sample"]) for r in recs], dtype=np.int32),
        correct=np.array([bool(r["correct"]) for r in recs], dtype=bool),
        offsets=np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]),
        entropies=cat("entropies", np.float16, 0.0),
        temperatures=cat("temperatures", np.float16, 0.0),
        starts=cat("starts", bool, False),
    )
    return path


def _iter_npz(path: Path) -> Iterator[dict]:
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    off = d["offsets"]
    for i in range(len(d["ids"])):
        a, b = int(off[i]), int(off[i + 1])
        yield {
            "id": str(d["ids"][i]),
            "sample": int(d["sample"][i]),
            "correct": bool(d["correct"][i]),
            "entropies": d["entropies"][a:b].astype(np.float64),
            "temperatures": d["temperatures"][a:b].astype(np.float64),
            "starts": d["starts"][a:b],
        }


def run_policy(run_dir: str | Path) -> tuple[str, Policy | None]:
    """(sampler mode, its ReSET policy if it is a ReSET run) from the run's ``config.json``."""
    cfg_path = Path(run_dir) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found; is {run_dir} an eval run folder?")
    sp = json.loads(cfg_path.read_text()).get("sampler", {})
    mode = sp.get("mode", "?")
    if mode != "reset":
        return mode, None
    return mode, Policy(tau0=float(sp["tau0"]), t_high=float(sp["t_high"]), window=int(sp["window"]))


class _Acc:
    """Running sums over the samples of one run."""

    def __init__(self) -> None:
        self.ent: list[np.ndarray] = []
        self.n_steps: list[int] = []
        self.step_lens: list[np.ndarray] = []
        self.sample_hot: list[float] = []
        self.sample_correct: list[bool] = []
        self.tok = dict(total=0, hot=0, high=0, hot_high=0, hot_low=0, agree=0, first_w=0, hot_first_w=0)
        self.hot_ent = 0.0
        self.pos_bins = np.zeros(N_POSITION_BINS, dtype=np.int64)

    def add(self, rec: dict, policy: Policy, sampled: bool) -> None:
        h = np.asarray(rec["entropies"], dtype=np.float64)
        if h.size == 0:
            return
        starts = np.asarray(rec["starts"], dtype=bool) if len(rec["starts"]) else np.zeros(h.size, bool)
        high, replayed = regimes(h, starts, policy)
        if sampled:
            temps = np.asarray(rec["temperatures"], dtype=np.float64)
            if temps.shape != h.shape:
                raise ValueError(
                    f"sample {rec['id']}/{rec['sample']}: {temps.size} temperatures for {h.size} "
                    "entropies; the dump is damaged (rerun the problem)"
                )
            hot = np.abs(temps - policy.t_high) < TEMP_ATOL
        else:
            hot = replayed
        sl = step_lengths(starts)
        pos, lens = _positions(sl)
        k = self.tok
        k["total"] += h.size
        k["hot"] += int(hot.sum())
        k["high"] += int(high.sum())
        k["hot_high"] += int((hot & high).sum())
        k["hot_low"] += int((hot & ~high).sum())
        k["agree"] += int((hot == replayed).sum())
        first = pos < policy.window
        k["first_w"] += int(first.sum())
        k["hot_first_w"] += int((hot & first).sum())
        self.hot_ent += float(h[hot].sum())
        bins = np.minimum((N_POSITION_BINS * pos) // lens, N_POSITION_BINS - 1)
        self.pos_bins += np.bincount(bins[hot], minlength=N_POSITION_BINS)
        self.ent.append(h)
        self.n_steps.append(sl.size)
        self.step_lens.append(sl)
        self.sample_hot.append(float(hot.mean()))
        self.sample_correct.append(bool(rec["correct"]))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _quartiles(hot: list[float], correct: list[bool]) -> list[dict]:
    """Samples ranked by hot share (stable), split in 4 near-equal groups."""
    order = np.argsort(np.asarray(hot), kind="stable")
    out = []
    for g in np.array_split(order, 4):
        if g.size == 0:
            continue
        hs = np.asarray(hot)[g]
        out.append(
            {
                "n": int(g.size),
                "hot_share_min": float(hs.min()),
                "hot_share_max": float(hs.max()),
                "accuracy": float(np.mean(np.asarray(correct)[g])),
            }
        )
    return out


def analyze_run(
    run_dir: str | Path, policy: Policy | None = None, label: str | None = None, *, write_npz: bool = False
) -> dict:
    """Step statistics of one traced run (see module doc); JSON-ready dict.

    ``policy``: the ReSET parameters to replay; default: the run's own (ReSET runs). A
    fixed-temperature or greedy run needs one (e.g. the calibrated params of the study).
    ``write_npz``: also write ``tokens.npz`` from the same single read of the dump.
    """
    mode, own = run_policy(run_dir)
    sampled = own is not None
    pol = own or policy
    if pol is None:
        raise ValueError(
            f"{run_dir} is a {mode!r} run: pass the ReSET parameters to replay (--params FILE, or "
            "include a ReSET run in the comparison)"
        )
    acc = _Acc()
    kept: list[dict] = []
    for rec in iter_samples(run_dir):
        acc.add(rec, pol, sampled)
        if write_npz:
            kept.append(rec)
    if write_npz:
        write_tokens_npz(run_dir, kept)
    if not acc.ent:
        raise ValueError(f"{run_dir}: the token dump holds no tokens")
    return _finish(acc, run_dir, label, mode, pol, sampled)


def _finish(acc: _Acc, run_dir: str | Path, label: str | None, mode: str, pol: Policy, sampled: bool) -> dict:
    e = np.concatenate(acc.ent)
    k = acc.tok
    lens = np.concatenate(acc.step_lens)
    steps = np.asarray(acc.n_steps)
    cold = k["total"] - k["hot"]
    return {
        "run": str(run_dir),
        "label": label or Path(run_dir).name,
        "sampler": mode,
        "hot_source": "sampled" if sampled else "replayed",
        "policy": {"tau0": pol.tau0, "t_high": pol.t_high, "window": pol.window},
        "n_samples": len(acc.ent),
        "n_tokens": int(e.size),
        "entropy": {"mean": float(e.mean()), **{f"p{q}": float(np.percentile(e, q)) for q in PERCENTILES}},
        "steps_per_sample": {"mean": float(steps.mean()), "median": float(np.median(steps))},
        "tokens_per_step": {"mean": float(lens.mean()), "median": float(np.median(lens))},
        "hot_share": k["hot"] / k["total"],
        "share_tokens_in_high_steps": k["high"] / k["total"],
        "hot_share_in_high_steps": _ratio(k["hot_high"], k["high"]),
        "hot_share_in_low_steps": _ratio(k["hot_low"], k["total"] - k["high"]),
        "share_of_hot_from_high_steps": _ratio(k["hot_high"], k["hot"]),
        "hot_position_tenths": (acc.pos_bins / max(1, k["hot"])).tolist(),
        "share_tokens_in_first_window": k["first_w"] / k["total"],
        "share_of_hot_in_first_window": _ratio(k["hot_first_w"], k["hot"]),
        "mean_entropy_hot": _ratio(acc.hot_ent, k["hot"]),
        "mean_entropy_cold": _ratio(float(e.sum()) - acc.hot_ent, cold),
        "accuracy_by_hot_quartile": _quartiles(acc.sample_hot, acc.sample_correct),
        # a replayed run's hot tokens are the replay: agreement would be 100% by construction
        "replay_agreement": k["agree"] / k["total"] if sampled else None,
    }


def _f(x: float | None, pct: bool = True, nd: int = 1) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.{nd}f}" if pct else f"{x:.{nd}f}"


def analysis_markdown(results: list[dict]) -> str:
    """Three markdown tables: entropy and steps, hot tokens, accuracy by hot-share quartile."""
    head1 = (
        "| run | samples | tokens | H mean | p50 | p70 | p80 | p90 | p95 | steps/sample "
        "| tokens/step (mean, median) |"
    )
    lines = [head1, "|" + "---|" * (head1.count("|") - 1)]
    for r in results:
        en, ts = r["entropy"], r["tokens_per_step"]
        lines.append(
            f"| {r['label']} | {r['n_samples']} | {r['n_tokens']} | {en['mean']:.3f} | {en['p50']:.3f} "
            f"| {en['p70']:.3f} | {en['p80']:.3f} | {en['p90']:.3f} | {en['p95']:.3f} "
            f"| {r['steps_per_sample']['mean']:.2f} | {ts['mean']:.1f}, {ts['median']:.0f} |"
        )
    head2 = (
        "| run | hot from | tau0 | hot % | tokens in high steps % | hot % in high steps "
        "| hot % in low steps | hot in first w of step % | hot by tenth of step % | H hot / cold "
        "| replay agrees % |"
    )
    lines += ["", head2, "|" + "---|" * (head2.count("|") - 1)]
    for r in results:
        tenths = " ".join(f"{100 * x:.0f}" for x in r["hot_position_tenths"])
        lines.append(
            f"| {r['label']} | {r['hot_source']} | {r['policy']['tau0']:.3f} | {_f(r['hot_share'])} "
            f"| {_f(r['share_tokens_in_high_steps'])} | {_f(r['hot_share_in_high_steps'])} "
            f"| {_f(r['hot_share_in_low_steps'])} | {_f(r['share_of_hot_in_first_window'])} "
            f"| {tenths} | {_f(r['mean_entropy_hot'], False, 2)} / {_f(r['mean_entropy_cold'], False, 2)} "
            f"| {_f(r['replay_agreement'])} |"
        )
    head3 = "| run | Q1 (least hot) | Q2 | Q3 | Q4 (most hot) |"
    lines += [
        "",
        "Sample accuracy % by quartile of its hot-token share [share range %]:",
        "",
        head3,
        "|" + "---|" * (head3.count("|") - 1),
    ]
    for r in results:
        cells = [
            f"{_f(q['accuracy'])} [{_f(q['hot_share_min'])}-{_f(q['hot_share_max'])}]"
            for q in r["accuracy_by_hot_quartile"]
        ]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
