"""Continuous batching: every prompt's result equals its one-prompt-at-a-time result.

Tiny fp32 CPU model (random weights, SmolLM2 tokenizer) for the many cases; the real
SmolLM2-135M for stop strings / EOS / sampling on real text.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import random_state, tiny_args

from resetfp4.engine.decode import DecodeRunner, DecodeState
from resetfp4.engine.engine import SYNC_EVERY, Engine, load_engine
from resetfp4.engine.model import Transformer
from resetfp4.engine.sampling_glue import make_sampler, reset_config
from resetfp4.sampling import PAPER_PARAMS, SamplerConfig

CONFIGS = {
    "greedy": SamplerConfig(mode="greedy", seed=3),
    "fixed": SamplerConfig(mode="fixed", temperature=1.0, top_p=0.95, seed=3),
    "reset": reset_config(PAPER_PARAMS["qwen3-8b"], seed=3),
}
# Common words: every token id < VOCAB, so a small vocabulary keeps the tiny model fast.
WORDS = "the cat sat on a mat and then it went to the house of one man who was there with his dog".split()
VOCAB = 4096
# Prompts of 1 to 16 words (1 to 16 tokens): different lengths in every batch.
PROMPTS = [" ".join(WORDS[: 1 + (5 * i) % 16]) for i in range(11)]
NEW = 12  # max_new_tokens: > SYNC_EVERY, so rows end mid-chunk, at a chunk edge and at the budget


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny GEMMs run ~50x faster on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model():
    args = tiny_args("qwen3", vocab_size=VOCAB)
    with torch.device("meta"):
        model = Transformer(args, torch.float32)
    model.load_state_dict({k: v.float() for k, v in random_state(args).items()}, assign=True)
    return model


def _engine(model, tokenizer, max_batch: int, refill: bool = True) -> Engine:
    # Built without the tokenizer: its step-boundary tables cover 49152 ids, the tiny model
    # only VOCAB (ReSET then never sees a step start; the SmolLM2 test below does).
    eng = Engine(
        model, None, model_name="tiny", precision="fp32", max_batch=max_batch, max_seq_len=64,
        refill=refill,
    )
    eng.tokenizer = tokenizer
    # Every 7th id ends a row: sampled rows stop after ~7 tokens on average, some run to NEW.
    eng.eos_ids = set(range(0, VOCAB, 7))
    return eng


class _Close(float):
    """A float equal to any other within 1e-4: fp32 CPU GEMMs round a row differently at
    another batch size (~1e-6 nats here); a trace shifted by one token differs by ~1e-2."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and abs(self - other) <= 1e-4

    __hash__ = float.__hash__


def _key(r) -> tuple:
    return (r.token_ids, r.finish_reason, r.text, [_Close(h) for h in r.entropies], r.temperatures,
            r.step_starts)


def _alone(eng: Engine, prompts: list[str], cfg: SamplerConfig, **kw) -> list[tuple]:
    """Each prompt on its own, with the seed ``generate`` gives it in a shared call."""
    return [
        _key(eng.generate([p], [dataclasses.replace(cfg, seed=cfg.seed + i)], NEW, chat=False, **kw)[0])
        for i, p in enumerate(prompts)
    ]


@pytest.mark.parametrize(
    "mode,n_prompts,max_batch",
    [("reset", 3, 8), ("greedy", 4, 4), ("fixed", 11, 4), ("reset", 11, 4), ("greedy", 11, 2)],
)
def test_continuous_equals_one_at_a_time(tiny_model, smol_tokenizer, mode, n_prompts, max_batch):
    """len(prompts) < batch (a pad slot), == batch, >> batch (slots refilled)."""
    prompts, cfg = PROMPTS[:n_prompts], CONFIGS[mode]
    eng = _engine(tiny_model, smol_tokenizer, max_batch)
    got = [_key(r) for r in eng.generate(prompts, cfg, NEW, chat=False, trace=True)]
    stats = dict(eng.last_stats)
    assert got == _alone(eng, prompts, cfg, trace=True)
    assert all(len(k[0]) == len(k[3]) == len(k[4]) == len(k[5]) for k in got)
    if mode != "greedy":  # sampled rows end at EOS at various steps and at the budget
        reasons = {k[1] for k in got}
        assert "eos" in reasons and any(len(k[0]) % SYNC_EVERY for k in got if k[1] == "eos")
    assert stats["prefills"] >= 1 and stats["slots"] == min(max_batch, 4)
    assert stats["decode_steps"] <= NEW * n_prompts
    assert 0 < stats["occupancy"] <= 1


def test_refill_saves_steps_and_keeps_results(tiny_model, smol_tokenizer):
    cfg = CONFIGS["reset"]
    cont = _engine(tiny_model, smol_tokenizer, 4)
    static = _engine(tiny_model, smol_tokenizer, 4, refill=False)
    prompts = PROMPTS * 2  # 22 prompts: static groups 4 x 5 + 2, each until its longest row ends
    a = [_key(r) for r in cont.generate(prompts, cfg, 32, chat=False, trace=True)]
    b = [_key(r) for r in static.generate(prompts, cfg, 32, chat=False, trace=True)]
    assert a == b
    assert static.last_stats["prefills"] == 6 and cont.last_stats["prefills"] > 6
    assert cont.last_stats["decode_steps"] < static.last_stats["decode_steps"]
    assert cont.last_stats["occupancy"] > static.last_stats["occupancy"]


