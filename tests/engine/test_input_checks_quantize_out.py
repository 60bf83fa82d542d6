"""``quantize --out``: only a new or empty folder (or, with --overwrite, a checkpoint folder),
refused before any model is read."""

from __future__ import annotations

import pytest

from resetfp4.engine.quantize import check_out_dir, quantize_to_folder
from resetfp4.fileutil import make_folder
from resetfp4.format.checkpoint import CheckpointError


def test_out_dir_checks(tmp_path):
    check_out_dir(tmp_path / "new")  # a new folder (not made yet)
    check_out_dir(tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    with pytest.raises(ValueError, match="--out is empty"):
        check_out_dir("")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="file.txt is an existing file, not a folder; choose a new or empty"):
        check_out_dir(f)
    with pytest.raises(ValueError, match="cannot be created: .*file.txt is a file, not a folder"):
        check_out_dir(f / "sub" / "q")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "config.json").write_text("{}")
    (busy / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # --overwrite replaces checkpoints, not other files
        with pytest.raises(ValueError, match=r"is not empty .*'config\.json', 'notes\.txt'.*new or empty"):
            check_out_dir(busy, overwrite)
    (busy / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="already holds a checkpoint.*--overwrite"):
        check_out_dir(busy)
    check_out_dir(busy, overwrite=True)


def test_make_folder_failure_names_the_path(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"cannot create the --out folder .*file\.txt/q \(Not a directory\)"):
        make_folder(f / "q", "--out folder")


def test_quantize_refuses_a_busy_out_before_reading_the_model(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "config.json").write_text('{"keep": true}')
    # the model does not exist: the --out error proves the check runs first
    with pytest.raises(ValueError, match="is not empty"):
        quantize_to_folder(str(tmp_path / "no-model"), busy, device="cpu", progress=False)
    assert (busy / "config.json").read_text() == '{"keep": true}'
    with pytest.raises(ValueError, match="--out is empty"):
        quantize_to_folder(str(tmp_path / "no-model"), "", device="cpu", progress=False)


def test_quantize_into_the_model_folder_is_refused(tiny_folder):
    d = tiny_folder("llama")
    with pytest.raises(ValueError, match="is the model's own folder"):
        quantize_to_folder(str(d), d, device="cpu", progress=False, overwrite=True)
