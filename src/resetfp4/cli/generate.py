"""``resetfp4 generate``: text from a BF16 or NVFP4 model with the ReSET sampler.

Human output streams the text, then a summary (tokens/s, reasoning steps, and for the reset
sampler the share of tokens at T_low / T_high, else the fixed temperature); ``--color`` adds
a per-token view (colour = temperature, shade = entropy). ``--json`` prints one JSON object
as the last line instead. If the model produced non-finite logits (NaN/inf), the output is
printed all the same, then an error on stderr, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from resetfp4.cli.evaluate import check_sampler_flags
from resetfp4.engine.aliases import ALIASES, DEFAULT_MODEL
from resetfp4.engine.build import PRECISIONS
from resetfp4.engine.engine import DEFAULT_MAX_SEQ_LEN, model_name
from resetfp4.fileutil import finite_or_null
from resetfp4.format.checkpoint import QUANT_CONFIG_FILE, read_quant_config
from resetfp4.sampling.config import SAMPLER_MODES, SamplerConfig

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_SAMPLER = "reset"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with a BF16 or NVFP4 model and the ReSET sampler",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"alias {list(ALIASES)}, a .gguf file, an HF folder or a ModelOpt NVFP4 folder "
        f"(default: {DEFAULT_MODEL}, embedded)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="default: bf16 on CUDA, fp32 on CPU (NVFP4 folders: their own precision)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--lm-head", choices=("bf16", "nvfp4"), default=None,
                   help="output head precision (default: bf16; an NVFP4 folder's own head)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step (default: on for CUDA, off for CPU; slower start)")
    p.add_argument("--sampler", choices=SAMPLER_MODES, default=DEFAULT_SAMPLER,
                   help="greedy, fixed (--temperature) or reset (--t-low/--tau0/--t-high/--window/--params); "
                   f"a flag of another sampler is an error (default: {DEFAULT_SAMPLER})")
    d = SamplerConfig()
    for flag, help_ in (
        ("--temperature", f"fixed sampler T (default {d.temperature})"),
        ("--t-low", f"ReSET low temperature (default: the model's calibrated value, else {d.t_low})"),
        ("--tau0", f"ReSET entropy threshold in nats (default: calibrated, else {d.tau0})"),
        ("--t-high", f"ReSET high temperature (default {d.t_high})"),
        ("--top-p", f"nucleus mass of the fixed and reset samplers (default {d.top_p})"),
    ):
        p.add_argument(flag, type=float, default=None, help=help_)
    p.add_argument("--window", type=int, default=None, help=f"ReSET window in tokens (default {d.window})")
    p.add_argument("--params", type=Path, default=None,
                   help="ReSET params JSON from `resetfp4 calibrate` (flags override it)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"random seed of the fixed and reset samplers (default {d.seed}); greedy draws "
                   "no random numbers, so --seed with it is an error")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"tokens to generate per prompt (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=DEFAULT_MAX_SEQ_LEN,
        help=f"KV cache length (prompt + generation; default {DEFAULT_MAX_SEQ_LEN})",
    )
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--raw", action="store_true", help="tokenize the prompt as is (no chat template)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object as the last line (NaN/inf, from non-finite logits: null)")
    p.add_argument("--color", action="store_true", help="show a per-token entropy/temperature view")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from this file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _sampler_flags(args: argparse.Namespace) -> dict:
    """The sampler flags of the request's mode (``None``: not given on the command line)."""
    flags = {"top_p": args.top_p, "seed": args.seed}
    if args.sampler == "reset":
        flags.update(t_low=args.t_low, tau0=args.tau0, t_high=args.t_high, window=args.window)
    elif args.sampler == "fixed":
        flags["temperature"] = args.temperature
    return flags


def _with_params(args: argparse.Namespace, flags: dict) -> dict:
    """``flags`` (reset) with the ``--params`` file's values where no flag gave one."""
    from resetfp4.eval.params import load_params

    calib = load_params(args.params)  # errors name the file and the field
    names = ("t_low", "tau0", "t_high", "window")
    return {**flags, **{n: getattr(calib, n) for n in names if flags[n] is None}}


