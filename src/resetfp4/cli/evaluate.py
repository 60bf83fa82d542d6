"""``resetfp4 eval``: accuracy of one model/precision/sampler on GSM8K, MATH-500 or a JSONL task.

Writes a run folder (see :mod:`resetfp4.eval.runner`); rerun the same command to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from resetfp4.engine.aliases import DEFAULT_MODEL
from resetfp4.engine.build import PRECISIONS
from resetfp4.sampling.config import SAMPLER_MODES, SamplerConfig

# Prompts handed to one engine.generate call per KV-cache slot: the engine refills a slot
# as soon as its row finishes (continuous batching), so a call with many more prompts than
# slots keeps the slots busy; results are written (and resumable) after each call.
PROMPTS_PER_SLOT = 8

_DEFAULTS = SamplerConfig()  # every sampler default lives in SamplerConfig (paper values)
DEFAULT_SAMPLER = "fixed"  # eval's baseline (generate defaults to reset)
# The run seed used when --seed is not given (EvalConfig.seed's default; a test keeps them equal).
# --seed itself defaults to None, so that an explicit --seed with a sampler that draws no random
# numbers (greedy) can be refused; the run folder records the seed used.
DEFAULT_RUN_SEED = 0
SEED_HELP = f"run seed; each sample's seed derives from it (default {DEFAULT_RUN_SEED})"


def add_model_args(p: argparse.ArgumentParser, default_precision: str, *, seed_help: str = SEED_HELP) -> None:
    """--model/--precision/--device/--batch-size/--max-seq-len/--seed... (shared with calibrate)."""
    p.add_argument("--model", default=DEFAULT_MODEL, help="model path or alias (default: %(default)s)")
    p.add_argument(
        "--precision", choices=PRECISIONS, default=default_precision, help="(default: %(default)s)"
    )
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="sequences decoded together (KV-cache slots; default: %(default)s); each engine call "
        f"gets {PROMPTS_PER_SLOT} prompts per slot, refilled into slots as rows finish",
    )
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="KV-cache length (default: max-new-tokens + 1024 for the prompt)",
    )
    p.add_argument("--max-new-tokens", type=int, default=1024, help="(default: %(default)s)")
    p.add_argument("--samples", type=int, default=4, help="samples per problem, K (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help=seed_help)
    p.add_argument("--no-chat", action="store_true", help="send prompts without the chat template")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampler",
        choices=SAMPLER_MODES,
        default=DEFAULT_SAMPLER,
        help="fixed = baseline T (default), reset = ReSET step-aware temperature",
    )
    p.add_argument(
        "--temperature", type=float, default=None, help=f"fixed T (default: {_DEFAULTS.temperature})"
    )
    p.add_argument(
        "--top-p", type=float, default=None, help=f"fixed and reset nucleus mass (default: {_DEFAULTS.top_p})"
    )
    p.add_argument("--params", default=None, help="ReSET params JSON from `resetfp4 calibrate`")
    p.add_argument("--t-low", type=float, default=None, help="ReSET T_low (overrides --params)")
    p.add_argument(
        "--tau0", type=float, default=None, help="ReSET entropy threshold, nats (overrides --params)"
    )
    p.add_argument("--t-high", type=float, default=None, help=f"ReSET T_high (default {_DEFAULTS.t_high})")
    p.add_argument(
        "--window", type=int, default=None, help=f"ReSET window in tokens (default {_DEFAULTS.window})"
    )


# The sampler flags (argparse dests) of eval and generate, and the samplers that use them. Each
# defaults to None (not given); --seed too, which stands for seed 0 in the samplers that draw
# random numbers (eval: DEFAULT_RUN_SEED, generate: SamplerConfig's seed).
SAMPLER_FLAG_USERS: dict[str, tuple[str, ...]] = {
    "temperature": ("fixed",),
    "top_p": ("fixed", "reset"),
    "seed": ("fixed", "reset"),
    "t_low": ("reset",),
    "tau0": ("reset",),
    "t_high": ("reset",),
    "window": ("reset",),
    "params": ("reset",),
}


def check_sampler_flags(args: argparse.Namespace, default_sampler: str) -> None:
    """Refuse sampler flags given on the command line (not ``None``) that ``--sampler`` does not
    use: they would otherwise be ignored without a word."""
    by_users: dict[tuple[str, ...], list[str]] = {}  # the unused flags, grouped by their samplers
    for name, users in SAMPLER_FLAG_USERS.items():
        if getattr(args, name, None) is not None and args.sampler not in users:
            by_users.setdefault(users, []).append("--" + name.replace("_", "-"))
    if by_users:
        flags = "; ".join(f"{', '.join(f)} (--sampler {' or '.join(u)})" for u, f in by_users.items())
        default = " (the default)" if args.sampler == default_sampler else ""
        it = "it" if sum(map(len, by_users.values())) == 1 else "them"
        raise ValueError(f"--sampler {args.sampler}{default} does not use {flags}: drop {it}, or switch "
                         "to the sampler in brackets")


def sampler_from_args(args: argparse.Namespace, engine: Any = None) -> SamplerConfig:
    """The sampler; ReSET values come from flags, then ``--params``, then the engine's known params."""
    check_sampler_flags(args, DEFAULT_SAMPLER)
    top_p = _DEFAULTS.top_p if args.top_p is None else args.top_p
    if args.sampler == "fixed":
        temperature = _DEFAULTS.temperature if args.temperature is None else args.temperature
        return SamplerConfig(mode="fixed", temperature=temperature, top_p=top_p)
    if args.sampler != "reset":
        return SamplerConfig(mode=args.sampler)
    base = None
    if args.params:
        from resetfp4.eval.params import load_params, note_other_precision

        base = load_params(args.params)
        note_other_precision(args.params, engine)
    elif engine is not None:
        base = getattr(engine, "reset_params", None)
    vals = {k: getattr(args, k) for k in ("t_low", "tau0", "t_high", "window")}
    for k, v in vals.items():
        if v is None and base is not None:
            vals[k] = getattr(base, k)
    missing = [k for k in ("t_low", "tau0") if vals[k] is None]
    if missing:
        raise ValueError(
            f"--sampler reset needs {' and '.join(missing)} for this model: pass --params FILE from "
            "`resetfp4 calibrate`, or --t-low and --tau0"
        )
    vals["t_high"] = _DEFAULTS.t_high if vals["t_high"] is None else vals["t_high"]
    vals["window"] = _DEFAULTS.window if vals["window"] is None else vals["window"]
    return SamplerConfig(mode="reset", top_p=top_p, **vals)


