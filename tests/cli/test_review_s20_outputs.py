"""Output paths and interrupts (session 20 review): an unwritable output is refused before the
slow work, checkpoints are readable by others, Ctrl-C is one line, and a full-size random model
is not started on the CPU by accident."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest
import torch

from resetfp4.cli import main as cli_main
from resetfp4.cli.main import check_output_file, main

# /proc takes no new files, whoever runs the tests (root passes permission bits)
UNWRITABLE = "/proc/resetfp4-no-such-dir"
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")


def test_output_file_in_an_unwritable_folder_is_refused_up_front():
    with pytest.raises(ValueError, match=r"--json /proc/r\.json: cannot write in /proc"):
        check_output_file("/proc/r.json", "--json")


def test_bench_json_unwritable_fails_before_the_benchmark(capsys):
    rc = main(["bench", "sampler", "--device", "cpu", "--batch", "1", "--vocab", "64", "--iters", "1",
               "--repeats", "1", "--json", "/proc/s.json"])
    captured = capsys.readouterr()
    assert rc == 2 and "cannot write in /proc" in captured.err and "batch" not in captured.out


def test_quantize_out_unwritable_is_refused_before_quantizing():
    from resetfp4.engine.quantize import check_out_dir

    with pytest.raises(ValueError, match=f"--out {UNWRITABLE}/ck: cannot write in /proc"):
        check_out_dir(f"{UNWRITABLE}/ck")


def test_shards_get_the_umask_mode_and_save_errors_name_the_file(tmp_path):
    from resetfp4.format import checkpoint as ck

    old = os.umask(0o022)
    try:
        ck._save_shard({"a": torch.zeros(2)}, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644  # safetensors: 0600
    with pytest.raises(OSError, match=f"cannot write {UNWRITABLE}/m.safetensors"):
        ck._save_shard({"a": torch.zeros(2)}, Path(UNWRITABLE) / "m.safetensors")


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=interrupted, command="eval")
    monkeypatch.setattr(cli_main, "build_parser", lambda argv: parser)
    assert main([]) == 130
    want = "resetfp4 eval: interrupted; run the same command again to resume"
    assert capsys.readouterr().err.strip() == want
    parser.set_defaults(command="generate")
    assert main([]) == 130
    assert capsys.readouterr().err.strip() == "resetfp4 generate: interrupted"


def test_full_size_random_model_on_cpu_needs_a_flag(tmp_path, capsys):
    out = tmp_path / "d.json"
    rc = main(["bench", "decode", "--arch", "qwen3-8b", "--random-weights", "--device", "cpu",
               "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "16.4 GB in bf16" in err and "--allow-slow-cpu" in err
    assert not out.exists()
