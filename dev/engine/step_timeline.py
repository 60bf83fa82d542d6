"""Kernel timeline of one graph-replayed decode step (Qwen3-8B shape, random weights).

Prints, for one layer in the middle of the step, every kernel's start / end relative to the
end of that layer's first GEMV (the qkv projection), so the attention's share of the critical
path and how early each kernel was launched (PDL) can be read directly. The full timeline of
the step goes to ``--json``.

    PYTHONPATH=src python3 dev/engine/step_timeline.py --batch 1 --precision nvfp4-w4a16 \
        --lm-head nvfp4 --pos 640 --json $OUT/timeline_b1.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from resetfp4.bench.decode import SAMPLERS, _sampler, kernel_category
from resetfp4.engine.build import random_model
from resetfp4.engine.config import PRESETS
from resetfp4.engine.decode import DecodeRunner, attn_bucket
from resetfp4.engine.sampling_glue import configure_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="qwen3-8b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", default="nvfp4-w4a16")
    ap.add_argument("--lm-head", default="nvfp4")
    ap.add_argument("--pos", type=int, default=640, help="prompt length (cache fill) of the step")
    ap.add_argument("--layer", type=int, default=18)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attn", default="",
                    help="comma-separated PROGRAMS_PER_SM:BLOCK_N variants of the Triton attention "
                         "(module constants of resetfp4.engine.attention), one timeline each")
    ap.add_argument("--plan", default="",
                    help="GEMV plan overrides for M <= 8, e.g. 'qkv:1:2,o:1:1' (name:S:R; names qkv, "
                         "o, gate_up, down; for the SwiGLU gate/up GEMV only R counts, even), applied "
                         "to every layer before capture")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    dev = torch.device("cuda")
    model = random_model(PRESETS[a.arch], a.precision, dev, lm_head=a.lm_head)
    model.setup_cache(a.batch, a.pos + 64)
    variants = [v.split(":") for v in a.attn.split(",")] if a.attn else [None]
    for v in variants:
        if v is not None:
            from resetfp4.engine import attention
            attention.PROGRAMS_PER_SM, attention.BLOCK_N = int(v[0]), int(v[1])
        timeline(a, model, dev, "" if v is None else f"attn {v[0]}:{v[1]}")


def timeline(a: argparse.Namespace, model, dev: torch.device, tag: str) -> None:
    runner = DecodeRunner(model, _sampler(model, a.batch, "fixed", dev), use_graphs=True, compile=True)
    for item in filter(None, a.plan.split(",")):
        name, s_, r_ = item.split(":")
        for blk in model.model.layers:
            lin = {"qkv": blk.self_attn.qkv_fused, "o": blk.self_attn.o_proj,
                   "gate_up": blk.mlp.gate_up_fused, "down": blk.mlp.down_proj}[name]
            lin.qweight.kernel.plans[8] = (int(s_), int(r_))
            if name == "gate_up" and lin.qweight.kernel.swiglu_tiles is not None:
                lin.qweight.kernel.swiglu_tiles[8] = int(r_)  # the SwiGLU GEMV's tiles per CTA (S = 1)
        tag += f" {name}={s_}x{r_}"
    bucket = attn_bucket(a.pos + 1, model.max_seq_len)
    runner.capture(a.batch, [bucket])
    prompts = torch.randint(0, model.args.vocab_size, (a.batch, a.pos)).tolist()
    configure_rows(runner.sampler, [SAMPLERS["fixed"]] * a.batch, a.batch)
    st = runner.prefill(prompts, a.batch)
    for _ in range(3):
        runner.decode(st, a.batch, bucket)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(a.reps):
            runner.decode(st, a.batch, bucket)
        torch.cuda.synchronize()
    ev = sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
    )
    per = len(ev) // a.reps
    steps = [ev[i * per:(i + 1) * per] for i in range(a.reps)]
    # the layer's qkv GEMV: the (layer * gemvs_per_layer)-th GEMV of the step
    gemv_idx = [i for i, e in enumerate(steps[0]) if kernel_category(e[2]) == "nvfp4 gemv"]
    n_layers = model.args.n_layers
    per_layer = (len(gemv_idx) - 1) // n_layers  # minus the head GEMV (NVFP4 head) or 0
    per_layer = max(per_layer, 1)
    rows = []
    for s in steps:
        g = [i for i, e in enumerate(s) if kernel_category(e[2]) == "nvfp4 gemv"]
        first = g[a.layer * per_layer]
        nxt = g[(a.layer + 1) * per_layer]
        t0 = s[first][1]
        rows.append([(e[0] - t0, e[1] - t0, e[2]) for e in s[first:nxt + 1]])
    # median over the reps, kernel by kernel
    out = []
    for k in range(len(rows[0])):
        st_ = sorted(r[k][0] for r in rows)[len(rows) // 2]
        en_ = sorted(r[k][1] for r in rows)[len(rows) // 2]
        out.append({"kernel": rows[0][k][2][:90], "cat": kernel_category(rows[0][k][2]),
                    "start_us": st_, "end_us": en_})
    step_us = sorted((s[-1][1] - s[0][0]) for s in steps)[len(steps) // 2]
    env = {k: v for k, v in os.environ.items() if k.startswith("RESETFP4_")}
    print(f"{a.arch} B{a.batch} {a.precision} head {a.lm_head} pos {a.pos} env {env} {tag}: "
          f"step span {step_us:.1f} us, {per} kernels; layer {a.layer}, t=0 at the qkv GEMV's end")
    print(f"{'start':>8} {'end':>8} {'dur':>7}  kernel")
    for r in out:
        print(f"{r['start_us']:8.2f} {r['end_us']:8.2f} {r['end_us'] - r['start_us']:7.2f}  "
              f"{r['cat']:<20} {r['kernel'][:60]}")
    if a.json:
        suffix = f"_{tag.split()[-1].replace(':', '_')}" if tag else ""
        path = a.json.with_name(a.json.stem + suffix + ".json")
        args = vars(a) | {"json": str(a.json)}
        path.write_text(json.dumps({"env": env, "tag": tag, "args": args,
                                      "step_span_us": step_us, "layer": out,
                                      "step0": [(e[0], e[1], e[2][:90]) for e in steps[0]]}, indent=1))


if __name__ == "__main__":
    main()