def load_engine_from_args(args: argparse.Namespace) -> Any:
    """The engine for ``args`` (imported lazily: the engine pulls in torch models)."""
    from resetfp4.engine.engine import load_engine

    if args.max_seq_len is not None and args.max_seq_len < 1:
        raise ValueError(f"--max-seq-len must be >= 1, got {args.max_seq_len} (leave it out for "
                         "max-new-tokens + 1024)")
    return load_engine(
        args.model,
        args.precision,
        device=args.device,
        max_batch=args.batch_size,
        max_seq_len=args.max_seq_len if args.max_seq_len is not None else args.max_new_tokens + 1024,
    )


def eval_config_from_args(args: argparse.Namespace, trace: bool) -> Any:
    from resetfp4.eval.runner import EvalConfig

    return EvalConfig(
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=DEFAULT_RUN_SEED if args.seed is None else args.seed,  # the seed used is what runs record
        batch_size=args.batch_size * PROMPTS_PER_SLOT,
        trace=trace,
        chat=not args.no_chat,
    )


def chat_as_run(cfg: Any, engine: Any, model: str) -> Any:
    """``cfg`` with ``chat`` as the prompts will really be sent: a model without a chat
    template gets the raw text (``Engine.encode``), so the run records ``chat=False`` and a
    note on stderr says so, rather than a config claiming the template was used."""
    if cfg.chat and not getattr(engine, "has_chat_template", True):
        print(f"note: {model} has no chat template: prompts are sent as raw text (recorded as "
              "chat = false)", file=sys.stderr)
        return dataclasses.replace(cfg, chat=False)
    return cfg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on GSM8K / MATH-500 / a JSONL task",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True,
                   help="gsm8k | math500 | math-heldout | math-easy | path to a .jsonl file")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems (smoke runs)")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    p.add_argument(
        "--dump-tokens",
        action="store_true",
        help="write tokens.jsonl with per-token entropies, temperatures, step starts",
    )
    p.add_argument(
        "--html-traces",
        type=int,
        default=0,
        metavar="N",
        help="write HTML traces of sample 0 of the first N problems (implies --dump-tokens)",
    )
    add_model_args(p, default_precision="bf16", seed_help=f"run seed of the fixed and reset samplers; each "
                   f"sample's seed derives from it (default {DEFAULT_RUN_SEED}); greedy draws no random "
                   "numbers, so --seed with it is an error")
    add_sampler_args(p)
    p.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> None:
    for name in ("samples", "max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.html_traces < 0:
        raise ValueError("--html-traces must be >= 0")
    check_sampler_flags(args, DEFAULT_SAMPLER)
    from resetfp4.eval.runner import check_run_dir

    check_run_dir(args.out)  # fail before the (slow) model load, as run_eval would after it
    if args.sampler == "reset" and args.params:
        from resetfp4.eval.params import load_params

        load_params(args.params)  # fail before the (slow) model load


def run(args: argparse.Namespace) -> int:
    from resetfp4.eval.datasets import load_task
    from resetfp4.eval.runner import run_eval

    _validate(args)
    task = load_task(args.task, limit=args.limit)
    if args.sampler != "reset" or args.params or (args.t_low is not None and args.tau0 is not None):
        sampler_from_args(args)  # validate sampler flags before loading the model
    engine = load_engine_from_args(args)
    sampler = sampler_from_args(args, engine)
    cfg = chat_as_run(eval_config_from_args(args, trace=args.dump_tokens or args.html_traces > 0), engine,
                      args.model)
    # batch_size in the config = prompts per engine call; slots = sequences decoded together.
    extra = {"params_file": args.params, "limit": args.limit, "slots": args.batch_size}
    summary = run_eval(
        engine,
        task,
        sampler,
        cfg,
        args.out,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        extra_config=extra,
    )
    if args.html_traces:
        write_html_traces(Path(args.out), engine, sampler, args.html_traces)
    _print_summary(summary, args.out)
    return 0


def write_html_traces(out: Path, engine: Any, sampler: SamplerConfig, n: int) -> list[Path]:
    """``out/traces/<id>.html`` for sample 0 of the first ``n`` problems in ``tokens.jsonl``."""
    from resetfp4.eval.calibrate import iter_token_dump
    from resetfp4.eval.runner import TOKENS_FILE
    from resetfp4.eval.trace_html import engine_decoder, token_pieces, write_trace_html

    decode = engine_decoder(engine)
    written: list[Path] = []
    for rec in iter_token_dump(out / TOKENS_FILE):
        if rec["sample"] != 0:
            continue
        ids = rec["token_ids"]
        tokens = token_pieces(decode, ids) if decode else [f"⟨{i}⟩" for i in ids]
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(rec["id"]))
        if safe != str(rec["id"]):  # "aime/2024/1" and "aime_2024_1" must not share a file
            safe += "-" + hashlib.sha256(str(rec["id"]).encode()).hexdigest()[:8]
        meta = {
            "id": rec["id"],
            "correct": rec["correct"],
            "tokens": len(ids),
            "sampler": json.dumps({k: v for k, v in dataclasses.asdict(sampler).items() if k != "seed"}),
            "seed": rec.get("seed", "see problems.jsonl"),
        }
        written.append(
            write_trace_html(
                out / "traces" / f"{safe}.html",
                tokens,
                rec["entropies"],
                rec["temperatures"],
                rec["starts"],
                title=f"{rec['id']} (sample 0)",
                meta=meta,
                tau0=sampler.tau0 if sampler.mode == "reset" else None,
                t_low=sampler.t_low if sampler.mode == "reset" else None,
                t_high=sampler.t_high if sampler.mode == "reset" else None,
            )
        )
        if len(written) >= n:
            break
    return written


def _print_summary(s: dict, out: str) -> None:
    acc = s["accuracy"]
    lo, hi = acc["ci95"]
    print(
        f"{s['task']}: {s['n_problems']} problems x {s['samples_per_problem']} samples"
        f"{'' if s['complete'] else ' (incomplete)'}",
        file=sys.stderr,
    )
    print(
        f"accuracy {100 * acc['mean']:.2f}% [95% CI {100 * lo:.2f}, {100 * hi:.2f}]  "
        f"pass@k {100 * s['pass_at_k']:.1f}%  maj@k {100 * s['maj_at_k']:.1f}%"
    )
    tps = s["tokens_per_s"]
    print(
        f"avg length {s['avg_length_tokens']:.0f} tokens, truncated {100 * s['truncation_rate']:.1f}%, "
        f"{tps:.1f} tokens/s"
        if tps
        else ""
    )
    print(f"wrote {Path(out) / 'summary.json'}")
