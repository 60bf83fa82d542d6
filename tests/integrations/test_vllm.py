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
