"""Batched, resumable evaluation of one engine configuration on one task.

Files written to ``out_dir``:

- ``config.json``: the exact configuration (written first; a resumed run must match it);
- ``problems.jsonl``: one line per finished problem: ``id``, ``gold``, ``samples`` (texts),
  ``answers`` (extracted), ``correct``, ``lengths`` (generated tokens), ``finish_reasons``,
  ``seeds``, ``score`` (mean correctness) and ``wall_s`` (its share of generation time);
- ``tokens.jsonl`` (only with ``trace=True``): one line per sample, ``{"id", "sample",
  "correct", "entropies", "temperatures", "starts", "token_ids"}`` -- large, not for git;
  ``tokens.npz`` (its packed form, :mod:`resetfp4.eval.analysis`) and ``traces/`` (HTML
  traces, ``resetfp4 eval --html-traces``) are written by other tools;
- ``summary.json``: accuracy with its 95% CI, pass@k, maj@k, lengths, truncation rate,
  tokens/s and the configuration.

A run that is interrupted is resumed by running the same command again: problems already
in ``problems.jsonl`` are skipped. The configuration must match (:data:`RESUME_KEYS`: model,
sampler, prompts, tracing, ...); ``overwrite`` discards the folder's run files instead. Every
(problem, sample) pair has its own seed derived from ``(seed, problem id, sample index)``, so
results do not depend on batching or resuming.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resetfp4.eval.datasets import Problem, Task
from resetfp4.eval.grading import extract_answer, extract_choice_letter, is_equiv, normalize_answer
from resetfp4.eval.prompts import build_prompt, template_name
from resetfp4.eval.stats import accuracy_ci
from resetfp4.fileutil import check_new_folder_path, finite_or_null, make_folder
from resetfp4.fileutil import sha256_file as _sha256_file
from resetfp4.sampling.config import SamplerConfig

PROBLEMS_FILE = "problems.jsonl"
TOKENS_FILE = "tokens.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
TOKENS_NPZ = "tokens.npz"  # tokens.jsonl packed (resetfp4.eval.analysis.write_tokens_npz)
TRACES_DIR = "traces"  # HTML traces of resetfp4.cli.evaluate.write_html_traces
# config keys that must agree for a resumed run to append to an existing one. "prompt_templates"
# and "trace" have been recorded since the first run-folder format, so every folder has them:
# a resume that changes the prompt form (e.g. a JSONL file switched from the AIME to the generic,
# verbatim format: same ids, text and answers, so the same task_fingerprint) or turns tracing on
# or off (token dumps and token_stats of part of the run) is refused.
RESUME_KEYS = (
    "model",
    "precision",
    "sampler",
    "samples",
    "max_new_tokens",
    "max_seq_len",
    "seed",
    "task_fingerprint",
    "prompt_templates",
    "chat",
    "stop",
    "trace",
)
# what a pathological answer can raise in the grader (sympy on model output): counted as wrong
GRADING_ERRORS = (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError)
# what to do when a key differs, beyond "another --out folder, or --overwrite"
_RESUME_HINTS = {
    "trace": "the earlier problems were run with tracing (--dump-tokens / --html-traces) "
    "{old}, and token dumps and token_stats must cover the whole run: resume with tracing as before",
    "prompt_templates": "the prompts would differ from the earlier problems' (the task file's format "
    "decides the template: AIME/GPQA items are wrapped in a chain-of-thought template, generic "
    "{{id, prompt, answer}} items are sent verbatim): resume with the task file as it was",
    "prompt_sha256": "the prompts sent would differ from the earlier problems' (prompt template or "
    "choice order changed): resume with the task and resetfp4 version as they were",
}


@dataclass(frozen=True)
class EvalConfig:
    """What to run. ``trace``: also dump per-token entropies/temperatures/starts."""

    samples: int = 4
    max_new_tokens: int = 1024
    seed: int = 0
    batch_size: int = 64
    trace: bool = False
    chat: bool = True
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def sample_seed(seed: int, problem_id: str, k: int) -> int:
    """Deterministic 31-bit seed for sample ``k`` of ``problem_id`` under run seed ``seed``."""
    digest = hashlib.sha256(f"{seed}:{problem_id}:{k}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def grade(problem: Problem, text: str) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one generation."""
    if problem.kind == "mcq":
        letter = extract_choice_letter(text, n_choices=len(problem.choices) or 4)
        return letter, letter == problem.answer
    pred = extract_answer(text)
    try:
        return pred, is_equiv(pred, problem.answer)
    except GRADING_ERRORS as e:
        # one pathological generation must not end a long run: it counts as wrong, and says so
        from resetfp4.engine.log import warn_once

        warn_once(f"grading problem {problem.id} failed ({type(e).__name__}: {e}); counted as wrong")
        return pred, False


