"""The ``resetfp4`` command line.

Each subcommand lives in its own module under :mod:`resetfp4.cli` and exposes
``register(subparsers) -> None``, which adds an ``argparse`` parser and sets
``func=callable(args) -> int``. Modules are imported lazily so ``resetfp4 --help`` is
fast and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path

from resetfp4.fileutil import check_writable

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


# Commands whose output folder resumes when the same command runs again (docs/eval.md).
RESUMABLE = ("eval", "calibrate")


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
        if wanted != name:  # only the command that runs is imported: `resetfp4 --help` stays fast
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
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        hint = "; run the same command again to resume" if args.command in RESUMABLE else ""
        print(f"resetfp4 {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as e:  # OSError includes FileNotFoundError
        if getattr(args, "debug", False):
            raise
        print(f"resetfp4 {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 2


def check_output_file(path: str | Path | None, flag: str, parents_ok: bool = False) -> None:
    """Raise when ``path`` (a flag's output file; None = not asked for) cannot be written:
    checked before a command's slow work, so a typo does not cost the whole run.
    ``parents_ok``: the command creates missing folders above the file."""
    if path is None:
        return
    if not str(path).strip():
        raise ValueError(f"{flag} is empty; give a file path")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a folder; give a file path (a new file inside it, say)")
    above = next((a for a in p.parents if a.exists()), None)
    if above is not None and not above.is_dir():
        raise ValueError(f"{flag} {p}: {above} is a file, not a folder; choose another path")
    if not parents_ok and not p.parent.is_dir():
        raise ValueError(f"{flag} {p}: its folder {p.parent} does not exist; create it or choose another")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{flag} {p} exists and is not writable; fix its permissions or choose another path")
    check_writable(above, flag, p)


def error_message(e: BaseException) -> str:
    """The text shown for ``e``; an operating-system error names its path and what went wrong
    (``str(e)`` would read ``[Errno 17] File exists: 'x'``)."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        path = str(e.filename) if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        hint = _OS_HINTS.get(e.errno or 0, "check the path, its permissions and the free disk space")
        return f"cannot use {path}: {e.strerror}; {hint}"
    return str(e)


_OS_HINTS = {
    errno.ENOENT: "check the path (does its folder exist?)",
    errno.EEXIST: "something (a file?) is already there: choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file is needed: give a file path",
    errno.EACCES: "no permission: fix its permissions or choose another path",
    errno.EPERM: "no permission: fix its permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOSPC: "the disk is full: free space or choose another disk",
}


if __name__ == "__main__":
    sys.exit(main())
