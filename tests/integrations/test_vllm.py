"""ReSET vLLM v1 logits processor, driven like vLLM's persistent batch drives it.

vLLM does not install on this CPU machine, so this runs against the stand-in interface in
``resetfp4.integrations.vllm`` (the real one is used automatically when vllm is importable).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from resetfp4.integrations import vllm as rv
from resetfp4.sampling import BoundaryTables, entropy, reset_temperatures, snap_entropy

TEXTS = ["a", "\n", "\n\n", "b\n\nc", "d"] + [f"t{i}" for i in range(11)]
V = len(TEXTS)
TABLES = BoundaryTables.from_token_texts(TEXTS)
CONFIG = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=4))
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the device-side undo and pinned copies)")])]


def starts_of(tokens):
    def two_nl(t):
        return t >= 2 and TEXTS[tokens[t - 1]] == TEXTS[tokens[t - 2]] == "\n"

    return [t >= 1 and ("\n\n" in TEXTS[tokens[t - 1]] or two_nl(t)) for t in range(len(tokens))]


def test_interface_is_the_stand_in_here():
    import importlib.util

    assert rv.VLLM_AVAILABLE == (importlib.util.find_spec("vllm") is not None)
    proc = rv.with_boundary(TABLES)(CONFIG, torch.device("cpu"), False)
    assert isinstance(proc, rv.LogitsProcessor) and proc.is_argmax_invariant() is False


def test_matches_oracle_through_adds_removes_moves_and_swaps():
    rng = random.Random(0)
    proc = rv.with_boundary(TABLES)(CONFIG, torch.device("cpu"), False)
    slots: list[dict | None] = [None] * 4
    finished, n_req = [], 0

    def new_request(i):
        nonlocal n_req
        n_req += 1
        cfg = {"t_low": rng.choice([0.1, 0.3]), "tau0": rng.choice([0.5, 1.5]),
               "window": rng.choice([1, 3, 8])}
        params = rv.SamplingParams(extra_args={"reset": cfg} if n_req % 5 else None)  # some rows plain
        req = {"cfg": cfg if n_req % 5 else None, "out": [], "h": [], "temps": []}
        slots[i] = req
        return (i, params, [1, 2, 2], req["out"])  # the prompt ends with "\n\n": must not count

    proc.update_state(rv.BatchUpdate(4, [], [new_request(i) for i in range(4)], []))
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        # bookkeeping in the interface's order: removed, then added, then moved
        removed, added, moved = [], [], []
        empty = [i for i in range(4) if slots[i] is None]
        added += [new_request(i) for i in empty]
        if rng.random() < 0.1:  # a request finishes, a new one takes its index
            i = rng.choice([j for j in range(4) if j not in empty])
            finished.append(slots[i])
            removed.append(i)
            added.append(new_request(i))
        if rng.random() < 0.1:
            a, b = rng.sample(range(4), 2)
            moved.append((a, b, rv.MoveDirectionality.SWAP))
            slots[a], slots[b] = slots[b], slots[a]
        elif rng.random() < 0.06:  # b finishes; a moves into b's index, a stays empty a step
            a, b = rng.sample(range(4), 2)
            finished.append(slots[b])
            removed.append(b)
            moved.append((a, b, rv.MoveDirectionality.UNIDIRECTIONAL))
            slots[b], slots[a] = slots[a], None
        proc.update_state(rv.BatchUpdate(4, removed, added, moved) if (removed or added or moved) else None)
        x = torch.randn(4, V, generator=g) * torch.rand(4, 1, generator=g) * 3
        out = proc.apply(x.clone())
        for i, req in enumerate(slots):
            t = float(proc.last_temperature[i])
            if req is None:
                assert t == 1.0
                continue
            if req["cfg"] is None:
                assert t == 1.0 and torch.equal(out[i], x[i])
            else:
                assert torch.allclose(out[i], x[i] / t)
            req["h"].append(float(snap_entropy(entropy(x[i:i + 1]))[0]))
            req["temps"].append(t)
            req["out"].append(rng.choice([0, 1, 1, 2, 3, 4]))  # the engine appends the sampled id
    finished.extend(slots)
    checked = 0
    for req in finished:
        if req is None or req["cfg"] is None or not req["h"]:
            continue
        c = req["cfg"]
        want = reset_temperatures(torch.tensor(req["h"]), torch.tensor(starts_of(req["out"])),
                                  t_low=c["t_low"], tau0=c["tau0"], window=c["window"])
        assert req["temps"] == want.tolist()
        checked += 1
    assert checked >= 6


def test_bad_params():
    with pytest.raises(ValueError, match="t_low and tau0"):
        rv.ReSETLogitsProcessor.validate_params(rv.SamplingParams(extra_args={"reset": {"t_low": 0.1}}))
    with pytest.raises(ValueError, match="window"):
        rv.ReSETLogitsProcessor.validate_params(
            rv.SamplingParams(extra_args={"reset": {"t_low": 0.1, "tau0": 0.5, "window": 0}}))
    proc = rv.with_boundary(TABLES, max_window=4)(CONFIG, torch.device("cpu"), False)
    big = rv.SamplingParams(extra_args={"reset": {"t_low": 0.1, "tau0": 0.5, "window": 8}})
    with pytest.raises(ValueError, match="max_window"):
        proc.update_state(rv.BatchUpdate(1, [], [(0, big, None, [])], []))


def _oracle(req):
    c = req["cfg"]
    return reset_temperatures(torch.tensor(req["h"]), torch.tensor(starts_of(req["out"])),
                              t_low=c["t_low"], tau0=c["tau0"], window=c["window"]).tolist()


def _request(i, cfg):
    req = {"cfg": cfg, "out": [], "h": [], "temps": []}
    return req, (i, rv.SamplingParams(extra_args={"reset": cfg}), [1, 2], req["out"])


def _step(proc, slots, x, sampled, keep=()):
    """One apply of logits ``x`` over ``slots``; rows in ``keep`` (chunked prefill) discard their
    sample, as vLLM does."""
    proc.apply(x.clone().to(proc.device))
    for i, req in enumerate(slots):
        if req is None or i in keep:
            continue
        req["h"].append(float(snap_entropy(entropy(x[i:i + 1]))[0]))
        req["temps"].append(float(proc.last_temperature[i]))
        req["out"].append(sampled(len(req["out"])))


def _logits(*targets):
    """One row of logits per target entropy (nats, 0 .. ln 16): a single raised logit, its
    height found by bisection (entropy falls as it rises)."""
    rows = []
    for h in targets:
        lo, hi = 0.0, 60.0
        for _ in range(60):
            mid = (lo + hi) / 2
            x = torch.zeros(1, V, dtype=torch.float64)
            x[0, 0] = mid
            lo, hi = (mid, hi) if float(entropy(x)[0]) > h else (lo, mid)
        x = torch.zeros(V)
        x[0] = (lo + hi) / 2
        rows.append(x)
    return torch.stack(rows)


def _fresh_oracle(req, since):
    """The temperatures of req's tokens from ``since`` on if its state had started afresh there."""
    c = req["cfg"]
    return reset_temperatures(torch.tensor(req["h"][since:]), torch.tensor(starts_of(req["out"])[since:]),
                              t_low=c["t_low"], tau0=c["tau0"], window=c["window"]).tolist()