def model_file(engine: Any) -> str | None:
    """The single model file behind ``engine`` (a GGUF path or a resolved alias), if any."""
    name = str(getattr(engine, "model_path", "") or getattr(engine, "model_name", "") or "")
    if name and os.path.isfile(name):
        return name
    try:
        from resetfp4.engine.aliases import resolve_alias
    except ImportError:
        return None
    try:
        path = resolve_alias(name) if name else None
    except (FileNotFoundError, ValueError):
        return None
    return str(path) if path is not None and os.path.isfile(path) else None


def model_sha256(engine: Any) -> str | None:
    """The engine's model sha256 when it knows it, else the hash of its single model file.

    HF / ModelOpt folders (several files) give ``None``.
    """
    known = getattr(engine, "model_sha256", None)
    if known:
        return str(known)
    path = model_file(engine)
    if path is None:
        return None
    marker = os.path.splitext(path)[0] + ".sha256"  # written by the alias assembler after verifying
    if os.path.isfile(marker):
        return Path(marker).read_text().strip() or _sha256_cached(path)
    return _sha256_cached(path)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_cached(path: str) -> str:
    """sha256 of a file, hashed once per (path, size, mtime): a study calls run_eval many times."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = _sha256_file(path)
    return _SHA_CACHE[key]


def _device_name(engine: Any) -> str:
    dev = str(getattr(engine, "device", "unknown"))
    if dev.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
    return dev


def prompt_sha256(task: Task) -> str:
    """sha256 over (id, prompt sent) of every problem: the prompts exactly, template included
    (``task.fingerprint()`` covers the items, not how they are put to the model)."""
    h = hashlib.sha256()
    for p in task.problems:
        h.update(json.dumps([p.id, build_prompt(p)]).encode())
    return h.hexdigest()


def build_config(
    engine: Any, task: Task, sampler: SamplerConfig, cfg: EvalConfig, extra: dict | None
) -> dict:
    """The run configuration recorded in ``config.json`` and ``summary.json``."""
    import torch

    from resetfp4 import __version__

    sampler_d = dataclasses.asdict(sampler)
    sampler_d.pop("seed")
    return {
        "model": getattr(engine, "model_name", None),
        "precision": getattr(engine, "precision", None),
        "model_sha256": model_sha256(engine),
        "model_file": model_file(engine),
        "device": _device_name(engine),
        "sampler": sampler_d,
        "seed_scheme": "sha256(f'{seed}:{problem_id}:{k}')[:4] & 0x7fffffff",
        "samples": cfg.samples,
        "max_new_tokens": cfg.max_new_tokens,
        # KV-cache length: caps prompt + generation, so it changes truncation like max_new_tokens
        "max_seq_len": getattr(engine, "max_seq_len", None),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "chat": cfg.chat,
        "stop": list(cfg.stop),
        "trace": cfg.trace,
        "task": task.name,
        "task_fingerprint": task.fingerprint(),
        "n_problems": len(task.problems),
        "prompt_templates": sorted({template_name(p) for p in task.problems}),
        "prompt_sha256": prompt_sha256(task),
        "resetfp4_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "argv": sys.argv,
        **(extra or {}),
    }


# keys of a problems.jsonl record that resuming and summarize() read
RECORD_KEYS = ("id", "correct", "answers", "lengths", "finish_reasons", "wall_s")
_REDO = "restore it, or rerun into a new --out folder (or --overwrite this one)"


def read_json_file(path: Path, what: str) -> Any:
    """``path`` parsed as JSON; a malformed file is a ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the {what} is damaged: {_REDO}") from None


