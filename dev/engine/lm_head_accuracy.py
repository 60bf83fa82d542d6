"""Accuracy cost of NVFP4 linears and of the NVFP4 lm_head option, against the bf16 model.

    PYTHONPATH=src python3 dev/engine/lm_head_accuracy.py --model qwen2.5-coder-0.5b-instruct \
        [--n 16] [--gen 48] [--json out.json]

The bf16 model answers the first ``--n`` GSM8K questions (chat template) greedily for
``--gen`` tokens; every variant (W4A16 / W4A4 linears x bf16 / NVFP4 lm_head, quantized on
the fly as ``resetfp4 generate`` does, W4A4 with the calibrated static input scales) is then
teacher-forced on the same prompt + continuation. Per variant, over the continuation
positions (the reasoning text, where ReSET samples): logits SQNR against bf16, top-1
agreement with bf16, mean KL(bf16 || variant) in nats, and the mean negative
log-likelihood of the bf16 greedy token. Runs on the CPU (reference NVFP4 linears: exact,
slow) or on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from resetfp4.engine.aliases import cache_dir
from resetfp4.engine.build import build_model, resolve_device
from resetfp4.engine.loader import load_tokenizer, read_source
from resetfp4.engine.quantize import calibration_batches

VARIANTS = [("nvfp4-w4a16", "bf16"), ("nvfp4-w4a16", "nvfp4"), ("nvfp4-w4a4", "bf16"),
            ("nvfp4-w4a4", "nvfp4")]


def prompts(tok, n: int, path: Path) -> list[list[int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return calibration_batches(tok, [r["question"] for r in rows])


@torch.inference_mode()
def greedy(model, ids: list[int], gen: int, dev: torch.device) -> list[int]:
    """bf16 greedy continuation with the model's KV cache."""
    toks = torch.tensor([ids], dtype=torch.int64, device=dev)
    pos = torch.arange(len(ids), device=dev)[None]
    logits = model(toks, pos, attn_len=len(ids), last_idx=torch.tensor([len(ids) - 1], device=dev))
    out = []
    for i in range(gen):
        nxt = int(logits[0].argmax())
        out.append(nxt)
        p = len(ids) + i
        logits = model(torch.tensor([[nxt]], device=dev), torch.tensor([[p]], device=dev),
                       attn_len=p + 1)[:, -1]
    return out


@torch.inference_mode()
def teacher_forced(model, ids: list[int], dev: torch.device) -> torch.Tensor:
    toks = torch.tensor([ids], dtype=torch.int64, device=dev)
    pos = torch.arange(len(ids), device=dev)[None]
    return model(toks, pos, attn_len=len(ids))[0].float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=16, help="GSM8K questions")
    ap.add_argument("--gen", type=int, default=48, help="bf16 greedy tokens per question")
    ap.add_argument("--data", type=Path, default=None, help="GSM8K JSONL (default: the cache's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = resolve_device(args.device)
    src = read_source(args.model)
    tok = load_tokenizer(src)
    data = args.data or cache_dir() / "gsm8k.jsonl"
    t0 = time.time()
    ref = build_model(src, "bf16", dev)
    ps = prompts(tok, args.n, data)
    ref.setup_cache(1, max(len(p) for p in ps) + args.gen + 1)
    seqs = [p + greedy(ref, p, args.gen, dev) for p in ps]
    ref_logits = [teacher_forced(ref, s, dev) for s in seqs]
    del ref
    nll0 = count0 = 0.0
    for p, s, rl in zip(ps, seqs, ref_logits, strict=True):
        a, b = len(p) - 1, len(s) - 1
        lr = torch.log_softmax(rl[a:b], -1)
        nll0 -= float(lr.gather(-1, torch.tensor(s[a + 1:b + 1], device=lr.device)[:, None]).sum())
        count0 += b - a
    print(f"bf16 reference: {len(seqs)} sequences, {int(count0)} continuation positions, NLL of "
          f"its own greedy tokens {nll0 / count0:.4f}, {time.time() - t0:.0f} s", flush=True)
    results = [{"precision": "bf16", "lm_head": "bf16", "positions": int(count0),
                "nll_bf16_greedy": nll0 / count0}]
    for precision, head in VARIANTS:
        t1 = time.time()
        model = build_model(src, precision, dev, lm_head=head, tokenizer=tok)
        model.setup_cache(1, max(len(s) for s in seqs))
        err = sig = 0.0
        agree = kl = nll = count = 0.0
        for p, s, rl in zip(ps, seqs, ref_logits, strict=True):
            vl = teacher_forced(model, s, dev)
            a, b = len(p) - 1, len(s) - 1  # positions that predict the continuation
            r, v = rl[a:b], vl[a:b]
            err += float(((v - r) ** 2).sum())
            sig += float((r ** 2).sum())
            agree += float((v.argmax(-1) == r.argmax(-1)).sum())
            lr, lv = torch.log_softmax(r, -1), torch.log_softmax(v, -1)
            kl += float((lr.exp() * (lr - lv)).sum())
            target = torch.tensor(s[a + 1:b + 1], device=v.device)
            nll -= float(lv.gather(-1, target[:, None]).sum())
            count += b - a
        del model
        row = {"precision": precision, "lm_head": head, "positions": int(count),
               "logits_sqnr_db": 10 * torch.log10(torch.tensor(sig / err)).item(),
               "top1_agreement": agree / count, "kl_nats": kl / count, "nll_bf16_greedy": nll / count}
        results.append(row)
        print(f"{precision:12s} head {head:5s} SQNR {row['logits_sqnr_db']:5.2f} dB  top-1 "
              f"{100 * row['top1_agreement']:5.1f}%  KL {row['kl_nats']:.4f}  NLL "
              f"{row['nll_bf16_greedy']:.4f}  ({time.time() - t1:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "device": str(dev), "n": args.n,
                                         "gen": args.gen, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
