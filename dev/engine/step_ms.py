"""Milliseconds per graphed, compiled decode step of the source tree on PYTHONPATH (the cells
of ``resetfp4 bench decode``: prefill, then gen_len - 1 graph replays; one random-weight
model). For an A/B of two trees on one machine, export the other tree (``git archive``) and
run it with its own extension build directory, alternating:

    git archive HEAD src | tar -x -C /tmp/old                  # (here, before the device call)
    TORCH_EXTENSIONS_DIR=/root/ext_old PYTHONPATH=/tmp/old/src python3 dev/engine/step_ms.py \
        --batch 1,8 --json $OUT/old.json
    PYTHONPATH=src python3 dev/engine/step_ms.py --batch 1,8 --json $OUT/new.json
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
from pathlib import Path

import torch

from resetfp4.bench.decode import bench_cell, environment, parse_batches
from resetfp4.engine.build import random_model
from resetfp4.engine.config import PRESETS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="qwen3-8b")
    ap.add_argument("--precision", default="nvfp4-w4a16")
    ap.add_argument("--lm-head", default="nvfp4")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=128)
    ap.add_argument("--sampler", default="fixed")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="override a module constant before the model is built, e.g. "
                         "resetfp4.engine.attention.PROGRAMS_PER_SM=1 (value parsed as a Python literal)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    for item in a.set:
        target, sep, value = item.partition("=")
        mod_name, _, attr = target.rpartition(".")
        mod = importlib.import_module(mod_name)
        if not sep or not hasattr(mod, attr):
            raise SystemExit(f"--set {item!r}: expected MODULE.NAME=VALUE naming an existing constant")
        setattr(mod, attr, ast.literal_eval(value))
    dev = torch.device("cuda")
    batches = parse_batches(a.batch)
    model = random_model(PRESETS[a.arch], a.precision, dev, lm_head=a.lm_head)
    model.setup_cache(max(batches), a.prompt_len + a.gen_len)
    rows = []
    for b in batches:
        r = bench_cell(model, b, a.sampler, a.prompt_len, a.gen_len, dev, compile=True)
        r.pop("profile_graph_step", None)
        rows.append(r)
    out = {"arch": a.arch, "precision": a.precision, "lm_head": a.lm_head, "prompt_len": a.prompt_len,
           "gen_len": a.gen_len, "sampler": a.sampler, "set": a.set, "environment": environment(dev),
           "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(" | ".join(f"B{r['batch']} {r['ms_per_step']:.4f} ms" for r in rows))


if __name__ == "__main__":
    main()
