"""ReSET params-file paths that are not regular files (a directory, a broken link) are named for
what they are, with what to give instead; a missing file still says it does not exist. Both
`eval --params` and `generate --params` say so before any model loads."""

from __future__ import annotations

import os

import pytest

import resetfp4.engine.engine as engine_mod
from resetfp4.cli import evaluate as eval_cli
from resetfp4.cli.main import main
from resetfp4.eval.params import load_params, write_params
from resetfp4.sampling.config import ReSETParams

WANT = ("give the path of a params JSON file: the params.json that `resetfp4 calibrate` writes in its --out "
        "folder (or copies to --params-out)")


def test_directory_says_so_and_lists_its_json_files(tmp_path):
    d = tmp_path / "calib"
    d.mkdir()
    with pytest.raises(ValueError) as e:
        load_params(d)
    assert str(e.value) == f"params file {d} is a directory, not a file; {WANT}"
    for name in ("a.json", "b.json", "c.json", "d.json"):
        (d / name).write_text("{}")
    with pytest.raises(ValueError) as e:
        load_params(str(d))
    assert str(e.value) == (f"params file {d} is a directory, not a file (it holds a.json, b.json, c.json, "
                            f"...); {WANT}")


def test_calibrate_out_folder_points_at_its_params_json(tmp_path):
    d = tmp_path / "calib"
    write_params(d / "params.json", ReSETParams(t_low=0.3, tau0=0.5))
    with pytest.raises(ValueError) as e:
        load_params(d)
    assert str(e.value) == (f"params file {d} is a directory, not a file; give {d / 'params.json'}, the "
                            "params file in it (a `resetfp4 calibrate` --out folder?)")
    assert load_params(d / "params.json").t_low == 0.3  # the path it names is read


def test_missing_file_and_broken_link(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_params(tmp_path / "nope.json")
    assert str(e.value) == f"params file {tmp_path / 'nope.json'} does not exist; {WANT}"
    link = tmp_path / "link.json"
    os.symlink(tmp_path / "gone.json", link)
    with pytest.raises(ValueError) as e:
        load_params(link)
    assert str(e.value) == f"params file {link} is a broken symbolic link, not a file; {WANT}"
    with pytest.raises(ValueError) as e:  # a character device
        load_params("/dev/null")
    assert str(e.value) == f"params file /dev/null is a device, pipe or socket, not a file; {WANT}"


def _no_load(*a, **k):
    raise AssertionError("the model was loaded before the params file was checked")


def test_eval_and_generate_report_a_directory_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval_cli, "load_engine_from_args", _no_load)
    monkeypatch.setattr(engine_mod, "load_engine", _no_load)
    task = tmp_path / "t.jsonl"
    task.write_text('{"problem": "1+1?", "answer": "2"}\n')
    d = tmp_path / "calib"
    d.mkdir()
    want = f"params file {d} is a directory, not a file; {WANT}\n"
    assert main(["eval", "--task", str(task), "--out", str(tmp_path / "run"), "--sampler", "reset",
                 "--params", str(d)]) == 2
    err = capsys.readouterr().err
    assert err == f"resetfp4 eval: error: {want}", err
    gen = ["generate", "--device", "cpu", "--precision", "fp32", "--prompt", "x"]
    assert main([*gen, "--params", str(d)]) == 2
    err = capsys.readouterr().err
    assert err == f"resetfp4 generate: error: {want}", err