@pytest.mark.parametrize("dev", DEVICES)
def test_chunked_prefill_samples_are_not_counted(dev):
    """vLLM samples rows whose prompt is still being prefilled in chunks and throws the token
    away (the output list does not grow): those entropies must not enter the state. Here six
    thrown-away near-certain samples would lower b's mean entropy H_bar and change 4 of its 8
    temperatures."""
    proc = rv.with_boundary(TABLES)(CONFIG, torch.device(dev), dev == "cuda")
    cfg = {"t_low": 0.1, "tau0": 1.0, "window": 4}
    a, add_a = _request(0, cfg)
    b, add_b = _request(1, cfg)
    proc.update_state(rv.BatchUpdate(2, [], [add_a, add_b], []))
    seq = [5, 6, 2, 7, 8, 9, 10, 11]  # id 2 is "\n\n": a step starts at token 3
    for _ in range(6):  # b is in chunked prefill for six steps
        _step(proc, [a, b], _logits(2.0, 0.0), lambda n: seq[n], keep={1})
    for h in (2.6, 2.6, 1.2, 1.2, 2.6, 1.2):
        _step(proc, [a, b], _logits(2.0, h), lambda n: seq[n % 8])
    for h in (1.2, 1.2):
        _step(proc, [a, b], _logits(2.0, h), lambda n: seq[n % 8])
    assert len(b["h"]) == 8 and a["temps"] == _oracle(a) and b["temps"] == _oracle(b)
    polluted = reset_temperatures(torch.tensor([0.0] * 6 + b["h"]),
                                  torch.tensor([False] * 6 + starts_of(b["out"])),
                                  t_low=0.1, tau0=1.0, window=4).tolist()[6:]
    assert sum(x != y for x, y in zip(polluted, b["temps"], strict=True)) == 4  # the test discriminates