def sampler_config(args: argparse.Namespace, engine) -> SamplerConfig:
    """The request's SamplerConfig: flags override the model's calibrated ReSET params."""
    flags = _sampler_flags(args)
    if args.sampler == "reset":
        if getattr(args, "params", None) is not None:
            from resetfp4.eval.params import note_other_precision

            flags = _with_params(args, flags)
            note_other_precision(args.params, engine)
        return engine.default_sampling(**flags)
    return SamplerConfig(mode=args.sampler, **{k: v for k, v in flags.items() if v is not None})


def sampler_params(args: argparse.Namespace, engine, cfg: SamplerConfig) -> dict:
    """The sampling parameters the request used and where the ReSET ones came from."""
    if cfg.mode == "greedy":
        return {"mode": "greedy"}
    out: dict = {"mode": cfg.mode, "top_p": cfg.top_p, "seed": cfg.seed}
    if cfg.mode == "fixed":
        return {**out, "temperature": cfg.temperature}
    out.update(t_low=cfg.t_low, tau0=cfg.tau0, t_high=cfg.t_high, window=cfg.window)
    flagged = [n for n in ("t_low", "tau0", "t_high", "window") if getattr(args, n, None) is not None]
    if getattr(args, "params", None) is not None:
        base = f"--params {args.params}"
    elif getattr(engine, "reset_params", None) is not None:
        base = f"the paper's calibration for {engine.model_name}"
    else:
        base = "the paper's Qwen3-8B values: no calibration is known for this model, see --params"
    out["source"] = base + (f", overridden by --{', --'.join(n.replace('_', '-') for n in flagged)}"
                            if flagged else "")
    return out


def _nvfp4_folder_head(model: str) -> str | None:
    """An NVFP4 folder's lm_head precision ("nvfp4" unless its exclude_modules cover it, by the
    loader's rule), None for other sources."""
    from resetfp4.engine.build import excluded

    folder = Path(model).expanduser()
    if not (folder / QUANT_CONFIG_FILE).is_file():
        return None
    patterns = read_quant_config(folder)["quantization"].get("exclude_modules") or []
    return "bf16" if excluded("lm_head", [str(p) for p in patterns]) else "nvfp4"


def _default_precision(args: argparse.Namespace) -> str:
    if args.precision:
        return args.precision
    folder = Path(args.model).expanduser()
    if (folder / QUANT_CONFIG_FILE).is_file():
        qc = read_quant_config(folder)  # a malformed file is a CheckpointError saying so
        return "nvfp4-w4a4" if qc["quantization"]["quant_algo"] == "NVFP4" else "nvfp4-w4a16"
    import torch

    cuda = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    return "bf16" if cuda else "fp32"


# ANSI 256-colour backgrounds, dim -> bright: blues for T_low, reds for T_high, greens for the
# fixed sampler's temperature, greys for greedy.
_SHADES = {
    "low": (17, 18, 19, 20, 21),
    "high": (52, 88, 124, 160, 196),
    "fixed": (22, 28, 34, 40, 46),
    "greedy": (236, 238, 240, 242, 244),
}
_H_MAX = 4.0  # nats: entropies at or above this get the brightest shade