def _read_done(path: Path) -> dict[str, dict]:
    """Finished problems in ``problems.jsonl``; a torn last line (interrupt) is dropped."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    good = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # interrupted mid-write: redo that problem
            raise ValueError(f"{path}:{i + 1}: corrupt record; delete the run folder to start over") from None
        missing = [k for k in RECORD_KEYS if k not in rec] if isinstance(rec, dict) else list(RECORD_KEYS)
        if missing:
            raise ValueError(
                f"{path}:{i + 1}: not a finished-problem record (it lacks {missing}); the file is "
                f"damaged: {_REDO}"
            )
        done[rec["id"]] = rec
        good.append(line)
    if len(good) != len(lines):
        path.write_text("".join(g + "\n" for g in good), encoding="utf-8")
    return done


def _discard_run(out: Path) -> None:
    """Remove a run's files from ``out`` (``overwrite``): its records, token dumps (JSONL and
    packed), summary, config and HTML traces; anything else in the folder is left alone."""
    for name in (PROBLEMS_FILE, TOKENS_FILE, TOKENS_NPZ, SUMMARY_FILE, CONFIG_FILE):
        (out / name).unlink(missing_ok=True)
    traces = out / TRACES_DIR
    if traces.is_symlink():
        traces.unlink()
    elif traces.is_dir():
        for page in traces.glob("*.html"):
            page.unlink()
        if not any(traces.iterdir()):
            traces.rmdir()  # a folder holding other files than ours stays, with them


def _check_resume(out: Path, config: dict, overwrite: bool) -> None:
    cfg_path = out / CONFIG_FILE
    if overwrite:
        _discard_run(out)
        return
    if not cfg_path.exists():
        return
    old = read_json_file(cfg_path, "run configuration")
    if not isinstance(old, dict):
        raise ValueError(f"{cfg_path} is not a JSON object; the run configuration is damaged: {_REDO}")
    keys = RESUME_KEYS
    if _greedy(old) and _greedy(config):
        # greedy draws no random numbers: the seed does not matter (folders from before the CLI
        # refused --seed with greedy may record any seed, and can no longer be given it)
        keys = tuple(k for k in keys if k != "seed")
    if "prompt_sha256" in old or len(old.get("prompt_templates") or ()) > 1:
        # folders from before prompt_sha256 was recorded: their prompt_templates (checked above)
        # fixes every prompt's form when it names one template (always, for a task file: its
        # first item sets the format of all), so a missing hash can only match then
        keys = (*keys, "prompt_sha256")
    differ = [k for k in keys if old.get(k) != config.get(k)]
    if "prompt_templates" in differ and "prompt_sha256" in differ:
        differ.remove("prompt_sha256")  # follows from the template change, said once
    if differ:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in differ)
        hints = [_RESUME_HINTS[k].format(old="on" if old.get(k) else "off")
                 for k in differ if k in _RESUME_HINTS]
        raise ValueError(
            f"{out} holds a run with a different configuration ({diffs}); "
            + "".join(h + "; or " for h in hints)
            + "use another --out folder, or --overwrite to discard it"
        )


def _greedy(config: dict) -> bool:
    sampler = config.get("sampler")
    return isinstance(sampler, dict) and sampler.get("mode") == "greedy"


def _prune_tokens(path: Path, done: dict[str, dict]) -> None:
    """Drop token dumps of problems that did not finish (they will be regenerated)."""
    if not path.exists():
        return
    raw = path.read_bytes()
    expected = sum(len(rec["correct"]) for rec in done.values())
    if raw.count(b"\n") == expected and (not raw or raw.endswith(b"\n")):
        return  # one whole line per finished sample: nothing to drop (skips parsing a big dump)
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["id"] in done:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def _problem_record(problem: Problem, results: list, seeds: list[int], wall_s: float) -> dict:
    graded = [grade(problem, r.text) for r in results]
    correct = [c for _, c in graded]
    return {
        "id": problem.id,
        "gold": problem.answer,
        "kind": problem.kind,
        "samples": [r.text for r in results],
        "answers": [a for a, _ in graded],
        "correct": correct,
        "lengths": [len(r.token_ids) for r in results],
        "finish_reasons": [r.finish_reason for r in results],
        "prompt_tokens": results[0].prompt_tokens,
        "seeds": seeds,
        "score": sum(correct) / len(correct),
        "wall_s": wall_s,
    }


def _token_records(rec: dict, results: list) -> list[str]:
    out = []
    for k, r in enumerate(results):
        out.append(
            json.dumps(
                {
                    "id": rec["id"],
                    "sample": k,
                    "seed": rec["seeds"][k],
                    "correct": rec["correct"][k],
                    "entropies": list(r.entropies),
                    "temperatures": list(r.temperatures),
                    "starts": [bool(s) for s in r.step_starts],
                    "token_ids": list(r.token_ids),
                }
            )
        )
    return out


def check_run_dir(out_dir: str | Path) -> None:
    """Raise unless ``out_dir`` can hold this run: a new folder, or one whose ``config.json``
    (if any) is an eval run's (resumed, or replaced with ``overwrite``). A folder with another
    ``config.json`` (a model's, say, which a run would overwrite) is refused. Nothing is written."""
    out = check_new_folder_path(out_dir, "--out", "the run folder (a new one, or a run folder to resume)",
                                "a new folder")
    cfg = out / CONFIG_FILE
    if not out.is_dir() or (out / PROBLEMS_FILE).exists() or not cfg.exists():
        return
    try:
        is_run = "task_fingerprint" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError):
        is_run = False
    if not is_run:
        raise ValueError(
            f"--out {out} holds a config.json that is not an eval run's (a model folder?), and is not an "
            "eval run folder; a run would overwrite it: choose a new or empty folder"
        )