def test_stop_string_and_stream_with_refill(tiny_model, smol_tokenizer):
    cfg = CONFIGS["fixed"]
    eng = _engine(tiny_model, smol_tokenizer, 2)
    eng.eos_ids = set()  # rows end by stop string or budget only
    free = eng.generate(PROMPTS[:6], cfg, NEW, chat=False)
    text = max((r.text for r in free), key=len)
    stop = [text[3:5]]  # occurs in at least that row's text
    chunks: dict[int, str] = {}
    res = eng.generate(
        PROMPTS[:6], cfg, NEW, chat=False, stop=stop, trace=True,
        stream=lambda i, t: chunks.__setitem__(i, chunks.get(i, "") + t),
    )
    assert "stop" in {r.finish_reason for r in res}
    assert [_key(r) for r in res] == _alone(eng, PROMPTS[:6], cfg, stop=stop, trace=True)
    assert chunks == {i: r.text for i, r in enumerate(res)}


def test_refill_writes_only_its_slots(tiny_model):
    """Scattered-slot prefill leaves other cache rows alone and equals a contiguous prefill."""
    tiny_model.setup_cache(4, 32)
    sampler = make_sampler(4, tiny_model.args.vocab_size, torch.device("cpu"), None)
    runner = DecodeRunner(tiny_model, sampler, use_graphs=False)
    st = runner.state(4)
    layer = tiny_model.model.layers[0].self_attn
    runner.refill(st, [0, 1, 2, 3], [[5, 6, 7], [8, 9, 10, 11, 12], [13], [14, 15]])
    before = layer.k_cache.clone()
    runner.refill(st, [3, 1], [[8, 9, 10, 11, 12], [5, 6, 7]])
    assert torch.equal(layer.k_cache[[0, 2]], before[[0, 2]])
    assert torch.equal(layer.k_cache[3, :, :4], before[1, :, :4])  # prompt[:-1] only
    assert torch.equal(layer.k_cache[1, :, :2], before[0, :, :2])
    assert st.tok.tolist() == [7, 7, 13, 12] and st.pos.tolist() == [2, 2, 0, 4]
    assert st.hidx.tolist() == [0] * 4
    with pytest.raises(ValueError, match="one prompt per distinct slot"):
        runner.refill(st, [1, 1], [[5], [6]])
    with pytest.raises(ValueError, match="at least one token"):
        runner.refill(st, [1], [[]])
    assert isinstance(st, DecodeState)


def test_idle_slot_never_leaves_the_cache(tiny_model, smol_tokenizer):
    """Slot 1's 40-token row ends at step 24; the slot then idles while slot 0's second row
    runs 24 more steps: its position would pass the 64-position cache without the clamp."""
    eng = _engine(tiny_model, smol_tokenizer, 2)
    eng.eos_ids = set()
    prompts = ["the", "the" + " dog" * 39, "the cat"]
    assert len(eng.encode(prompts[1], chat=False)) == 40
    res = eng.generate(prompts, CONFIGS["greedy"], 24, chat=False)
    assert [r.finish_reason for r in res] == ["length"] * 3
    assert eng.last_stats["decode_steps"] == 48 and eng.last_stats["occupancy"] == 0.75
    assert res[2].token_ids == eng.generate(prompts[2:], CONFIGS["greedy"], 24, chat=False)[0].token_ids


def test_empty_prompt_is_an_actionable_error(tiny_model, smol_tokenizer):
    eng = _engine(tiny_model, smol_tokenizer, 2)
    with pytest.raises(ValueError, match="prompt 1 encodes to no tokens; give a non-empty prompt"):
        eng.generate(["the", ""], CONFIGS["greedy"], 4, chat=False)


@pytest.mark.slow
def test_smollm2_continuous_equals_one_at_a_time(monkeypatch):
    """Real text: greedy with "\\n" as EOS, sampled ReSET with a stop string; 5 prompts, 2 slots."""
    eng = load_engine("smollm2-135m-instruct", "fp32", device="cpu", max_batch=2, max_seq_len=64)
    monkeypatch.setattr(eng, "eos_ids", eng.eos_ids | {198})  # "\n" ends a row
    prompts = [
        "The capital of France is",
        "One, two, three, four, five, six,",
        "Water boils at",
        "The largest planet of the solar system is",
        "Hi",
    ]
    for cfg, stop in ((CONFIGS["greedy"], None), (CONFIGS["reset"], ["."])):
        got = [_key(r) for r in eng.generate(prompts, cfg, 10, chat=False, stop=stop, trace=True)]
        assert eng.last_stats["slots"] == 2 and eng.last_stats["prefills"] >= 3
        assert got == _alone_n(eng, prompts, cfg, 10, stop)
        assert {k[1] for k in got} >= ({"eos"} if stop is None else {"stop"})


def _alone_n(eng: Engine, prompts: list[str], cfg: SamplerConfig, n: int, stop) -> list[tuple]:
    return [
        _key(eng.generate([p], [dataclasses.replace(cfg, seed=cfg.seed + i)], n, chat=False, stop=stop,
                          trace=True)[0])
        for i, p in enumerate(prompts)
    ]


def test_tokens_per_s_leaves_out_the_one_time_capture(tiny_model, smol_tokenizer, monkeypatch):
    import time

    eng = _engine(tiny_model, smol_tokenizer, 2)
    real = eng.runner.capture
    monkeypatch.setattr(eng.runner, "capture", lambda *a: (time.sleep(0.3), real(*a))[1])
    eng.generate(["the cat", "a dog"], CONFIGS["greedy"], 6, chat=False)
    s = eng.last_stats
    assert 0.3 <= s["setup_s"] < s["seconds"]
    assert s["tokens_per_s"] == pytest.approx(s["tokens"] / (s["seconds"] - s["setup_s"]))
