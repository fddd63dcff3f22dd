"""Damaged run folders: every way one file of a run folder can be broken, and what a user must see then.

Used by tests/test_damaged_runs.py (each damage against the CLI, a representative few against the
dashboard) and benchmarks/fault_injection.py (every damage against every surface, as a table).

    bases = build_bases(tmp)                 # a finished 2-round kd run and an interrupted one (checkpoint.pt)
    case = stage(bases, damage, case_dir)    # <case_dir>/runs/ holds the damaged copy and an intact run
    problems = check_listing(case, cli(["runs", "--runs-dir", str(case.runs)], watch=case.dir))

A *damage* is (name, file, fn): ``fn(run_path)`` breaks ``file`` of a copy of a run folder, and the
Damage says what a user should see: the run listed as ``unreadable: <file>: <reason>`` (or as readable
when the damage is harmless, e.g. a deleted analysis cache), ``analyze``/``resume`` refusing it with
one ``error:`` line and exit 2 (or working), never a traceback, never a hang, and never a side effect
outside the run folder: the malicious pickle's command never runs, a symlink's target outside the run
is never written, a dangling symlink's target is never created.

Symlinks point at a decoy ``<case_dir>/passwd`` rather than /etc/passwd: these tests run as root, and
a lock opened through such a link with O_CREAT and truncated would empty the real file.

Only stdlib + sdcore + torch (streamlit only inside ``check_pages``).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shlex
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"

# The smallest runs that still have every file: 8x8 digits, 100 training examples, a quarter-width CNN.
TINY = {"data.subset": 100, "model.width": 0.25}
FINISHED = {**TINY, "epochs": 1, "rounds": 1, "name": "finished"}  # teacher + 1 student, done
INTERRUPTED = {**TINY, "epochs": 2, "rounds": 1, "name": "interrupted"}  # stopped after round 1's first epoch
TRAIN = ["train", "--quiet", "--set", "epochs=1", "--set", "rounds=0", "--set", "data.subset=100",
         "--set", "model.width=0.25"]
# analyze at its smallest; the bases cache these settings with --seed 0, so a damage of analysis/ is read
# back (seed 0) while every other damage computes afresh (seed 1) and so loads the weights.
ANALYZE = ["--hessian", "--no-density", "--top-k", "1", "--trace-samples", "2", "--subset", "32"]
DAMAGED_ID = "29991231-235959-damaged"  # the newest id: pages pick it first
INTACT_ID = "20000101-000000-intact"
HUGE = 2 * 2**30  # a sparse file of 2 GiB (st_size; no disk used)
DECOY = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
FIFO_LIMIT_S = 8.0  # a reader blocked this long on a FIFO is a hang; the watchdog then unblocks it


# ---------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class Damage:
    name: str  # "status.json: non-UTF-8 bytes"
    file: str  # the damaged path inside the run, as messages name it
    fn: Callable[[Path], None] = field(repr=False)  # breaks it in a run folder (a copy)
    base: str = "finished"  # "finished" (done, 2 rounds) or "interrupted" (round 0 done, checkpoint.pt in round 1)
    listed: str = "unreadable"  # `runs` shows it "unreadable" (naming the file), "readable", or "either"
    analyze: tuple[int, ...] = (2,)  # allowed exit codes of `analyze` (2: one error line)
    resume: tuple[int, ...] = (2,)  # allowed exit codes of `resume`
    names: tuple[str, ...] = ()  # an "unreadable" reason names one of these (default: the file)
    resume_words: tuple[str, ...] = ()  # a refused resume's line contains these (case-insensitive)
    slow: bool = False  # reading it costs seconds (a 2 GiB text file): the slow tier

    @property
    def id(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.name.replace(": ", "-")).strip("-")

    @property
    def named(self) -> tuple[str, ...]:
        return self.names or (self.file.rstrip("/*").split("/*")[0],)


class Evil:
    """Unpickling this runs ``cmd`` (what a hostile model.pt does); a weights_only load must refuse it."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def marker(case: Path) -> Path:
    return case / "pwned"