def prepare_run_dir(out_dir: str | Path) -> Path:
    """:func:`check_run_dir`, then create the folder; an OS refusal names the path."""
    check_run_dir(out_dir)
    return make_folder(out_dir, "run folder")


def run_eval(
    engine: Any,
    task: Task,
    sampler: SamplerConfig,
    cfg: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    overwrite: bool = False,
    extra_config: dict | None = None,
    upto: int | None = None,
) -> dict:
    """Evaluate ``engine`` on ``task`` and write the run folder; returns the summary dict.

    ``engine``: any object with ``generate(prompts, samplers, max_new_tokens, *, chat, stop,
    trace, progress) -> list[GenerationResult]`` (see :mod:`resetfp4.engine.engine`).
    ``sampler``: the sampling configuration; its ``seed`` is replaced per sample.
    ``upto``: only generate for the first ``upto`` problems of ``task`` (the run stays the
    run of the whole task: same config and fingerprint, resumable later for the rest; its
    summary covers the problems finished so far and says ``complete: false``).
    """
    if upto is not None and upto < 0:
        raise ValueError(f"upto must be >= 0, got {upto}")
    out = prepare_run_dir(out_dir)
    config = build_config(engine, task, sampler, cfg, extra_config)
    _check_resume(out, config, overwrite)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    done = _read_done(out / PROBLEMS_FILE)
    _prune_tokens(out / TOKENS_FILE, done)
    head = task.problems if upto is None else task.problems[:upto]
    todo = [(p, k) for p in head if p.id not in done for k in range(cfg.samples)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="sample", desc=f"eval {task.name}", initial=0)
    pending: dict[str, list] = {}
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        seeds = [sample_seed(cfg.seed, p.id, k) for p, k in chunk]
        samplers = [dataclasses.replace(sampler, seed=s) for s in seeds]
        t0 = time.perf_counter()
        results = engine.generate(
            [build_prompt(p) for p, _ in chunk],
            samplers,
            cfg.max_new_tokens,
            chat=cfg.chat,
            stop=list(cfg.stop) or None,
            trace=cfg.trace,
            progress=False,
        )
        share = (time.perf_counter() - t0) / len(chunk)
        if len(results) != len(chunk):
            raise RuntimeError(f"engine returned {len(results)} results for {len(chunk)} prompts")
        for (p, k), seed, r in zip(chunk, seeds, results, strict=True):
            pending.setdefault(p.id, []).append((k, seed, r, share))
            if len(pending[p.id]) == cfg.samples:
                _flush(out, p, sorted(pending.pop(p.id), key=lambda t: t[0]), cfg.trace)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return write_summary(out, task, config)


