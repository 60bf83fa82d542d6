"""``resetfp4 quantize``: BF16/GGUF model -> ModelOpt-compatible NVFP4 folder (+ round-trip check).

W4A4 (default, quant_algo ``NVFP4``) calibrates each linear's static ``input_scale`` as
``amax/2688`` over the small built-in prompt set documented in
:mod:`resetfp4.engine.quantize`, or over your own prompts (``--calib-data``: a .jsonl with
one ``{"text": ...}`` per line, or a .txt with one prompt per line); ``--w4a16`` writes
``W4A16_NVFP4`` without input scales.
"""

from __future__ import annotations

import argparse
import json

from resetfp4.engine.aliases import ALIASES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="convert a BF16/GGUF model into a ModelOpt-compatible NVFP4 folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help=f"alias {list(ALIASES)}, a .gguf file or an HF folder")
    p.add_argument("--out", required=True, help="output folder: a new or empty one (created)")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.add_argument("--w4a16", action="store_true", help="weight-only NVFP4 (no activation scales)")
    p.add_argument("--lm-head", choices=("bf16", "nvfp4"), default="bf16", help="also quantize lm_head")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-verify", action="store_true", help="skip the reload + logits round-trip check")
    p.add_argument("--calib-data", default=None, metavar="FILE",
                   help="W4A4 calibration prompts: .jsonl (a \"text\", \"prompt\" or \"question\" per "
                        "line) or .txt (one per line); default: the built-in 8 prompts")
    p.add_argument("--calib-samples", type=int, default=None, metavar="N",
                   help="use only the first N calibration prompts")
    p.add_argument("--calib-max-tokens", type=int, default=None, metavar="N",
                   help="cut each calibration prompt to N tokens (default 256)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resetfp4.engine.quantize import CALIBRATION_MAX_TOKENS, quantize_to_folder

    max_tokens = CALIBRATION_MAX_TOKENS if args.calib_max_tokens is None else args.calib_max_tokens
    rep = quantize_to_folder(
        args.model,
        args.out,
        w4a16=args.w4a16,
        device=args.device,
        lm_head=args.lm_head,
        verify=not args.no_verify,
        progress=not args.json,
        overwrite=args.overwrite,
        calib_data=args.calib_data,
        calib_samples=args.calib_samples,
        calib_max_tokens=max_tokens,
    )
    if args.json:
        print(json.dumps(rep))
    else:
        check = (
            "round trip verified: reloaded logits are bit-identical"
            if rep["verified"]
            else "round trip not checked (--no-verify)"
        )
        print(f"wrote {rep['out']} ({rep['quant_algo']}, {rep['linears']} NVFP4 linears); {check}")
    return 0