def _targets(run: Path, file: str) -> list[Path]:
    if file.endswith("*.json"):  # analysis/*.json: every cached result
        return sorted((run / file).parent.glob("*.json"))
    return [run / file]


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def each(fn: Callable[[Path], None]) -> Callable[[str], Callable[[Path], None]]:
    """A per-file damage as a run-folder damage of ``file`` (of each file, for analysis/*.json)."""
    def for_file(file: str) -> Callable[[Path], None]:
        def damage_run(run: Path) -> None:
            for p in _targets(run, file):
                fn(p)
        return damage_run
    return for_file


@each
def deleted(p: Path) -> None:
    _remove(p)


@each
def empty(p: Path) -> None:
    p.write_bytes(b"")


@each
def truncated(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


@each
def non_utf8(p: Path) -> None:
    # the first quote gains two bytes that are not UTF-8: still JSON-shaped if decoded as latin-1
    data = p.read_bytes()
    p.write_bytes(data.replace(b'"', b'"\xff\xfe', 1) if b'"' in data else b"\xff\xfe" + data)


@each
def garbage(p: Path) -> None:
    p.write_bytes(random.Random(0).randbytes(4096))


@each
def deep(p: Path) -> None:
    p.write_bytes(b"[" * 100000)


@each
def directory(p: Path) -> None:
    _remove(p)
    p.mkdir()
    (p / "x").write_text("x")


@each
def symlink_outside(p: Path) -> None:
    _remove(p)
    os.symlink(_case_of(p) / "passwd", p)


@each
def symlink_missing(p: Path) -> None:
    _remove(p)
    os.symlink(_case_of(p) / "missing-target", p)


@each
def fifo(p: Path) -> None:
    _remove(p)
    os.mkfifo(p)


@each
def huge(p: Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(HUGE)


@each
def a_file(p: Path) -> None:
    _remove(p)
    p.write_text("a file where sdlab keeps a folder\n")


def _case_of(p: Path) -> Path:
    """The case folder above a path inside <case>/runs/<run>/..."""
    for parent in p.parents:
        if parent.name == "runs":
            return parent.parent
    raise ValueError(p)


def json_value(obj) -> Callable[[str], Callable[[Path], None]]:
    return each(lambda p: p.write_text(json.dumps(obj)))


def json_edit(change: Callable[[dict], object]) -> Callable[[str], Callable[[Path], None]]:
    """Valid JSON of the right shape with fields of the wrong type or range: ``change(obj)`` edits it in place."""
    def fn(p: Path) -> None:
        obj = json.loads(p.read_text())
        change(obj)
        p.write_text(json.dumps(obj))
    return each(fn)


def metrics_line(text: str) -> Callable[[str], Callable[[Path], None]]:
    """metrics.jsonl with ``text`` as its second line (valid JSON that is not an epoch record, or worse)."""
    def fn(p: Path) -> None:
        lines = p.read_text().splitlines()
        p.write_text("\n".join(lines[:1] + [text] + lines[1:]) + "\n")
    return each(fn)


def torch_value(make: Callable[[Path], object]) -> Callable[[str], Callable[[Path], None]]:
    def fn(p: Path) -> None:
        import torch
        torch.save(make(p), p, _use_new_zipfile_serialization=True)
    return each(fn)


def _evil(p: Path) -> dict:
    return {"w": Evil(f"touch {shlex.quote(str(marker(_case_of(p))))}")}


def other_arch() -> dict:
    """A state dict of another architecture (resnet8) for the same data: a valid file that fits no CNN."""
    import torch

    from sdcore.models import create
    torch.manual_seed(0)
    return create("resnet8", num_classes=10, in_channels=1, image_size=8, width=0.25).state_dict()


def _checkpoint_with(**changes) -> Callable[[Path], object]:
    def make(p: Path) -> dict:
        import torch
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        return {**ckpt, **{k: (v() if callable(v) else v) for k, v in changes.items()}}
    return make


def _set(path: Sequence[str], value) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return change


def _summary_round(**fields) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        obj["rounds"][-1].update(fields)
    return change


TEXT_KINDS = [("deleted", deleted), ("empty", empty), ("truncated (half)", truncated),
              ("non-UTF-8 bytes", non_utf8), ("nested 100000 deep", deep), ("a JSON list", json_value([1, 2, 3])),
              ("a JSON string", json_value("done")), ("JSON null", json_value(None)), ("a folder", directory),
              ("symlink to a file outside", symlink_outside), ("symlink to nothing", symlink_missing),
              ("a FIFO", fifo)]
TORCH_KINDS = [("deleted", deleted), ("empty", empty), ("truncated (half)", truncated), ("random bytes", garbage),
               ("JSON text", json_value({"w": [1, 2, 3]})), ("a folder", directory),
               ("symlink to a file outside", symlink_outside), ("symlink to nothing", symlink_missing),
               ("a FIFO", fifo), ("2 GiB sparse", huge)]
PICKLE_KINDS = [("a malicious pickle (os.system)", torch_value(_evil)), ("a torch list, not a state dict",
                                                                         torch_value(lambda p: [1, 2, 3]))]


SHARED = ("config.json", "status.json", "metrics.jsonl")  # damaged in both base runs


def _catalogue() -> list[Damage]:
    out: list[Damage] = []

    def add(file: str, kinds, **expect) -> None:
        # a file damaged in both bases: the interrupted run's case says so in its name
        where = " (interrupted run)" if expect.get("base") == "interrupted" and file in SHARED else ""
        for label, kind in kinds:
            out.append(Damage(f"{file}{where}: {label}", file, kind(file), **expect))

    # config.json: nothing about the run can be trusted without it
    add("config.json", TEXT_KINDS)
    # a field of the wrong type or value: the listing may show it (it reads name and method only), but
    # nothing may train or analyse it
    add("config.json", [("unknown method", json_edit(_set(["method"], "nope"))),
                        ("model is a list", json_edit(_set(["model"], [1])))], listed="either")
    add("config.json", [("epochs is a string", json_edit(_set(["epochs"], "x")))], listed="either", analyze=(0, 2))
    add("config.json", [("model.width edited (weights no longer fit)", json_edit(_set(["model", "width"], 0.5))),
                        ("model.arch edited (weights no longer fit)", json_edit(_set(["model", "arch"], "resnet8")))],
        listed="either", names=("config.json", "model.pt"))
    add("config.json", [("epochs is a string", json_edit(_set(["epochs"], "x")))], base="interrupted",
        listed="either", analyze=(0, 2))
    add("config.json", [("model.width edited (weights no longer fit)", json_edit(_set(["model", "width"], 0.5)))],
        base="interrupted", listed="either", names=("config.json", "model.pt", "checkpoint.pt"))
    # status.json: read by recover() on every listing, train and resume
    add("status.json", [k for k in TEXT_KINDS if k[0] != "deleted"])
    add("status.json", [("deleted", deleted)], listed="either", analyze=(0, 2), resume=(0, 2))
    add("status.json", [("status is a number", json_edit(_set(["status"], 5))),
                        ("unknown status", json_edit(_set(["status"], "bogus"))),
                        ("status is a list", json_edit(_set(["status"], ["done"])))])
    add("status.json", [("created is a number", json_edit(_set(["created"], 5))),
                        ("error is a list", json_edit(_set(["error"], ["x"])))], listed="either", analyze=(0, 2))
    add("status.json", [("2 GiB sparse", huge)], slow=True)
    add("status.json", [("non-UTF-8 bytes", non_utf8), ("nested 100000 deep", deep)], base="interrupted")
    # summary.json: the finished rounds
    add("summary.json", [k for k in TEXT_KINDS if k[0] != "deleted"])
    add("summary.json", [("deleted", deleted)], listed="either")
    add("summary.json", [("rounds is a string", json_edit(_set(["rounds"], "x"))),
                         ("rounds holds numbers", json_edit(_set(["rounds"], [1, 2]))),
                         ("round is -1", json_edit(_summary_round(round=-1))),
                         ("round is 10**30", json_edit(_summary_round(round=10**30))),
                         ("round is a path (../../passwd)", json_edit(_summary_round(round="../../passwd"))),
                         ("test_acc is a string", json_edit(_summary_round(test_acc="abc")))])
    # metrics.jsonl: per-epoch records (the Runs and Live pages plot them)
    kinds = [k for k in TEXT_KINDS if k[0] not in ("deleted", "empty", "nested 100000 deep", "a JSON list",
                                                   "a JSON string", "JSON null")]
    add("metrics.jsonl", kinds, analyze=(0, 2))
    add("metrics.jsonl", [("deleted", deleted), ("empty", empty)], listed="either", analyze=(0, 2))
    add("metrics.jsonl", [("a line that is a JSON list", metrics_line("[1, 2]")),
                          ("a line that is a number", metrics_line("5")),
                          ("a line that is a string", metrics_line('"epoch"')),
                          ("a line that is null", metrics_line("null")),
                          ("a line nested 100000 deep", metrics_line("[" * 100000)),
                          ("round is a string", metrics_line('{"round": "x", "epoch": 1, "test_acc": 5}'))],
        analyze=(0, 2))
    add("metrics.jsonl", [("2 GiB sparse", huge)], analyze=(0, 2), slow=True)
    add("metrics.jsonl", [("a line that is a JSON list", metrics_line("[1, 2]")),
                          ("round is a string", metrics_line('{"round": "x", "epoch": 1, "test_acc": 5}'))],
        base="interrupted", analyze=(0, 2))
    # lock: liveness; taken by resume
    add("lock", [("deleted", deleted), ("empty", empty), ("non-UTF-8 bytes", non_utf8)], base="interrupted",
        listed="readable", analyze=(0,), resume=(0,))
    add("lock", [("a folder", directory)], base="interrupted", listed="either", analyze=(0, 2),
        resume_words=("lock",))
    add("lock", [("symlink to a file outside", symlink_outside), ("symlink to nothing", symlink_missing),
                 ("a FIFO", fifo)], base="interrupted", listed="either", analyze=(0, 2), resume=(0, 2))
    # checkpoint.pt: the unfinished round's last epoch; damage must say so and offer --restart-round
    add("checkpoint.pt", [("deleted", deleted)], base="interrupted", listed="readable", analyze=(0,), resume=(0,))
    add("checkpoint.pt", [k for k in TORCH_KINDS if k[0] not in ("deleted",)] + PICKLE_KINDS
        + [("another architecture's weights", torch_value(_checkpoint_with(model=other_arch))),
           ("epoch is a string", torch_value(_checkpoint_with(epoch="x")))],
        base="interrupted", listed="either", analyze=(0, 2), resume_words=("checkpoint",))
    add("checkpoint.pt", [("round is 10**30", torch_value(_checkpoint_with(round=10**30))),
                          ("round is -1", torch_value(_checkpoint_with(round=-1)))],
        base="interrupted", listed="either", analyze=(0, 2), resume=(0, 2))
    # rounds/<k>/model.pt: the kept model of each round
    add("rounds/1/model.pt", TORCH_KINDS)
    add("rounds/1/model.pt", PICKLE_KINDS + [("another architecture's weights", torch_value(lambda p: other_arch()))],
        listed="either")
    add("rounds/0/model.pt", [("truncated (half)", truncated)], base="interrupted")
    add("rounds/0/model.pt", [("another architecture's weights", torch_value(lambda p: other_arch()))],
        base="interrupted", listed="either")
    add("rounds/1", [("deleted", deleted)], names=("rounds/1",))
    add("rounds", [("deleted", deleted), ("a file", a_file)])
    # analysis/: a cache; damage to it is harmless to the listing, and analyze recomputes or says why not
    add("analysis", [("deleted", deleted)], listed="readable", analyze=(0,))
    add("analysis", [("a file", a_file)], listed="readable", analyze=(0, 2))
    add("analysis/*.json", [k for k in TEXT_KINDS if k[0] not in ("deleted", "symlink to nothing")]
        + [("result is a number", json_edit(_set(["result"], 5))),
           ("values is a string", json_edit(lambda o: o["result"].update(values="abc", trace="abc")))],
        listed="readable", analyze=(0, 2))
    return out


DAMAGES: list[Damage] = _catalogue()
assert len({d.id for d in DAMAGES}) == len(DAMAGES), "damage ids must be unique"


def damage(name: str) -> Damage:
    return next(d for d in DAMAGES if d.name == name)


# ---------------------------------------------------------------- base runs and cases

@dataclass(frozen=True)
class Bases:
    finished: Path  # done: rounds 0 and 1, analysis/ cached (ANALYZE, seed 0)
    interrupted: Path  # round 0 done, checkpoint.pt after round 1's first epoch, status interrupted


def build_bases(root: Path, *, curvature: bool = False) -> Bases:
    """Train the two base runs once (seconds). ``curvature``: also cache λ_max and trace the way Live shows
    them (seconds more), so damage to analysis/ reaches Live's curvature section too."""
    from sdcore.analysis.runner import AnalysisSpec, analyze
    from sdcore.analysis.story import curvature_spec
    from sdcore.config import preset
    from sdcore.engine import Cancelled
    from sdcore.training import train

    finished, _ = train(preset("demo").replace(**FINISHED), runs_dir=root / "finished")
    analyze(finished, AnalysisSpec(rounds=(0, 1), density=False, top_k=1, trace_samples=2, subset=32))
    if curvature:
        analyze(finished, curvature_spec([0, 1]))
    seen = {"stop": False}

    def on_event(e) -> None:  # round 1's first epoch is saved in checkpoint.pt: stop before the second
        if e.kind == "epoch" and e.round == 1 and e.epoch == 1:
            seen["stop"] = True

    try:
        train(preset("demo").replace(**INTERRUPTED), runs_dir=root / "interrupted", on_event=on_event,
              should_stop=lambda: seen["stop"])
        raise AssertionError("the interrupted base run was not stopped")
    except Cancelled:
        pass
    (interrupted,) = [p for p in (root / "interrupted").iterdir() if p.is_dir() and not p.name.startswith(".")]
    status = json.loads((interrupted / "status.json").read_text())
    status.update(status="interrupted", error="the process running it stopped (killed, crashed or closed)")
    (interrupted / "status.json").write_text(json.dumps(status))
    assert (interrupted / "checkpoint.pt").exists() and (interrupted / "rounds" / "0" / "model.pt").exists()
    return Bases(finished.path, interrupted)


@dataclass(frozen=True)
class Case:
    dir: Path  # holds runs/, the decoy passwd and where a marker would appear
    runs: Path
    damage: Damage

    @property
    def damaged(self) -> Path:
        return self.runs / DAMAGED_ID


def stage(bases: Bases, dmg: Damage, where: Path) -> Case:
    """<where>/runs/ with the damaged copy of the damage's base run and an intact finished run."""
    runs = where / "runs"
    runs.mkdir(parents=True)
    (where / "passwd").write_text(DECOY)
    shutil.copytree(bases.finished if dmg.base == "finished" else bases.interrupted, runs / DAMAGED_ID, symlinks=True)
    shutil.copytree(bases.finished, runs / INTACT_ID, symlinks=True)
    dmg.fn(runs / DAMAGED_ID)
    return Case(where, runs, dmg)


# ---------------------------------------------------------------- running a surface

@dataclass
class Outcome:
    code: int | None  # None: an exception escaped main()
    out: str
    err: str
    seconds: float
    crash: str = ""  # the exception that escaped main(), one line
    blocked: list[str] = field(default_factory=list)  # FIFOs a reader waited on past FIFO_LIMIT_S


class FifoWatchdog:
    """Unblocks anything stuck opening or reading a FIFO under ``root`` for more than ``limit`` seconds (by
    opening and closing its write end: the reader sees end of file) and records which ones it had to free."""

    def __init__(self, root: Path, limit: float = FIFO_LIMIT_S):
        self.fifos = [p for p in root.rglob("*") if p.is_fifo()]
        self.limit, self.blocked = limit, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "FifoWatchdog":
        if self.fifos:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.fifos:
            self._thread.join()

    def _watch(self) -> None:
        if self._stop.wait(self.limit):
            return
        while not self._stop.wait(0.2):
            for p in self.fifos:
                try:
                    fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody is reading it
                    continue
                os.close(fd)
                if str(p) not in self.blocked:
                    self.blocked.append(str(p))


def cli(argv: Sequence[str], *, watch: Path) -> Outcome:
    """``python -m sdcore <argv>`` in this process (sdcore.cli.main), stdout and stderr captured."""
    from sdcore.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    code, crash = None, ""
    with FifoWatchdog(watch) as dog, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - this is what the harness exists to catch
            crash = f"{type(e).__name__}: {_first(str(e))}"
            traceback.print_exc(file=err)
    return Outcome(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0, crash, dog.blocked)


def _first(text: str, limit: int = 160) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _last_traceback_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    i = max(i for i, l in enumerate(lines) if l.startswith("Traceback"))
    tail = [l for l in lines[i:] if not l.startswith(" ")]
    return _first(tail[-1] if tail else lines[-1])


def _hard(o: Outcome) -> list[str]:
    """The failures no surface may show: an escaped exception, a traceback, a hang on a FIFO."""
    problems = []
    if o.crash:
        problems.append(f"raised {o.crash}")
    elif "Traceback" in o.err:
        problems.append(f"traceback: {_last_traceback_line(o.err)}")
    if o.blocked:
        problems.append(f"blocked > {FIFO_LIMIT_S:.0f} s reading a FIFO ({', '.join(Path(b).name for b in o.blocked)})")
    return problems


def side_effects(case: Case) -> list[str]:
    """Anything done outside the run folder: the pickle's command, writes through symlinks, created targets."""
    problems = []
    if marker(case.dir).exists():
        problems.append("ran the malicious pickle's command (marker file created)")
    decoy = case.dir / "passwd"
    if decoy.is_symlink() or not decoy.is_file() or decoy.read_text() != DECOY:
        problems.append("wrote through a symlink to a file outside the run folder")
    if (case.dir / "missing-target").exists():
        problems.append("created the target of a dangling symlink, outside the run folder")
    if not case.damaged.is_dir():
        problems.append("the damaged run folder was deleted")
    if not (case.runs / INTACT_ID / "config.json").is_file():
        problems.append("the intact run was changed")
    return problems


def _message_lines(err: str) -> list[str]:
    """stderr without progress lines (analyze prints '  computing …' as each stage starts)."""
    return [l for l in err.splitlines() if l.strip() and not l.startswith("  computing ")]


def check_listing(case: Case, o: Outcome) -> list[str]:
    """`runs`: exit 0, the intact run listed as done, the damaged one on one line, unreadable with its file
    named (or readable where the damage is harmless)."""
    problems = _hard(o)
    if o.code != 0:
        problems.append(f"exit {o.code}: {_first(o.err) or _first(o.out)}")
        return problems + side_effects(case)
    rows = {l.split()[0]: " ".join(l.split()) for l in o.out.splitlines() if l.strip()}
    intact = rows.get(INTACT_ID, "")
    if " done" not in intact:
        problems.append(f"intact run not listed as done: {intact or 'missing'!r}")
    row = rows.get(DAMAGED_ID)
    if row is None:
        problems.append("damaged run missing from the listing")
    else:
        problems += _shown_right(case.damage, "unreadable" in row, row, " ".join(row.split()[1:]))
    for run_id in (DAMAGED_ID, INTACT_ID):
        n = sum(l.startswith(run_id) for l in o.out.splitlines())
        if n > 1:
            problems.append(f"{run_id} takes {n} lines of the listing, not one")
    return problems + side_effects(case)


def check_refusal(case: Case, o: Outcome, allowed: tuple[int, ...], words: Sequence[str] = ()) -> list[str]:
    """analyze / resume: an allowed exit code; a refusal (2) is exactly one 'error:' line holding ``words``."""
    problems = _hard(o)
    lines = _message_lines(o.err)
    if o.code not in allowed and not o.crash:  # an escaped exception is already the symptom
        shown = next((l for l in lines if l.startswith("error:")), lines[-1] if lines else "")
        problems.append(f"exit {o.code} (expected {' or '.join(map(str, allowed))}): {_first(shown)}")
    elif o.code == 2:
        if len(lines) != 1 or not lines[0].startswith("error:"):
            problems.append(f"refusal is {len(lines)} lines, not one 'error:' line: {_first(' | '.join(lines))}")
        missing = [w for w in words if w.lower() not in o.err.lower()]
        if missing:
            problems.append(f"refusal does not mention {', '.join(missing)}: {_first(lines[0] if lines else '')}")
    return problems + side_effects(case)


def check_analyze(case: Case, o: Outcome) -> list[str]:
    return check_refusal(case, o, case.damage.analyze)


def analyze_argv(case: Case) -> list[str]:
    seed = "0" if case.damage.file.startswith("analysis") else "1"  # read the damaged cache / load the weights
    return ["analyze", DAMAGED_ID, *ANALYZE, "--seed", seed, "--runs-dir", str(case.runs)]


def resume_argv(case: Case) -> list[str]:
    return ["resume", DAMAGED_ID, "--quiet", "--runs-dir", str(case.runs)]


def check_resume(case: Case, o: Outcome) -> list[str]:
    """resume: a finished base refuses ("it is done"); an interrupted one resumes to done or refuses in one
    line (a damaged checkpoint naming it), and a refused resume leaves the run as it was, not failed."""
    d = case.damage
    allowed = (2,) if d.base == "finished" and 0 not in d.resume else d.resume
    problems = check_refusal(case, o, allowed, d.resume_words if o.code == 2 else ())
    status = _status(case.damaged)
    if o.code == 0 and status not in (None, "done"):
        problems.append(f"resume exited 0 but the run is {status}")
    if o.code == 2 and d.base == "interrupted" and status == "failed":
        problems.append("a refused resume marked the run failed")
    return problems


def _status(run: Path) -> str | None:
    """status.json's status, or None where it is damaged (a FIFO is not opened: that would block here)."""
    p = run / "status.json"
    try:
        return json.loads(p.read_text())["status"] if p.is_file() and p.stat().st_size < 2**20 else None
    except Exception:  # noqa: BLE001 - the damaged status.json itself
        return None


def train_argv(case: Case) -> list[str]:
    return [*TRAIN, "--runs-dir", str(case.runs)]


def check_train(case: Case, o: Outcome) -> list[str]:
    """A new run trains beside the damaged one: exit 0, its folder done, the others untouched."""
    problems = _hard(o)
    if o.code != 0:
        problems.append(f"exit {o.code}: {_first(' | '.join(_message_lines(o.err)))}")
    else:
        new = [p for p in case.runs.iterdir() if p.name not in (DAMAGED_ID, INTACT_ID) and not p.name.startswith(".")]
        if len(new) != 1 or _status(new[0]) != "done":
            problems.append(f"no new done run beside the damaged one ({[p.name for p in new]})")
    return problems + side_effects(case)


# ---------------------------------------------------------------- the dashboard

PAGES = ("runs", "live", "compare")


def _texts(at) -> list[str]:
    out = []
    for kind in ("error", "warning", "info", "caption", "markdown", "success", "exception"):
        out += [str(getattr(e, "value", "")) for e in at.get(kind)]
    return out


@contextlib.contextmanager
def _env(name: str, value: str):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def check_pages(case: Case, pages: Sequence[str] = PAGES, timeout: float = 60.0) -> dict[str, list[str]]:
    """Each page through AppTest with SDLAB_RUNS_DIR=case.runs: no exception, the intact run listed, the
    damaged one shown (as unreadable with its file named, where the listing must say unreadable)."""
    from streamlit.testing.v1 import AppTest

    result = {}
    d = case.damage
    for name in pages:
        problems: list[str] = []
        with _env("SDLAB_RUNS_DIR", str(case.runs)), FifoWatchdog(case.dir) as dog:
            at = AppTest.from_file(str(APP), default_timeout=timeout)
            try:
                at.switch_page(f"../pages/{name}.py").run()
            except Exception as e:  # noqa: BLE001 - a timeout or a script-runner failure
                problems.append(f"did not render: {type(e).__name__}: {_first(str(e))}")
                result[name] = problems + side_effects(case)
                continue
        if dog.blocked:
            problems.append(f"blocked > {FIFO_LIMIT_S:.0f} s reading a FIFO")
        for e in at.exception:
            problems.append(f"exception: {_first(str(e.value)) or _first(str(e.message))}")
        texts = _texts(at)
        if name == "runs":
            problems += _runs_page(at, d)
        elif name == "live":
            options = [str(o) for s in at.selectbox for o in s.options]
            if not any(INTACT_ID in o for o in options):
                problems.append("intact run missing from Live's run list")
            if d.listed == "unreadable" and not any(any(n in t for n in d.named) for t in texts + options):
                problems.append(f"Live does not say why the damaged run is unreadable (no mention of "
                                f"{' or '.join(d.named)})")
        elif name == "compare":
            options = [str(o) for s in at.multiselect for o in s.options]
            if not any(INTACT_ID in o for o in options):
                problems.append("intact run missing from Compare's run list")
        result[name] = problems + side_effects(case)
    return result


def _runs_page(at, d: Damage) -> list[str]:
    if not at.dataframe:
        return ["no run table"]
    table = at.dataframe[0].value
    if "run" not in table.columns:
        return [f"run table has no 'run' column ({list(table.columns)})"]
    rows = {r["run"]: r for r in table.to_dict("records")}
    problems = []
    if rows.get(INTACT_ID, {}).get("status") != "done":
        problems.append(f"intact run not shown as done ({rows.get(INTACT_ID, {}).get('status', 'missing')})")
    row = rows.get(DAMAGED_ID)
    if row is None:
        problems.append("damaged run missing from the run table")
    else:
        shown = " ".join(str(v) for v in row.values())
        problems += _shown_right(d, row.get("status") == "unreadable", shown, f"status {row.get('status')}")
    return problems


def _shown_right(d: Damage, unreadable: bool, shown: str, as_readable: str) -> list[str]:
    """The damaged run's row: unreadable naming its file, or readable where the damage may be harmless."""
    if unreadable and d.listed == "readable":
        return [f"a harmless damage shown as unreadable: {_first(shown)}"]
    if unreadable and not any(n in shown for n in d.named):
        return [f"unreadable without naming {' or '.join(d.named)}: {_first(shown)}"]
    if not unreadable and d.listed == "unreadable":
        return [f"shown as readable: {_first(as_readable)}"]
    return []


# ---------------------------------------------------------------- the hazards below the run folder

def enospc_after(n: int):
    """An os.fsync that succeeds ``n`` times and then fails as a full disk does (ENOSPC)."""
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    return fsync


def no_flock(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
