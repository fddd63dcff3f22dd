"""The CLI as a user runs it: its exit code, stdout and stderr. `sdcore` runs a real process (each spends ~2 s
importing torch): kept for what only a process shows (``python -m sdcore`` itself, Ctrl-C, a config file read
from another process's write); `cli_run` calls the same ``main`` in this process, for the rest."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import in_process

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "epochs=2", "--set", "rounds=1", "--set", "data.subset=200", "--set", "model.width=0.5"]


def sdcore(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sdcore", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def cli_run(*args) -> subprocess.CompletedProcess:
    """``python -m sdcore ARGS`` in this process: ``cli.main``'s exit code and what it printed."""
    code, out, err = in_process(*args)
    return subprocess.CompletedProcess(["sdcore", *args], code, out, err)


def test_train_prints_teacher_vs_student_table_and_runs_lists_it(tmp_path):
    p = cli_run("train", "--preset", "demo", *TINY, "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("run ") and "demo" in lines[0]
    assert any(l.split()[:2] == ["0", "teacher"] for l in lines)
    student = next(l for l in lines if l.split()[:3] == ["1", "student", "1"])
    assert "↑" in student or "↓" in student or "=" in student
    assert "round 1/1 epoch 2/2" in p.stderr  # non-tty progress: one line per epoch
    r = cli_run("runs", "--runs-dir", str(tmp_path))
    assert r.returncode == 0 and "done" in r.stdout and "demo" in r.stdout


def test_train_all_three_terms_prints_every_exit(tmp_path):
    p = cli_run("train", "--preset", "demo-pskd-byot-dmfl", "--set", "epochs=2", "--set", "data.subset=200",
               "--set", "model.width=0.5", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for name in ("exit 1", "exit 2", "exit 3 (deepest)", "ensemble"):
        row = next(l for l in lines if l.startswith(name))
        assert 0 <= float(row.split()[-1]) <= 100


def test_a_method_override_brings_its_exits_and_bad_combinations_are_one_line(tmp_path):
    p = cli_run("train", "--preset", "demo", "--set", "method=byot+pskd", "--set", "epochs=1", "--set",
               "data.subset=200", "--set", "model.width=0.5", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert any(l.startswith("exit 3 (deepest)") for l in p.stdout.splitlines())
    bad = cli_run("train", "--preset", "demo", "--set", "method=kd+byot", "--runs-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "kd combines with no other term" in bad.stderr and not (tmp_path / "bad").exists()


def test_train_dml_prints_every_peer(tmp_path):
    p = cli_run("train", "--preset", "demo-dml", "--set", "epochs=2", "--set", "data.subset=200",
               "--set", "model.width=0.5", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(l.startswith("peer 1 (reported)") for l in lines) and any(l.startswith("peer 2") for l in lines)
    assert any(l.startswith("ensemble of peers") for l in lines)


@pytest.mark.parametrize("args,words", [
    (["train", "--set", "alpha=2"], "error: alpha must be in [0, 1]"),
    (["train", "--preset", "nope"], "error: unknown preset 'nope'"),
    (["train", "--set", "nope=1"], "error: unknown config key 'nope'"),
    (["train", "--set", "data.name=cifar10", "--set", "data.root=/nonexistent/x"], "/nonexistent/x"),
    (["train", "--config", "/nonexistent/c.json"], "does not exist"),
    (["train", "--preset", "demo", "--config", "x.json"], "not both"),
    (["train", "--set", "device=cuda"] if not torch.cuda.is_available() else ["train", "--set", "epochs=0"],
     "no CUDA GPU" if not torch.cuda.is_available() else "epochs"),
])
def test_bad_input_is_one_line_and_exit_2(args, words, tmp_path):
    p = cli_run(*args, "--runs-dir", str(tmp_path))
    assert p.returncode == 2
    assert words in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_presets_lists_every_preset():
    from sdcore.config import PRESETS
    p = sdcore("presets")
    assert p.returncode == 0
    for name in PRESETS:
        assert name in p.stdout


@pytest.mark.slow
def test_config_file_round_trip(tmp_path):
    from sdcore.config import preset
    cfg = preset("demo").replace(epochs=1, rounds=0, **{"data.subset": 100, "model.width": 0.25})
    cfg.save(tmp_path / "c.json")
    p = sdcore("train", "--config", str(tmp_path / "c.json"), "--quiet", "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    assert p.stderr == "" and "teacher" in p.stdout


@pytest.mark.slow
def test_ctrl_c_leaves_a_cancelled_run_that_resume_finishes(tmp_path, held_sdcore):
    import json
    import signal
    args = [*held_sdcore(3), "train", "--quiet", "--runs-dir", str(tmp_path), "--set", "epochs=6",
            "--set", "rounds=1", "--set", "data.subset=300", "--set", "model.width=0.5"]
    # Ctrl-C in a terminal: SIGINT at its default (a background job or an xdist worker would pass it on ignored)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    held = proc.stdout.readline()  # mid-epoch 3, where it waits: it cannot finish before the Ctrl-C, however busy
    assert held == "held\n", proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    (folder,) = tmp_path.iterdir()
    assert f"python -m sdcore resume {folder.name}" in err and "Traceback" not in err
    assert json.loads((folder / "status.json").read_text())["status"] == "cancelled"
    listing = cli_run("runs", "--runs-dir", str(tmp_path))
    assert "cancelled" in listing.stdout
    done = cli_run("resume", folder.name, "--quiet", "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "student 1" in done.stdout
    again = cli_run("resume", folder.name, "--runs-dir", str(tmp_path))
    assert again.returncode == 2 and "it is done" in again.stderr


def test_rename_and_rm(tmp_path):
    p = cli_run("train", "--quiet", "--set", "epochs=1", "--set", "rounds=0", "--set", "data.subset=100",
               "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    (folder,) = tmp_path.iterdir()
    r = cli_run("rename", folder.name, "my run", "--runs-dir", str(tmp_path))
    assert r.returncode == 0
    (renamed,) = tmp_path.iterdir()
    assert renamed.name.endswith("-my-run")
    assert cli_run("rm", "nope", "--runs-dir", str(tmp_path)).returncode == 2
    assert cli_run("rm", renamed.name, "--runs-dir", str(tmp_path)).returncode == 0
    assert not any(tmp_path.iterdir())


def test_train_profile_writes_a_trace_and_an_operator_table_per_round(tmp_path):
    import json

    p = cli_run("train", "--preset", "demo", "--set", "epochs=1", "--set", "rounds=1", "--set", "data.subset=1000",
               "--profile", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    (run,) = [d for d in tmp_path.iterdir() if not d.name.startswith(".")]
    for k in (0, 1):
        assert f"profile of round {k} (10 steps)" in p.stderr
        events = json.loads((run / "profile" / f"round{k}.trace.json").read_text())["traceEvents"]
        names = {e.get("name", "") for e in events}
        steps = [n for n in names if n.startswith("Optimizer.step")]
        assert steps and any(n.startswith("aten::convolution") for n in names)
        assert sum(e.get("name", "").startswith("Optimizer.step") and e.get("ph") == "X" for e in events) == 10
        ops = (run / "profile" / f"round{k}.ops.txt").read_text()
        assert ops.startswith(f"10 training steps of round {k}") and "aten::" in ops
    kl = json.loads((run / "profile" / "round1.trace.json").read_text())["traceEvents"]
    assert any("kl_div" in e.get("name", "") or "log_softmax" in e.get("name", "") for e in kl)  # the KD loss
    assert p.stdout.startswith("run ")
