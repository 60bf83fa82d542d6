"""Benchmark arguments that would measure nothing or divide by zero are refused up front."""

from __future__ import annotations

import pytest

from resetfp4.cli.main import main

DECODE = ["bench", "decode", "--arch", "smollm2-135m", "--random-weights", "--device", "cpu",
          "--batch", "1", "--precisions", "bf16"]
SAMPLER = ["bench", "sampler", "--device", "cpu", "--batch", "1", "--vocab", "64", "--iters", "1",
           "--repeats", "1"]


@pytest.mark.parametrize(
    ("extra", "want"),
    [
        (["--layers", "0"], "--layers must be >= 1"),
        (["--layers", "-1"], "--layers must be >= 1"),
        (["--gen-len", "0"], "--gen-len must be >= 2"),
        (["--gen-len", "1"], "--gen-len must be >= 2"),
        (["--prompt-len", "0"], "--prompt-len must be >= 1"),
    ],
)
def test_bench_decode_bad_sizes(tmp_path, capsys, extra, want):
    out = tmp_path / "d.json"
    argv = [*DECODE, "--layers", "1", "--prompt-len", "4", "--gen-len", "3", *extra, "--json", str(out)]
    assert main(argv) == 2
    assert want in capsys.readouterr().err
    assert not out.exists()


def test_bench_decode_layers_need_random_weights(capsys):
    assert main(["bench", "decode", "--model", "smollm2-135m-instruct", "--layers", "2"]) == 2
    assert "--layers applies to --random-weights only" in capsys.readouterr().err


def test_bench_decode_cpu_notice():
    import argparse

    from resetfp4.bench.decode import cpu_notice

    note = cpu_notice(argparse.Namespace(model=None, arch="qwen3-8b"), 36)
    assert "qwen3-8b, 36 layers" in note and "many minutes" in note and "CUDA GPU" in note


@pytest.mark.parametrize(
    ("extra", "want"),
    [
        (["--iters", "0"], "--iters must be >= 1, got 0"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--batch", "0", "2"], "--batch sizes must be >= 1, got [0]"),
        (["--decode-step-ms", "0"], "--decode-step-ms values must be finite and > 0"),
    ],
)
def test_bench_sampler_bad_counts(tmp_path, capsys, extra, want):
    assert main([*SAMPLER, *extra, "--json", str(tmp_path / "s.json")]) == 2
    assert want in capsys.readouterr().err


def test_bench_sampler_decode_json_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main([*SAMPLER, "--decode-json", str(bad), "--json", str(tmp_path / "s.json")]) == 2
    assert f"--decode-json {bad} is not valid JSON" in capsys.readouterr().err
    missing = tmp_path / "missing.json"
    assert main([*SAMPLER, "--decode-json", str(missing), "--json", str(tmp_path / "s.json")]) == 2
    assert f"cannot use {missing}: No such file or directory" in capsys.readouterr().err


def test_bench_json_path_is_checked_before_the_run(tmp_path, capsys):
    assert main([*SAMPLER, "--json", str(tmp_path)]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err
    assert main([*SAMPLER, "--json", str(tmp_path / "no" / "s.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
