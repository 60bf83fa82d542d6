"""``resetfp4 bench {kernels,sampler,decode}``: dispatch to :mod:`resetfp4.bench`.

Each benchmark module ``resetfp4.bench.<name>`` exposes ``add_arguments(parser)`` and
``run(args) -> int``; benchmarks print a table last and write JSON.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Callable

BENCHES = {
    "kernels": "NVFP4 small-M GEMV kernels vs BF16 F.linear on real layer shapes",
    "sampler": "ReSET sampler overhead vs fixed-temperature top-p",
    "decode": "end-to-end decode tokens/s: bf16 vs nvfp4-w4a16 vs nvfp4-w4a4",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: kernels, sampler, decode")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, help_ in BENCHES.items():
        try:
            mod = importlib.import_module(f"resetfp4.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"resetfp4.bench.{name}":
                raise
            continue
        bp = bsub.add_parser(name, help=help_)
        mod.add_arguments(bp)
        bp.add_argument("--debug", action="store_true", help="show tracebacks")
        # bench kernels creates the folders above its --json; the others write into an existing one
        bp.set_defaults(func=functools.partial(_run, mod.run, name == "kernels"))


def _run(run: Callable[[argparse.Namespace], int], parents_ok: bool, args: argparse.Namespace) -> int:
    """``run(args)`` once ``--json`` is known to be writable (it is written after the benchmark)."""
    from resetfp4.cli.main import check_output_file

    check_output_file(getattr(args, "json", None), "--json", parents_ok)
    return run(args)
