"""ReSETLogitsProcessor: unit checks with the real tokenizer, and generate() with SmolLM2."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

from resetfp4.integrations.hf import ReSETLogitsProcessor
from resetfp4.sampling import BoundaryTables, SamplerConfig, entropy, reset_temperatures


def oracle_starts(tables: BoundaryTables, gen: list[int]) -> list[bool]:
    return [t >= 1 and (bool(tables.has_double_newline[gen[t - 1]]) or
                        (t >= 2 and bool(tables.is_newline[gen[t - 1]] and tables.is_newline[gen[t - 2]])))
            for t in range(len(gen))]


def test_prompt_tokens_never_count_and_steps_are_seen(smollm2_tokenizer):
    tok = smollm2_tokenizer
    nl, dnl = tok.encode("\n")[0], tok.encode("\n\n")[0]
    proc = ReSETLogitsProcessor(tok, t_low=0.1, tau0=1.0, window=2)
    V = len(tok)
    g = torch.Generator().manual_seed(0)
    # prompt ends with "\n\n" and "\n\n" (must not start a step); then generate nl, nl, x, dnl, x
    ids = torch.tensor([[5, dnl, nl, nl], [0, 7, 8, dnl]])  # row 1 is left-padded
    gen = [nl, nl, 9, dnl, 9]
    for t in range(len(gen) + 1):
        proc(ids, torch.randn(2, V, generator=g))
        if t < len(gen):
            ids = torch.cat([ids, torch.tensor([[gen[t]], [gen[t]]])], dim=1)
    want = [False, False, True, False, True, False]  # after "\n","\n" and after "\n\n"
    assert proc.starts.tolist() == [want, want]
    for b in range(2):
        oracle = reset_temperatures(proc.entropies[b], proc.starts[b], t_low=0.1, tau0=1.0, window=2)
        assert torch.equal(proc.temperatures[b], oracle)
    # a new generate() call (shorter input) starts over
    proc(ids[:, :3], torch.randn(2, V, generator=g))
    assert proc.starts.shape == (2, 1)
    # ... and so does one exactly one token longer that does not continue the last call's ids
    other = torch.tensor([[11, 12, 13, 14], [15, 16, 17, 18]])
    proc(other, torch.randn(2, V, generator=g))
    assert proc.starts.shape == (2, 1) and proc._prompt_len == 4


def test_divides_by_the_temperature(smollm2_tokenizer):
    proc = ReSETLogitsProcessor.from_config(SamplerConfig(mode="reset", t_low=0.25, tau0=100.0),
                                            smollm2_tokenizer)
    x = torch.randn(3, len(smollm2_tokenizer))
    out = proc(torch.zeros(3, 2, dtype=torch.long), x)
    assert torch.allclose(out, x / 0.25)  # every entropy < tau0 = 100 -> T_low


def test_bad_arguments(smollm2_tokenizer):
    with pytest.raises(ValueError, match="window"):
        ReSETLogitsProcessor(smollm2_tokenizer, t_low=0.1, tau0=0.5, window=0)
    with pytest.raises(ValueError, match="tau0"):
        ReSETLogitsProcessor(smollm2_tokenizer, t_low=0.1, tau0=float("nan"))
    with pytest.raises(ValueError, match="tokenizer"):
        ReSETLogitsProcessor(t_low=0.1, tau0=0.5)
    other = BoundaryTables.from_token_texts(["a", "\n"])
    with pytest.raises(ValueError, match="another tokenizer"):
        ReSETLogitsProcessor(smollm2_tokenizer, t_low=0.1, tau0=0.5, boundary=other)


@pytest.mark.slow
def test_generate_with_smollm2(smollm2_model, smollm2_tokenizer):
    tok, model = smollm2_tokenizer, smollm2_model
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = ["List two colors, one per line.\n\n", "Count: 1\n2\n"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    proc = ReSETLogitsProcessor(tok, t_low=0.1, tau0=0.5505, window=4)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=6, do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                         logits_processor=LogitsProcessorList([proc]), output_logits=True,
                         return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    gen = out.sequences[:, enc["input_ids"].shape[1]:]
    steps = gen.shape[1]
    assert proc.temperatures.shape == (2, steps)
    raw = torch.stack(out.logits, dim=1)  # [B, steps, V]: logits before any processor
    assert torch.allclose(proc.entropies, entropy(raw.float()), atol=1e-5)
    for b in range(2):
        starts = oracle_starts(proc._tables, gen[b].tolist())
        assert proc.starts[b].tolist() == starts
        want = reset_temperatures(proc.entropies[b], torch.tensor(starts), t_low=0.1, tau0=0.5505, window=4)
        assert torch.equal(proc.temperatures[b], want)