@pytest.mark.parametrize("dev", DEVICES)
def test_a_request_taken_out_and_back_keeps_its_state(dev):
    """Preempted (or unscheduled) requests leave the persistent batch and come back later with
    the same output list, maybe at another index: their ReSET state must carry on (a state
    started afresh on return would give a's last three tokens other temperatures here)."""
    proc = rv.with_boundary(TABLES)(CONFIG, torch.device(dev), dev == "cuda")
    cfg = {"t_low": 0.3, "tau0": 1.0, "window": 4}
    a, add_a = _request(0, cfg)
    b, add_b = _request(1, cfg)
    proc.update_state(rv.BatchUpdate(2, [], [add_a, add_b], []))
    seq = [5, 2, 6, 7, 8, 9, 10, 11, 2, 12, 13, 14, 15, 5, 6]  # steps start at tokens 2 and 9
    for h in (2.0, 1.2, 2.0, 1.2, 2.6, 2.6, 2.0, 2.6):
        _step(proc, [a, b], _logits(h, 2.0), lambda n: seq[n])
    proc.update_state(rv.BatchUpdate(1, [0], [], [(1, 0, rv.MoveDirectionality.UNIDIRECTIONAL)]))
    for _ in range(2):  # a is out of the batch; b runs alone at index 0
        _step(proc, [b], _logits(1.5), lambda n: seq[n])
    c, add_c = _request(1, {"t_low": 0.1, "tau0": 0.5, "window": 2})  # a newcomer takes index 1
    proc.update_state(rv.BatchUpdate(2, [], [add_c], []))
    _step(proc, [b, c], _logits(1.5, 1.5), lambda n: seq[n])
    proc.update_state(rv.BatchUpdate(3, [], [(2, rv.SamplingParams(extra_args={"reset": cfg}), [1, 2],
                                              a["out"])], []))  # a comes back at index 2
    for h in (1.2, 2.0, 1.2):
        _step(proc, [b, c, a], _logits(1.5, 1.5, h), lambda n: seq[n])
    for req in (a, b, c):
        assert req["temps"] == _oracle(req)
    assert len(a["out"]) == 11 and _fresh_oracle(a, 8) != a["temps"][8:]  # the test discriminates


