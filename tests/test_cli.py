"""The bms-host command: every subcommand listed, options reach the benchmarks."""
import subprocess
import sys
from pathlib import Path

import pytest

BMS_HOST = str(Path(sys.executable).parent / "bms-host")
COMMANDS = ("synth", "fit", "simulate", "replay", "sim", "exec", "push", "record", "report",
            "demo", "bench")


def run(*args, timeout=300):
    return subprocess.run([BMS_HOST, *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_subcommand():
    r = run("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert "\n    %s " % c in r.stdout, c


def test_bench_passes_options_through():
    r = run("bench", "accuracy", "--no-peer", "--cases", "fastcharge_25C")
    assert r.returncode in (0, 1), r.stderr  # 1: a floor failed; the table still printed
    assert "fastcharge_25C" in r.stdout and "Floors" in r.stdout
    assert "random_25C" not in r.stdout


def test_every_command_that_reads_a_trace_offers_the_unit_check_override():
    for c in ("replay", "simulate", "sim"):
        r = run(c, "--help", timeout=60)
        assert r.returncode == 0 and "--allow-implausible" in r.stdout, c


def test_every_subcommand_prints_its_help(capsys):
    # in one process: argparse formats each option's help (a bad % in one raises)
    from bms_host import cli

    for c in cli.COMMANDS:
        with pytest.raises(SystemExit) as e:
            cli.main([c, "--help"])
        assert e.value.code == 0, c
        assert "usage: bms-host %s" % c in capsys.readouterr().out, c
