"""The ``resetfp4`` command line.

Each subcommand lives in its own module under :mod:`resetfp4.cli` and exposes
``register(subparsers) -> None``, which adds an ``argparse`` parser and sets
``func=callable(args) -> int``. Modules are imported lazily so ``resetfp4 --help`` is
fast and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command name, module under resetfp4.cli, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("generate", "generate", "generate text with a BF16 or NVFP4 model and the ReSET sampler"),
    ("quantize", "quantize", "convert a BF16/GGUF model into a ModelOpt-compatible NVFP4 folder"),
    ("eval", "evaluate", "evaluate a model on GSM8K / MATH-500 / a JSONL task"),
    ("calibrate", "calibrate", "calibrate ReSET's tau0 and T_low on held-out problems"),
    ("compare", "compare", "paired bootstrap comparison of two eval runs"),
    ("bench", "bench", "benchmarks: kernels, sampler, decode"),
    ("demo-format", "demo_format", "show NVFP4 quantization of a real model's weights"),
)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resetfp4",
        description="Accurate, fast small-batch NVFP4 inference of reasoning LLMs.",
    )
    from resetfp4 import __version__

    parser.add_argument("--version", action="version", version=f"resetfp4 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module, help_ in COMMANDS:
        if wanted is not None and wanted != name:
            sub.add_parser(name, help=help_)
            continue
        try:
            mod = importlib.import_module(f"resetfp4.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"resetfp4.cli.{module}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"resetfp4 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