def test_placeholder_and_out_of_table_ids(capsys):
    """Ids past the tokenizer (a padded vocabulary) are no newline; -1 placeholders (async
    scheduling that hides the ids) cannot start a step, and the user is told once."""
    proc = rv.with_boundary(TABLES)(CONFIG, torch.device("cpu"), False)
    req, add = _request(0, {"t_low": 0.1, "tau0": 0.5, "window": 2})
    proc.update_state(rv.BatchUpdate(1, [], [add], []))
    seq = [V + 7, 2, -1, -1, 5]
    for h in (2.0, 1.0, 2.5, 0.4, 1.5):
        _step(proc, [req], _logits(h), lambda n: seq[n])
    assert proc.needs_output_token_ids() is True
    assert "placeholder output ids (-1)" in capsys.readouterr().err
    starts = [False, False, True, False, False]  # only the "\n\n" id (2) starts a step
    want = reset_temperatures(torch.tensor(req["h"]), torch.tensor(starts), t_low=0.1, tau0=0.5, window=2)
    assert req["temps"] == want.tolist()


def test_reset_needs_vllm_temperature_1():
    ok = rv.SamplingParams(temperature=1.0, extra_args={"reset": {"t_low": 0.1, "tau0": 0.5}})
    rv.ReSETLogitsProcessor.validate_params(ok)
    with pytest.raises(ValueError, match=r"set temperature=1.0 \(got 0.6\)"):
        rv.ReSETLogitsProcessor.validate_params(
            rv.SamplingParams(temperature=0.6, extra_args={"reset": {"t_low": 0.1, "tau0": 0.5}}))
    rv.ReSETLogitsProcessor.validate_params(rv.SamplingParams(temperature=0.6))  # ReSET off: any T


@pytest.mark.parametrize("dev", DEVICES)
def test_slot_reused_without_being_listed_as_removed_keeps_the_state(dev):
    """Real vLLM fills a freed index with pop_removed(), so the reused index is not in
    `removed`: its old occupant (a preempted request) must still be kept for its return, both
    when a newcomer is added there and when a condense move lands there."""
    cfg = {"t_low": 0.3, "tau0": 1.0, "window": 4}
    seq = [5, 2, 6, 7, 8, 9, 10, 11, 2, 12, 13, 14, 15, 5, 6]
    for how in ("added", "moved"):
        proc = rv.with_boundary(TABLES)(CONFIG, torch.device(dev), dev == "cuda")
        a, add_a = _request(0, cfg)
        b, add_b = _request(1, cfg)
        proc.update_state(rv.BatchUpdate(2, [], [add_a, add_b], []))
        for h in (2.0, 1.2, 2.0, 1.2, 2.6, 2.6, 2.0, 2.6):
            _step(proc, [a, b], _logits(h, 2.0), lambda n: seq[n])
        if how == "added":  # a preempted; a newcomer takes index 0, nothing listed as removed
            c, add_c = _request(0, {"t_low": 0.1, "tau0": 0.5, "window": 2})
            proc.update_state(rv.BatchUpdate(2, [], [add_c], []))
            slots = [c, b]
        else:  # a preempted; b condensed from index 1 onto index 0, nothing listed as removed
            proc.update_state(rv.BatchUpdate(1, [], [], [(1, 0, rv.MoveDirectionality.UNIDIRECTIONAL)]))
            slots = [b]
        _step(proc, slots, _logits(*[1.5] * len(slots)), lambda n: seq[n])
        back = (len(slots), rv.SamplingParams(extra_args={"reset": cfg}), [1, 2], a["out"])
        proc.update_state(rv.BatchUpdate(len(slots) + 1, [], [back], []))  # a returns
        for h in (1.2, 2.0, 1.2):
            _step(proc, [*slots, a], _logits(*[1.5] * len(slots), h), lambda n: seq[n])
        for req in (a, b):
            assert req["temps"] == _oracle(req), how
        assert _fresh_oracle(a, 8) != a["temps"][8:]  # the test discriminates


