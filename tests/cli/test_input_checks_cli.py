"""The CLI turns file-system errors into one clear line, and checks output paths up front."""

from __future__ import annotations

import errno

import pytest

from resetfp4.cli.main import check_output_file, error_message, main


def test_os_errors_name_the_path_and_the_problem():
    msg = error_message(FileExistsError(errno.EEXIST, "File exists", "/x/empty.txt"))
    assert msg.startswith("cannot use /x/empty.txt: File exists; ") and "another path" in msg
    msg = error_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/f.txt/sub"))
    assert "/x/f.txt/sub" in msg and "is a file, not a folder" in msg
    assert error_message(FileNotFoundError("plain message")) == "plain message"
    assert error_message(ValueError("v")) == "v"


def test_check_output_file(tmp_path):
    check_output_file(None, "--json")
    check_output_file(tmp_path / "a.json", "--json")
    with pytest.raises(ValueError, match="--json is empty"):
        check_output_file("", "--json")
    with pytest.raises(ValueError, match="--markdown .* is a folder; give a file path"):
        check_output_file(tmp_path, "--markdown")
    with pytest.raises(ValueError, match="its folder .*/no does not exist"):
        check_output_file(tmp_path / "no" / "a.json", "--json")
    check_output_file(tmp_path / "no" / "a.json", "--json", parents_ok=True)
    f = tmp_path / "f.txt"
    f.write_text("")
    with pytest.raises(ValueError, match="f.txt is a file, not a folder"):
        check_output_file(f / "a.json", "--json", parents_ok=True)


def test_demo_format_missing_and_folder_gguf(tmp_path, capsys):
    assert main(["demo-format", "--gguf", str(tmp_path / "nosuch.gguf")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "corrupt" not in err
    assert main(["demo-format", "--gguf", str(tmp_path)]) == 2
    assert "is a folder, not a readable GGUF file" in capsys.readouterr().err
    assert main(["demo-format", "--limit", "0"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err


def test_quantize_bad_out_is_refused_at_once(tmp_path, capsys):
    f = tmp_path / "empty.txt"
    f.write_text("")
    for out, want in (("", "--out is empty"), (str(f), "is an existing file"),
                      (str(f / "sub"), "is a file, not a folder")):
        assert main(["quantize", "--model", "no-such-model", "--out", out, "--device", "cpu"]) == 2
        assert want in capsys.readouterr().err
    assert f.read_text() == ""


def test_compare_checks_output_paths_and_run_folders(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--markdown", str(tmp_path)]) == 2
    assert "--markdown" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "/a does not exist" in err and "an eval run folder" in err