def write_summary(out_dir: str | Path, task: Task, config: dict | None = None) -> dict:
    """(Re)write ``summary.json`` of a run folder from its finished problems; no generation.

    ``config``: the run's configuration (default: the folder's ``config.json``). Token
    statistics are added only once the run is complete (they read the whole dump), and not
    for a run resumed from a packed ``tokens.npz`` (use ``resetfp4 compare --analysis``).
    Use it after an interrupted ``run_eval`` so the folder's summary matches its problems.
    """
    out = Path(out_dir)
    if config is None:
        config = read_json_file(out / CONFIG_FILE, "run configuration")
    summary = summarize(_read_done(out / PROBLEMS_FILE), task, config)
    # A packed-and-resumed run keeps its earlier tokens only in tokens.npz (resetfp4.eval.pack):
    # token_stats reads tokens.jsonl alone, so it is left out rather than written partial
    # (resetfp4.eval.analysis reads both files).
    packed = (out / TOKENS_NPZ).exists()
    if config.get("trace") and summary["complete"] and (out / TOKENS_FILE).exists() and not packed:
        from resetfp4.eval.calibrate import token_stats  # local: calibrate imports this module

        sp = config.get("sampler", {})
        summary["token_stats"] = token_stats(
            out / TOKENS_FILE, sp.get("t_low") if sp.get("mode") == "reset" else None
        )
    # strict JSON: a one-problem run has no CI (NaN in Python), written as null
    (out / SUMMARY_FILE).write_text(json.dumps(finite_or_null(summary), indent=2) + "\n")
    return summary


def _flush(out: Path, problem: Problem, items: list, trace: bool) -> None:
    results = [r for _, _, r, _ in items]
    rec = _problem_record(problem, results, [s for _, s, _, _ in items], sum(t for *_, t in items))
    if trace:  # tokens first: a problem counts as done only once problems.jsonl has it
        with open(out / TOKENS_FILE, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in _token_records(rec, results)))
    with open(out / PROBLEMS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def _same_answer(a: str, b: str, mcq: bool) -> bool:
    """Whether two extracted answers are the same vote: equal letters (MCQ), else equivalent by the
    grader (``\\frac{1}{2}`` and ``0.5``); one the grader cannot compare is a vote of its own."""
    if mcq:
        return a == b
    try:
        return is_equiv(a, b)
    except GRADING_ERRORS:
        return False


def _majority_correct(rec: dict) -> bool:
    """maj@K of one problem: whether the answer most samples agree on is right.

    Answers are grouped in equivalence classes, each answer joining the first class whose
    representative (its first answer) it is equivalent to; samples without an answer (``None``
    or empty) vote for nothing. The largest class wins; a tie goes to the class whose first answer
    came first (lowest sample index). The class is graded as its representative was graded.
    """
    mcq = rec.get("kind") == "mcq"
    reps: list[int] = []  # sample index of each class's first answer
    sizes: list[int] = []
    for i, a in enumerate(rec["answers"]):
        if a is None or not normalize_answer(a):
            continue
        for c, r in enumerate(reps):
            if _same_answer(a, rec["answers"][r], mcq):
                sizes[c] += 1
                break
        else:
            reps.append(i)
            sizes.append(1)
    if not reps:
        return False
    best = max(range(len(reps)), key=lambda c: (sizes[c], -c))
    return bool(rec["correct"][reps[best]])


def summarize(done: dict[str, dict], task: Task, config: dict) -> dict:
    """Summary statistics of the finished problems of a run (see module doc)."""
    recs = [done[p.id] for p in task.problems if p.id in done]
    if not recs:
        raise RuntimeError("no finished problems to summarise")
    lengths = [n for r in recs for n in r["lengths"]]
    finishes = [f for r in recs for f in r["finish_reasons"]]
    wall = sum(r["wall_s"] for r in recs)
    return {
        "task": task.name,
        "model": config.get("model"),
        "precision": config.get("precision"),
        "sampler": config.get("sampler", {}).get("mode"),
        "complete": len(recs) == len(task.problems),
        "n_problems": len(recs),
        "samples_per_problem": config.get("samples"),
        "accuracy": accuracy_ci([r["correct"] for r in recs]),
        "pass_at_k": sum(any(r["correct"]) for r in recs) / len(recs),
        "maj_at_k": sum(_majority_correct(r) for r in recs) / len(recs),
        "avg_length_tokens": sum(lengths) / len(lengths),
        "max_length_tokens": max(lengths),
        "truncation_rate": finishes.count("length") / len(finishes),
        "no_answer_rate": sum(a is None for r in recs for a in r["answers"]) / len(lengths),
        "generated_tokens": sum(lengths),
        "gen_seconds": wall,
        "tokens_per_s": sum(lengths) / wall if wall > 0 else None,
        "config": config,
    }