def _temp_kind(t: float, cfg: SamplerConfig) -> str:
    """``greedy`` | ``fixed`` | ``low`` | ``high`` for a recorded temperature ``t`` of ``cfg``.

    Reset temperatures are exactly T_low or T_high (up to fp32 rounding): the midpoint
    separates them whatever the configured values."""
    if t <= 0:
        return "greedy"
    if cfg.mode != "reset":
        return "fixed"
    return "high" if t >= (cfg.t_low + cfg.t_high) / 2 else "low"


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text for the per-token view: :func:`resetfp4.eval.trace_html.token_pieces`
    (incremental, with look-back, so SentencePiece leading spaces survive). A token that ends
    inside a multi-byte character gets ``""`` and the character is shown with the token that
    completes it, instead of a replacement character per token."""
    from resetfp4.eval.trace_html import token_pieces as pieces

    return pieces(tokenizer.decode, ids)


def _color_view(res, tokenizer, cfg: SamplerConfig) -> str:
    """Each token's text on a background: blue = T_low, red = T_high (reset sampler),
    green = the fixed temperature, grey = greedy; brighter = higher entropy (H_t of the raw
    distribution)."""
    out = []
    pieces = token_pieces(tokenizer, list(res.token_ids))
    for piece, t, h in zip(pieces, res.temperatures, res.entropies, strict=True):
        shade = _SHADES[_temp_kind(t, cfg)][min(4, int(max(0.0, h) / _H_MAX * 5))]
        text = piece.replace("\n", "\u21b5\n")
        out.append(f"\x1b[48;5;{shade}m{text}\x1b[0m")
    if cfg.mode == "reset":
        colours = f"blue = T_low {cfg.t_low:g}, red = T_high {cfg.t_high:g}"
    elif cfg.mode == "fixed":
        colours = f"green = fixed T {cfg.temperature:g}"
    else:
        colours = "grey = greedy"
    return "".join(out) + "\n" + f"legend: {colours}; brighter = higher entropy"


def _summary(res, stats: dict, precision: str, model: str, cfg: SamplerConfig,
             params: dict | None = None) -> str:
    n = len(res.token_ids)
    kinds = [_temp_kind(t, cfg) for t in res.temperatures]
    if cfg.mode == "reset":
        lo, hi = kinds.count("low") / max(1, n), kinds.count("high") / max(1, n)
        temps = f"{lo:.0%} of tokens at T_low {cfg.t_low:g}, {hi:.0%} at T_high {cfg.t_high:g}"
    elif cfg.mode == "fixed":
        temps = f"fixed temperature {cfg.temperature:g}"
    else:
        temps = "greedy (temperature 0)"
    steps = 1 + sum(res.step_starts)
    setup = stats.get("setup_s", 0.0)
    took = f"{stats['seconds']:.2f} s"
    if setup >= 0.01:
        took += f" ({setup:.2f} s of it one-time graph capture)"
    line = (
        f"[{model} {precision}] {n} tokens ({res.finish_reason}) in {took}: "
        f"{stats['tokens_per_s']:.1f} tokens/s; {steps} reasoning step(s); {temps}"
    )
    if params and params.get("mode") == "reset":
        line += (f"\nReSET: T_low {params['t_low']:g}, tau0 {params['tau0']:g} nats, "
                 f"T_high {params['t_high']:g}, window {params['window']}, top-p {params['top_p']:g}, "
                 f"seed {params['seed']} (from {params['source']})")
    return line


def check_before_loading(args: argparse.Namespace, precision: str) -> None:
    """Device, precision, lm_head, --max-new-tokens and sampler flags (with the --params file
    and the model's calibrated ReSET values, as after the load) checked before the (slow) load."""
    from resetfp4.engine import sampling_glue
    from resetfp4.engine.build import check_lm_head, check_precision, resolve_device

    check_precision(precision, resolve_device(args.device))
    if getattr(args, "json", False) and getattr(args, "color", False):
        raise ValueError("--color draws a per-token view in the human output and --json prints only "
                         "JSON (its entropies and temperatures hold the same data): drop one")
    folder_head = _nvfp4_folder_head(args.model)
    if args.lm_head is None:
        args.lm_head = folder_head or "bf16"
    elif folder_head == "nvfp4" and args.lm_head == "bf16":
        raise ValueError(f"{args.model} holds an NVFP4 lm_head, which runs as stored; --lm-head bf16 cannot "
                         "apply (nothing dequantizes it back): drop --lm-head, or use a folder quantized "
                         "without `--lm-head nvfp4`")
    check_lm_head(args.lm_head, precision)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    check_sampler_flags(args, DEFAULT_SAMPLER)  # --seed with greedy too
    flags = _sampler_flags(args)
    if args.sampler != "reset":
        SamplerConfig(mode=args.sampler, **{k: v for k, v in flags.items() if v is not None})
        return
    if getattr(args, "params", None) is not None:
        flags = _with_params(args, flags)
    known = sampling_glue.known_reset_params(model_name(args.model))
    sampling_glue.reset_config(known, **flags)  # its checks


def run(args: argparse.Namespace) -> int:
    from resetfp4.engine.engine import load_engine

    prompt = _prompt(args)
    precision = _default_precision(args)
    check_before_loading(args, precision)
    engine = load_engine(
        args.model,
        precision,
        device=args.device,
        max_batch=1,
        max_seq_len=args.max_seq_len,
        lm_head=args.lm_head,
        compile=args.compile,
    )
    if not args.raw and not engine.has_chat_template:
        print(f"note: {engine.model_name} has no chat template; the prompt is used as raw text "
              "(as with --raw)", file=sys.stderr)
    cfg = sampler_config(args, engine)
    stream = None if args.json else (lambda _i, text: (sys.stdout.write(text), sys.stdout.flush()))
    res = engine.generate(
        [prompt], cfg, args.max_new_tokens, chat=not args.raw, stop=args.stop, trace=True, stream=stream
    )[0]
    stats = engine.last_stats
    if not args.json:
        print()  # ends the streamed text
    _print_result(args, res, stats, precision, engine, cfg)
    bad = _non_finite_error(res.entropies, precision)
    if bad:  # the output is printed all the same (it shows where it went wrong), then refused
        print(f"resetfp4 generate: error: {bad}", file=sys.stderr)
        return 1
    return 0


def _print_result(args: argparse.Namespace, res, stats: dict, precision: str, engine,
                  cfg: SamplerConfig) -> None:
    """The JSON line (``--json``), or the per-token view (``--color``) and the summary."""
    if args.json:
        print(
            json.dumps(
                finite_or_null({
                    "model": engine.model_name,
                    "precision": precision,
                    "sampler": cfg.mode,
                    "sampler_params": sampler_params(args, engine, cfg),
                    "token_ids": res.token_ids,
                    "text": res.text,
                    "finish_reason": res.finish_reason,
                    "prompt_tokens": res.prompt_tokens,
                    "entropies": res.entropies,
                    "temperatures": res.temperatures,
                    "step_starts": res.step_starts,
                    "tokens_per_s": stats["tokens_per_s"],
                    "seconds": stats["seconds"],
                    "setup_s": stats["setup_s"],
                }),
                allow_nan=False,
            )
        )
        return
    if args.color:
        print(_color_view(res, engine.tokenizer, cfg))
    print(_summary(res, stats, precision, engine.model_name, cfg, sampler_params(args, engine, cfg)),
          file=sys.stderr)



def _non_finite_error(entropies: list[float], precision: str) -> str | None:
    """The error text when some tokens came from non-finite logits, else None. The sampler
    records a NaN entropy exactly for a row whose logits had NaN/+inf (or were all -inf); it
    gave that row token 0 and generation went on. Uses the trace already on the host."""
    bad = [i for i, h in enumerate(entropies) if not math.isfinite(h)]
    if not bad:
        return None
    first = f"first at generated token {bad[0] + 1}" + ("" if bad[0] else " (already reading the prompt)")
    retry = {
        "fp32": "as this is fp32 already, the checkpoint is the likely cause",
        "bf16": "retry with --precision fp32 to rule out a bf16 overflow",
    }.get(precision, "retry with --precision bf16 to tell an NVFP4 quantization problem from a broken "
          "checkpoint")
    return (f"the model produced non-finite logits (NaN/inf) for {len(bad)} of {len(entropies)} generated "
            f"token(s), {first}; the text from that token on is garbage (those tokens are id 0). Likely "
            "causes: a "
            "broken checkpoint (NaN/inf weights, or an fp16 export whose values overflowed: use the bf16 "
            f"original) or activations overflowing at --precision {precision}: {retry}")


def _prompt(args: argparse.Namespace) -> str:
    """The prompt text of --prompt or --prompt-file; empty (or only whitespace) is an error."""
    if args.prompt is not None:
        prompt, source = args.prompt, "--prompt"
    else:
        prompt, source = _read_prompt(args.prompt_file), f"--prompt-file {args.prompt_file}"
    if not prompt.strip():
        raise ValueError(f"{source} is empty{' (only whitespace)' if prompt else ''}: give the text the "
                         "model should answer or continue")
    return prompt


def _read_prompt(path: Path) -> str:
    """The UTF-8 text of ``path``; errors name the file and what to do."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"prompt file {path} does not exist") from e
    except IsADirectoryError:
        raise ValueError(f"prompt file {path} is a directory; give a text file to --prompt-file") from None
    except PermissionError:
        raise ValueError(f"prompt file {path} cannot be read (permission denied); check its permissions "
                         "or copy it somewhere readable") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it "
                         "as UTF-8") from None
