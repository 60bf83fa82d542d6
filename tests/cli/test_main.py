"""The CLI entry point and the format demo on the real embedded model."""

from __future__ import annotations

import subprocess
import sys

from resetfp4.cli.main import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "bench" in out and "demo-format" in out


def test_console_script_version():
    r = subprocess.run([sys.executable, "-m", "resetfp4.cli.main", "--version"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.startswith("resetfp4 ")


def test_demo_format_on_real_weights(capsys):
    assert main(["demo-format", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [ln.split() for ln in lines[2:]]
    assert len(rows) == 2
    for row in rows:
        sqnr, bytes_per_w = float(row[-2]), float(row[-1])
        assert sqnr > 17.0  # NVFP4 on real weights: ~20 dB (see testing/tolerances.py)
        assert bytes_per_w == 0.5625  # 4-bit code + one 1-byte scale per 16 weights


def test_missing_or_corrupt_gguf_is_a_clear_error(capsys, tmp_path):
    for f in (tmp_path / "none.gguf", tmp_path / "bad.gguf"):
        if f.name == "bad.gguf":
            f.write_bytes(b"not a gguf file at all")
        assert main(["demo-format", "--gguf", str(f)]) == 2
        err = capsys.readouterr().err
        assert f.name in err and "not a readable GGUF file" in err, err


def test_top_level_help_imports_no_command_module():
    # `resetfp4 --help` used to import every command (torch with the bench modules): ~3 s
    import subprocess
    import sys

    code = ("import sys; from resetfp4.cli.main import build_parser; build_parser(['--help']); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('resetfp4.cli.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "['resetfp4.cli.main']"
