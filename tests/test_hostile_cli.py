"""Every hostile command line of tests/hostile.py: one ``error:`` line, exit code 2, nothing written, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdcore.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile import BAD_INPUTS, RUN, RUNS, fill, prepare  # noqa: E402
from hostile import tree as _tree

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hostile_tmp(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    prepare(tmp)
    return tmp


@pytest.mark.parametrize("argv", [argv for _, argv in BAD_INPUTS], ids=[what for what, _ in BAD_INPUTS])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(argv, hostile_tmp, capsys, monkeypatch):
    monkeypatch.chdir(hostile_tmp)  # a default ./runs would land here, and show in the tree
    before = _tree(hostile_tmp)
    code = main(fill(argv, hostile_tmp))
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err[:500]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0] != "error: ", err[:500]
    assert "Traceback" not in err and len(err) <= 2100
    assert _tree(hostile_tmp) == before  # nothing written (the run RUN still whole, no run folder, no cache)


def test_catalogue_descriptions_are_unique():
    whats = [what for what, _ in BAD_INPUTS]
    assert len(whats) == len(set(whats))


def test_the_prepared_run_is_analyzable_so_analyze_options_are_what_is_refused(hostile_tmp, capsys):
    """A control: the prepared run is found and its finished round read, so the analyze entries above are
    refused for their options, not for a missing run."""
    main(["analyze", RUN, "--calibration", "--top-k", "0", "--runs-dir", str(hostile_tmp / RUNS)])
    assert "top_k" in capsys.readouterr().err
    main(["analyze", RUN, "--rounds", "3", "--runs-dir", str(hostile_tmp / RUNS)])
    assert "not a finished round of the run (finished: 0)" in capsys.readouterr().err


def test_as_a_process_no_traceback(hostile_tmp):
    """One entry through ``python -m sdcore`` (a process spends seconds importing torch): the process's own
    exit code and stderr, nothing written."""
    before = _tree(hostile_tmp)
    p = subprocess.run([sys.executable, "-m", "sdcore", *fill(dict(BAD_INPUTS)["--config nested 100000 deep"],
                                                              hostile_tmp)],
                       capture_output=True, text=True, cwd=hostile_tmp, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("error: config file ") and p.stdout == ""
    assert _tree(hostile_tmp) == before


def test_help_is_still_full_and_exit_0(capsys):
    assert main(["analyze", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--top-k" in out and "--calibration" in out and len(out.splitlines()) > 10


def test_argparse_errors_point_at_the_subcommand_help(capsys):
    assert main(["analyze", "x", "--top-k", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --top-k: invalid int value: 'abc'")
    assert err.rstrip().endswith("(see python -m sdcore analyze --help)")