@pytest.mark.parametrize("dev", DEVICES)
def test_a_resumed_request_recompute_chunks_are_not_counted(dev):
    """A preempted request comes back and vLLM recomputes prompt + output in chunks, sampling
    (and throwing away) each partial chunk's row: those entropies must not enter the state."""
    proc = rv.with_boundary(TABLES)(CONFIG, torch.device(dev), dev == "cuda")
    cfg = {"t_low": 0.3, "tau0": 1.0, "window": 4}
    a, add_a = _request(0, cfg)
    proc.update_state(rv.BatchUpdate(1, [], [add_a], []))
    seq = [5, 6, 7, 8, 2, 9, 10, 11, 12]
    for h in (0.6, 0.6, 0.6):
        _step(proc, [a], _logits(h), lambda n: seq[n])
    proc.update_state(rv.BatchUpdate(0, [0], [], []))  # preempted
    proc.update_state(rv.BatchUpdate(1, [], [(0, rv.SamplingParams(extra_args={"reset": cfg}), [1, 2],
                                              a["out"])], []))
    for _ in range(2):  # two recompute chunks whose samples are thrown away
        _step(proc, [a], _logits(0.1), lambda n: seq[n], keep={0})
    for h in (0.6, 1.2, 2.6, 1.2):
        _step(proc, [a], _logits(h), lambda n: seq[n])
    assert len(a["h"]) == 7 and a["temps"] == _oracle(a)
    st = starts_of(a["out"])
    polluted = reset_temperatures(torch.tensor(a["h"][:3] + [0.1, 0.1] + a["h"][3:]),
                                  torch.tensor(st[:3] + [False, False] + st[3:]),
                                  t_low=0.3, tau0=1.0, window=4).tolist()
    assert polluted[:3] + polluted[5:] != a["temps"]  # the test discriminates


@pytest.mark.parametrize("reset, match", [
    ({"t_low": 0.1, "tau0": 0.5, "window": 256}, "exceeds this processor's max_window 128"),
    ({"t_low": 0.1, "tau0": 0.5, "window": 32.9}, "window'] must be an integer, got 32.9"),
    ({"t_low": 0.1, "tau0": 0.5, "window": True}, "must be an integer, got True"),
    ({"t_low": None, "tau0": 0.5}, "t_low, t_high and tau0 must be numbers"),
    ({"t_low": 0.1, "tau0": 0.5, "window": float("inf")}, "must be an integer, got inf"),
    ("fast", "must be a dict"),
])
def test_request_params_are_checked_per_request(reset, match):
    # update_state runs inside vLLM's engine core: a bad request must fail in validate_params
    with pytest.raises(ValueError, match=match):
        rv.ReSETLogitsProcessor.validate_params(rv.SamplingParams(extra_args={"reset": reset}))


def test_tables_come_from_vllms_tokenizer_revision(monkeypatch):
    # the step tables used to come from the default revision without remote code, whatever
    # vLLM was told: a pinned tokenizer revision gave tables of another vocabulary
    import transformers

    seen = {}

    class Tok:
        def __len__(self):
            return len(TEXTS)

        def get_vocab(self):
            return {t: i for i, t in enumerate(TEXTS)}

        def convert_ids_to_tokens(self, ids):
            return [f"piece{i}" for i in ids]  # not byte-level: each id is decoded alone

        def batch_decode(self, seqs, **_):
            return [TEXTS[s[0]] for s in seqs]

    def load(name, **kw):
        seen.update(kw, name=name)
        return Tok()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load)
    mc = SimpleNamespace(tokenizer="org/model", tokenizer_revision="abc123", trust_remote_code=True)
    cfg = SimpleNamespace(model_config=mc, scheduler_config=SimpleNamespace(max_num_seqs=2))
    proc = rv.ReSETLogitsProcessor(cfg, torch.device("cpu"), False)
    assert seen == {"name": "org/model", "revision": "abc123", "trust_remote_code": True}
    assert proc.tables_cpu.is_newline.tolist() == TABLES.is_newline.tolist()
