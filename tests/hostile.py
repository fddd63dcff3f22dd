"""A catalogue of hostile command lines: each must be refused with one ``error:`` line on stderr and exit
code 2, before anything is written and without a traceback (STYLE.md rule 11).

``BAD_INPUTS``: (what it tries, argv for ``sdcore.cli.main``). An argv may hold two placeholders, filled by
``fill``: ``{tmp}`` is a folder that ``prepare`` filled with hostile files, ``{runs}`` its runs folder
``{tmp}/runs``, which holds one finished run, ``RUN`` (so the analyze, resume, rm and rename entries reach
their own checks, not "no run"). Importable with the standard library and sdcore only (a benchmark counts
the refusals); ``tests/test_hostile_cli.py`` runs it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from sdcore.config import preset

RUN = "20240101-000000-hostile"  # the finished run prepare() puts in {runs} (round 0, untrained weights)
RUNS = "runs"  # {runs} = {tmp}/runs

_DIGITS_5000 = "9" * 5000  # past Python's 4300-digit limit for int(str)
_HUGE_NAME = "x" * 10_000_000  # 10 MB
_TWO_TO_70 = str(2**70)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time: any write shows."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


def _train(*args: str) -> list[str]:
    return ["train", *args, "--runs-dir", "{runs}"]


def _set(*overrides: str) -> list[str]:
    return _train(*(a for o in overrides for a in ("--set", o)))


def _analyze(*args: str) -> list[str]:
    return ["analyze", RUN, *args, "--runs-dir", "{runs}"]


def _sweep(*args: str) -> list[str]:
    return ["sweep", *args, "--runs-dir", "{runs}"]


def _grid_200(key: str, value: Callable[[int], float] = int) -> list[str]:
    """--grid key=<200 distinct values>."""
    return ["--grid", f"{key}=" + ",".join(f"{value(i):g}" for i in range(200))]


BAD_INPUTS: list[tuple[str, list[str]]] = [
    # ---- --set: types are checked before any comparison
    ("val_fraction not a number, select best_val", _train("--preset", "demo-clean", "--set", "data.val_fraction=abc")),
    ("val_fraction null, select best_val", _train("--preset", "demo-clean", "--set", "data.val_fraction=null")),
    ("val_fraction a bool", _set("data.val_fraction=true")),
    ("seed of 5000 digits", _set(f"seed={_DIGITS_5000}")),
    ("seed 2**70", _set(f"seed={_TWO_TO_70}")),
    ("seed negative", _set("seed=-1")),
    ("seed a float", _set("seed=1.5")),
    ("seed a bool", _set("seed=true")),
    ("epochs of 4000 digits", _set("epochs=" + "9" * 4000)),
    ("threads 10**20", _set("threads=100000000000000000000")),
    ("subset 10**20", _set("data.subset=100000000000000000000")),
    ("alpha NaN", _set("alpha=NaN")),
    ("alpha Infinity", _set("alpha=Infinity")),
    ("alpha 1e999 (inf)", _set("alpha=1e999")),
    ("alpha a bool", _set("alpha=true")),
    ("alpha a list", _set("alpha=[0.5]")),
    ("alpha an object", _set('alpha={"a": 1}')),
    ("lr a huge int", _set("lr=" + "9" * 400)),
    ("lr -0", _set("lr=-0.0")),
    ("temperature 1e-300", _set("temperature=1e-300")),
    ("temperature 0", _set("temperature=0")),
    ("temperature 1000", _set("temperature=1000")),
    ("dmfl_temperature 1e-300", _set("dmfl_temperature=1e-300")),
    ("hint_weight 1e300", _set("hint_weight=1e300")),
    ("rounds 1.5", _set("rounds=1.5")),
    ("rounds 99999999999999999999", _set("rounds=99999999999999999999")),
    ("step_milestones a number", _set("optim.step_milestones=5")),
    ("step_milestones nested", _set("optim.step_milestones=[[0.5]]")),
    ("step_milestones nested 2000 deep", _set("optim.step_milestones=" + "[" * 2000 + "]" * 2000)),
    ("method a number", _set("method=5")),
    ("method empty", _set("method=")),
    ("method a lone +", _set("method=+")),
    ("method repeated", _set("method=kd+kd")),
    ("arch a list", _set("model.arch=[1]")),
    ("dataset an object", _set("data.name={}")),
    ("select a list", _set("select=[]")),
    ("device tpu", _set("device=tpu")),
    ("device cuda:abc", _set("device=cuda:abc")),
    ("device empty", _set("device=")),
    ("data.root empty", _set("data.root=")),
    ("data.root with NUL", _set("data.root=a\x00b")),
    ("data.root with a 4000-character name", _set("data.name=cifar10", "data.root=" + "x" * 4000)),
    ("name of 10 MB", _set(f"name={_HUGE_NAME}")),
    ("name of 65 characters", _set("name=" + "n" * 65)),
    ("name with NUL", _set("name=a\x00b")),
    ("name with a newline (JSON escape)", _set('name="a\\nb"')),
    ("name blank", _set("name=   ")),
    ("name empty", _set("name=")),
    ("name a surrogate (undecodable argv byte)", _set("name=a\udcffb")),
    ("--set without =", _set("alpha")),
    ("--set empty", _set("")),
    ("--set empty key", _set("=1")),
    ("--set unknown key", _set("nope=1")),
    ("--set a sub-config as a whole", _set("data={}")),
    ("--set into a number's fields", _set("model.width.x=1")),
    ("--set into a string's fields", _set("data.name.x=1")),
    ("--set a 10 MB key", _set(f"{_HUGE_NAME}=1")),
    ("--set a key with NUL", _set("al\x00pha=1")),
    ("bad combination", _set("method=kd+byot")),
    # ---- --preset / --config
    ("--preset empty", _train("--preset", "")),
    ("--preset blank", _train("--preset", "  ")),
    ("--preset unknown", _train("--preset", "nope")),
    ("--preset and --config", _train("--preset", "demo", "--config", "{tmp}/ok.json")),
    ("--config empty", _train("--config", "")),
    ("--config a folder", _train("--config", "{tmp}/folder")),
    ("--config missing", _train("--config", "{tmp}/missing.json")),
    ("--config under a file", _train("--config", "{tmp}/afile/c.json")),
    ("--config not UTF-8", _train("--config", "{tmp}/latin1.json")),
    ("--config nested 100000 deep", _train("--config", "{tmp}/deep.json")),
    ("--config a value nested 500 deep", _train("--config", "{tmp}/deep_value.json")),
    ("--config a JSON array", _train("--config", "{tmp}/array.json")),
    ("--config a JSON string", _train("--config", "{tmp}/string.json")),
    ("--config empty file", _train("--config", "{tmp}/empty.json")),
    ("--config not JSON", _train("--config", "{tmp}/notjson.json")),
    ("--config a number of 5000 digits", _train("--config", "{tmp}/bigint.json")),
    ("--config of 3 GB (sparse)", _train("--config", "{tmp}/huge.json")),
    ("--config unknown field", _train("--config", "{tmp}/unknown.json")),
    ("--config a sub-config not an object", _train("--config", "{tmp}/data5.json")),
    ("--config a wrong type", _train("--config", "{tmp}/wrongtype.json")),
    ("--config /proc/self/mem", _train("--config", "/proc/self/mem")),
    ("--config /dev/zero", _train("--config", "/dev/zero")),
    ("--config a FIFO", _train("--config", "{tmp}/fifo")),
    ("--config with NUL", _train("--config", "a\x00b.json")),
    # ---- --runs-dir, for every command that takes it
    ("train: runs dir a file", ["train", "--runs-dir", "{tmp}/afile"]),
    ("train: runs dir under a file", ["train", "--runs-dir", "{tmp}/afile/runs"]),
    ("train: runs dir under /proc", ["train", "--runs-dir", "/proc/x/runs"]),
    ("train: runs dir under /sys", ["train", "--runs-dir", "/sys/runs"]),
    ("train: runs dir /dev/null", ["train", "--runs-dir", "/dev/null"]),
    ("train: runs dir empty", ["train", "--runs-dir", ""]),
    ("train: runs dir with NUL", ["train", "--runs-dir", "a\x00b"]),
    ("train: runs dir name too long", ["train", "--runs-dir", "{tmp}/" + "r" * 300]),
    ("resume: runs dir a file", ["resume", "x", "--runs-dir", "{tmp}/afile"]),
    ("analyze: runs dir a file", ["analyze", "x", "--runs-dir", "{tmp}/afile"]),
    ("analyze: runs dir under /proc", ["analyze", "x", "--runs-dir", "/proc/x/runs"]),
    ("sweep: runs dir a file", ["sweep", "--grid", "seed=0,1", "--runs-dir", "{tmp}/afile"]),
    ("sweeps: runs dir a file", ["sweeps", "--runs-dir", "{tmp}/afile"]),
    ("sweeps: runs dir under /proc", ["sweeps", "--runs-dir", "/proc/x/runs"]),
    ("runs: runs dir a file", ["runs", "--runs-dir", "{tmp}/afile"]),
    ("runs: runs dir under a file", ["runs", "--runs-dir", "{tmp}/afile/runs"]),
    ("runs: runs dir under /proc", ["runs", "--runs-dir", "/proc/x/runs"]),
    ("runs: runs dir empty", ["runs", "--runs-dir", ""]),
    ("rm: runs dir a file", ["rm", "x", "--runs-dir", "{tmp}/afile"]),
    ("rename: runs dir a file", ["rename", "x", "y", "--runs-dir", "{tmp}/afile"]),
    # ---- analyze: every option checked before anything is computed or cached
    ("analyze --device tpu", _analyze("--device", "tpu")),
    ("analyze --device empty", _analyze("--device", "")),
    ("analyze --device cuda:x", _analyze("--device", "cuda:x")),
    ("analyze --seed 2**70", _analyze("--seed", _TWO_TO_70)),
    ("analyze --seed -1", _analyze("--seed", "-1")),
    ("analyze --seed of 5000 digits", _analyze("--seed", _DIGITS_5000)),
    ("analyze --top-k 0", _analyze("--top-k", "0")),
    ("analyze --top-k 10**6", _analyze("--top-k", "1000000")),
    ("analyze --top-k abc", _analyze("--top-k", "abc")),
    ("analyze --subset -5", _analyze("--subset", "-5")),
    ("analyze --steps 1", _analyze("--landscape", "1d", "--steps", "1")),
    ("analyze --trace-samples 0", _analyze("--trace-samples", "0")),
    ("analyze --trace-tol 0", _analyze("--trace-tol", "0")),
    ("analyze --trace-tol -1", _analyze("--trace-tol", "-1")),
    ("analyze --trace-tol nan", _analyze("--trace-tol", "nan")),
    ("analyze --trace-tol inf", _analyze("--trace-tol", "inf")),
    ("analyze --landscape 3d", _analyze("--landscape", "3d")),
    ("analyze --calibration --hessian --top-k 0 (writes nothing)",
     _analyze("--calibration", "--hessian", "--top-k", "0")),
    ("analyze --calibration --seed -1 (writes nothing)", _analyze("--calibration", "--seed", "-1")),
    ("analyze --calibration-convention nope", _analyze("--calibration", "--calibration-convention", "nope")),
    ("analyze --rounds 0,,x", _analyze("--rounds", "0,,x")),
    ("analyze --rounds 99999999999999999999", _analyze("--rounds", "99999999999999999999")),
    ("analyze --rounds of 5000 digits", _analyze("--rounds", _DIGITS_5000)),
    ("analyze --rounds -1", _analyze("--rounds", "-1")),
    ("analyze --rounds 3 (not finished)", _analyze("--rounds", "3")),
    ("analyze --rounds empty", _analyze("--rounds", "")),
    ("analyze an unknown run", ["analyze", "nope", "--runs-dir", "{runs}"]),
    ("analyze ../../etc", ["analyze", "../../etc", "--runs-dir", "{runs}"]),
    ("analyze an empty run id", ["analyze", "", "--runs-dir", "{runs}"]),
    # ---- run ids and names
    ("resume with NUL", ["resume", "a\x00b", "--runs-dir", "{runs}"]),
    ("resume empty", ["resume", "", "--runs-dir", "{runs}"]),
    ("resume ..", ["resume", "..", "--runs-dir", "{runs}"]),
    ("resume a finished run", ["resume", RUN, "--runs-dir", "{runs}"]),
    ("rm ../../etc", ["rm", "../../etc", "--runs-dir", "{runs}"]),
    ("rm empty", ["rm", "", "--runs-dir", "{runs}"]),
    ("rm a run and an unknown one (deletes neither)", ["rm", RUN, "nope", "--runs-dir", "{runs}"]),
    ("rm with a 10 MB id", ["rm", _HUGE_NAME, "--runs-dir", "{runs}"]),
    ("rename to empty", ["rename", RUN, "", "--runs-dir", "{runs}"]),
    ("rename to blank", ["rename", RUN, "   ", "--runs-dir", "{runs}"]),
    ("rename to 10 MB", ["rename", RUN, _HUGE_NAME, "--runs-dir", "{runs}"]),
    ("rename to a name with NUL", ["rename", RUN, "a\x00b", "--runs-dir", "{runs}"]),
    ("rename an unknown run", ["rename", "nope", "new", "--runs-dir", "{runs}"]),
    ("rename ../../etc", ["rename", "../../etc", "new", "--runs-dir", "{runs}"]),
    ("sweeps with a bad id", ["sweeps", "bad id", "--runs-dir", "{runs}"]),
    ("sweeps with an empty id", ["sweeps", "", "--runs-dir", "{runs}"]),
    ("sweeps ../..", ["sweeps", "../..", "--runs-dir", "{runs}"]),
    ("sweeps with NUL", ["sweeps", "a\x00b", "--runs-dir", "{runs}"]),
    # ---- sweep: the grid is refused before it is expanded
    ("sweep 4 keys x 200 values (1.6 billion trials)", _sweep(*_grid_200("alpha", lambda i: i / 400),
                                                              *_grid_200("seed"),
                                                             *_grid_200("lr", lambda i: (i + 1) / 10000),
                                                             *_grid_200("label_noise", lambda i: i / 400))),
    ("sweep 10**6 values of one key", _sweep("--grid", "seed=" + ",".join(map(str, range(10**6))))),
    ("sweep without --grid", _sweep()),
    ("sweep --grid without =", _sweep("--grid", "alpha")),
    ("sweep --grid without values", _sweep("--grid", "alpha=")),
    ("sweep --grid without a key", _sweep("--grid", "=0.1,0.2")),
    ("sweep --grid an empty value", _sweep("--grid", "alpha=0.1,,0.2")),
    ("sweep --grid unknown key", _sweep("--grid", "nope=1,2")),
    ("sweep --grid a key twice", _sweep("--grid", "alpha=0.1", "--grid", "alpha=0.2")),
    ("sweep --grid a repeated value", _sweep("--grid", "alpha=0.1,0.1")),
    ("sweep --grid a 10 MB value", _sweep("--grid", f"name={_HUGE_NAME}")),
    ("sweep --grid a value of 5000 digits", _sweep("--grid", f"seed=0,{_DIGITS_5000}")),
    ("sweep --grid an invalid trial", _sweep("--grid", "alpha=0.5,1.5")),
    ("sweep --preset empty", _sweep("--preset", "", "--grid", "seed=0,1")),
    ("sweep --config empty", _sweep("--config", "", "--grid", "seed=0,1")),
    ("sweep --resume empty", _sweep("--resume", "")),
    ("sweep --resume unknown", _sweep("--resume", "nope")),
    ("sweep --resume with a grid", _sweep("--resume", "nope", "--grid", "seed=0,1")),
    ("sweep --cpus-per-trial 0", _sweep("--grid", "seed=0,1", "--cpus-per-trial", "0")),
    ("sweep --cpus-per-trial nan", _sweep("--grid", "seed=0,1", "--cpus-per-trial", "nan")),
    # ---- argparse: one line, not the usage text
    ("no command", []),
    ("unknown command", ["nope"]),
    ("unknown option", ["train", "--bogus", "--runs-dir", "{runs}"]),
    ("option without its value", ["train", "--set"]),
    ("analyze without a run", ["analyze"]),
    ("rename without a name", ["rename", RUN]),
    ("argparse message with a newline", _analyze("--landscape", "a\nb")),
]


def fill(argv: list[str], tmp: Path) -> list[str]:
    """``argv`` with its placeholders replaced for a folder ``prepare(tmp)`` filled."""
    return [a.replace("{runs}", str(tmp / RUNS)).replace("{tmp}", str(tmp)) for a in argv]


def prepare(tmp: Path) -> None:
    """The files the catalogue points at, under ``tmp`` (which exists)."""
    (tmp / "folder").mkdir()
    (tmp / "afile").write_text("not a folder\n")
    (tmp / "ok.json").write_text(preset("demo").to_json())
    (tmp / "latin1.json").write_bytes('{"name": "café"}'.encode("latin-1"))
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "deep_value.json").write_text('{"name": ' + "[" * 500 + "]" * 500 + "}")
    (tmp / "array.json").write_text("[1, 2]")
    (tmp / "string.json").write_text('"demo"')
    (tmp / "empty.json").write_text("")
    (tmp / "notjson.json").write_text("{alpha: 0.5")
    (tmp / "bigint.json").write_text('{"seed": ' + _DIGITS_5000 + "}")
    with open(tmp / "huge.json", "wb") as f:  # sparse: no disk used, 3 GB to a reader
        f.truncate(3 * 2**30)
    (tmp / "unknown.json").write_text('{"nope": 1}')
    (tmp / "data5.json").write_text('{"data": 5}')
    (tmp / "wrongtype.json").write_text('{"select": "best_val", "data": {"val_fraction": "abc"}}')
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp / "fifo")
    else:
        (tmp / "fifo").mkdir()  # refused as a folder where FIFOs do not exist
    _finished_run(tmp / RUNS / RUN)


def _finished_run(path: Path) -> None:
    """A done run of the demo's CNN with round 0's (untrained) weights: a real run to every reader, so
    `analyze --calibration` on it would compute and cache, and `resume` finds it done. No training."""
    from sdcore.models import model_for_round  # late: torch, only when preparing
    from sdcore.runs import Run

    path.mkdir(parents=True)
    cfg = preset("demo").replace(name="hostile", rounds=0)
    run = Run(path)
    run.write_config(cfg)
    run.set_status("done", created="2024-01-01T00:00:00+0000", finished="2024-01-01T00:01:00+0000")
    run.save_model(0, model_for_round(cfg, 0, num_classes=10, in_channels=1, image_size=8).state_dict())
    (path / "metrics.jsonl").write_text(json.dumps({"round": 0, "epoch": 1, "train_loss": 2.3, "test_acc": 10.0})
                                        + "\n")
    run.write_summary({"method": cfg.method, "complete": True,
                       "rounds": [{"round": 0, "test_acc": 10.0, "best_epoch": 1}]})
