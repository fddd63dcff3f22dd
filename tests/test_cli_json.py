"""The CLI's --json (runs, sweeps, analyze): stdout is one strict JSON document and nothing else, its numbers are
the text tables' numbers, a damaged run or sweep is listed as unreadable there too, and errors stay one line on
stderr with stdout empty."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from sdcore import sweep as sw
from sdcore.config import preset
from sdcore.export import to_json
from sdcore.runs import RunStore
from tests.helpers import in_process

TINY = {"epochs": 2, "data.subset": 200, "model.width": 0.5}


cli_run = in_process


def strict(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def table(text: str) -> list[list[str]]:
    """The rows of a CLI table (header and rule dropped), cells split at runs of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"}) + 1
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip()]


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """A runs folder with a finished kd run, a failed one and a damaged copy of the first (summary.json cut)."""
    root = tmp_path_factory.mktemp("runs")
    good = trained("demo", root=root, rounds=1, **TINY)
    store = RunStore(root)
    store.create(preset("demo").replace(name="broken")).set_status("failed", error="boom: a one-line reason")
    damaged = root / "20000101-000000-damaged"
    shutil.copytree(good.path, damaged)
    (damaged / "summary.json").write_text('{"rounds": [')
    return root, good


def test_runs_json_is_the_table_as_data_and_lists_the_damaged_run(runs):
    root, good = runs
    code, out, err = cli_run("runs", "--json", "--runs-dir", str(root))
    assert code == 0 and err == ""
    doc = strict(out)
    assert doc["runs_dir"] == str(root.resolve())
    by_id = {r["id"]: r for r in doc["runs"]}
    assert set(by_id["20000101-000000-damaged"]) == set(by_id[good.id])  # one shape for every row
    assert by_id["20000101-000000-damaged"]["status"] == "unreadable"
    assert by_id["20000101-000000-damaged"]["problem"].startswith("summary.json: ")
    ok = by_id[good.id]
    assert (ok["status"], ok["method"], ok["name"], ok["rounds_done"], ok["error"], ok["problem"]) == (
        "done", "kd", "demo", 2, "", "")
    assert ok["test_acc"] == [r.test_acc for r in good.summary().rounds]  # the numbers, not rounded
    failed = next(r for r in doc["runs"] if r["name"] == "broken")
    assert (failed["status"], failed["error"], failed["test_acc"]) == ("failed", "boom: a one-line reason", [])

    code, text, _ = cli_run("runs", "--runs-dir", str(root))
    rows = table(text)
    assert [r[0] for r in rows] == [r["id"] for r in doc["runs"]]  # same runs, same order
    for row, run in zip(rows, doc["runs"]):
        if run["status"] == "unreadable":
            assert row[2] == f"unreadable: {run['problem']}"
            continue
        status = f"failed: {run['error']}" if run["status"] == "failed" else run["status"]
        assert row[1:] == [run["method"], status, " ".join(f"{a:.2f}" for a in run["test_acc"]) or "-"]


def test_an_empty_runs_folder_is_an_empty_list(tmp_path):
    code, out, err = cli_run("runs", "--json", "--runs-dir", str(tmp_path / "none"))
    assert code == 0 and strict(out) == {"runs_dir": str((tmp_path / "none").resolve()), "runs": []}
    code, out, err = cli_run("sweeps", "--json", "--runs-dir", str(tmp_path / "none"))
    assert code == 0 and strict(out)["sweeps"] == []


@pytest.fixture
def sweeps(tmp_path):
    """A sweep whose trials are done (with scores), failed, interrupted and pending, and an unreadable one."""
    store = RunStore(tmp_path)
    spec = sw.SweepSpec.build(preset("demo"), ["alpha=0.2,0.8", "seed=0,1"])
    sweep = sw.create_sweep(store, spec)
    tag = lambda i: {"sweep": sweep.id, "trial": i}  # noqa: E731
    store.create(spec.trial_config(0), status="done", status_fields=tag(0)).write_summary(
        {"method": "kd", "complete": True, "rounds": [{"round": 0, "test_acc": 91.25, "best_epoch": 3},
                                                      {"round": 1, "test_acc": 92.125, "best_epoch": 2}]})
    store.create(spec.trial_config(1), status="failed", status_fields=tag(1)).set_status("failed", error="boom")
    store.create(spec.trial_config(2), status="running", status_fields=tag(2))  # no live owner: interrupted
    broken = sw.create_sweep(store, sw.SweepSpec.build(preset("demo"), ["seed=7,8"]))
    (broken.path / "sweep.json").write_text('{"grid": ')
    return store, sweep, broken


def test_sweeps_json_lists_every_sweep_like_the_table(sweeps):
    store, sweep, broken = sweeps
    code, out, err = cli_run("sweeps", "--json", "--runs-dir", str(store.root))
    assert code == 0 and err == ""
    doc = strict(out)
    by_id = {s["id"]: s for s in doc["sweeps"]}
    assert by_id[sweep.id] == {"id": sweep.id, "running": False, "grid": {"alpha": ["0.2", "0.8"], "seed": ["0", "1"]},
                               "trial_count": 4, "states": {"done": 1, "failed": 1, "interrupted": 1, "pending": 1},
                               "problem": ""}
    assert by_id[broken.id]["grid"] is None and "unreadable" in by_id[broken.id]["problem"]
    code, text, _ = cli_run("sweeps", "--runs-dir", str(store.root))
    rows = {r[0]: r[1:] for r in table(text)}
    assert rows[sweep.id] == ["alpha=0.2,0.8 seed=0,1", "4 trials: 1 done, 1 pending, 1 failed, 1 interrupted"]
    assert rows[broken.id] == ["?", f"unreadable: {by_id[broken.id]['problem']}"]


def test_one_sweeps_json_has_every_trial_like_the_table(sweeps):
    store, sweep, _ = sweeps
    code, out, err = cli_run("sweeps", sweep.id, "--json", "--runs-dir", str(store.root))
    assert code == 0 and err == ""
    doc = strict(out)
    assert (doc["id"], doc["running"], doc["grid"]) == (sweep.id, False, {"alpha": ["0.2", "0.8"], "seed": ["0", "1"]})
    trials = doc["trials"]
    assert [t["overrides"] for t in trials] == [{"alpha": a, "seed": s} for a in ("0.2", "0.8") for s in ("0", "1")]
    assert [t["status"] for t in trials] == ["done", "failed", "interrupted", "pending"]
    assert trials[0]["test_acc"] == [91.25, 92.125] and trials[0]["progress"] == 1.0
    assert trials[1]["error"] == "boom" and trials[3]["run"] is None
    code, text, _ = cli_run("sweeps", sweep.id, "--runs-dir", str(store.root))
    for row, t in zip(table(text), trials):
        overrides = " ".join(f"{k}={v}" for k, v in t["overrides"].items())
        status = t["status"] + (f": {t['error']}" if t["status"] == "failed" else "")
        accs = " ".join(f"{a:.2f}" for a in t["test_acc"]) or "-"
        assert row == [str(t["trial"]), overrides, status, f"{100 * t['progress']:.0f}%", accs, t["run"] or "-"]


def test_analyze_json_holds_every_analysis_with_the_tables_numbers(runs):
    root, good = runs
    args = ["analyze", good.id, "--hessian", "--flatness", "--calibration", "--top-k", "2", "--trace-samples", "4",
            "--no-density", "--subset", "64", "--runs-dir", str(root)]
    code, out, err = cli_run(*args, "--json")
    assert code == 0, err
    doc = strict(out)
    assert (doc["run"], doc["method"], doc["rounds"]) == (good.id, "kd", [0, 1])
    assert doc["analysis_dir"] == str(good.path / "analysis")
    analyses = doc["analyses"]
    assert set(analyses) == {"hessian", "flatness", "calibration"}
    assert [(r["round"], r["model"]) for r in analyses["hessian"]] == [(0, "teacher (round 0)"), (1, "student 1")]
    assert set(analyses["hessian"][0]) == {"round", "model", "eigen", "trace"}  # --no-density: no density
    # The kept model's top-1 error on the test split is 100 - the test accuracy training measured (summary.json).
    for row, kept in zip(analyses["calibration"], good.summary().rounds):
        assert (row["round"], row["exit"], row["ensemble"]) == (kept.round, None, False)
        assert row["report"]["top1_err"] == pytest.approx(100 - kept.test_acc, abs=1e-9)

    code, text, _ = cli_run(*args)  # the same analyses, now from the cache
    calibration, curvature = text.split("\nECE over")
    curvature, cached = curvature.split("\n(results cached in ")
    assert cached.strip() == f"{good.path / 'analysis'})"
    assert len(table(calibration)) == len(analyses["calibration"]) and len(table(curvature)) == 2
    for row, r in zip(table(calibration), analyses["calibration"]):
        assert row[:4] == [str(r["round"]), r["model"], f"{r['report']['top1_err']:.2f}",
                           f"{r['report']['top5_err']:.2f}"]
    for row, h, f in zip(table(curvature), analyses["hessian"], analyses["flatness"]):
        assert row[:2] == [str(h["round"]), h["model"]]
        assert row[2:] == [f"{h['eigen']['values'][0]:.4g}", f"{h['trace']['trace']:.4g} ± {h['trace']['stderr']:.2g}",
                           f"{f['flatness']['loss_mean'][0]:.3g} → {f['flatness']['loss_mean'][-1]:.3g}"]

    code, out, _ = cli_run("analyze", good.id, "--calibration", "--rounds", "1", "--json", "--runs-dir", str(root))
    doc = strict(out)
    assert code == 0 and doc["rounds"] == [1] and list(doc["analyses"]) == ["calibration"]
    assert [r["round"] for r in doc["analyses"]["calibration"]] == [1]


@pytest.mark.parametrize("args, words", [
    (["analyze", "nope", "--json"], "no run 'nope'"),
    (["analyze", "20000101-000000-damaged", "--json", "--calibration"], "summary.json"),
    (["sweeps", "nope", "--json"], "no sweep 'nope'"),
    (["runs", "--json", "--runs-dir", "/proc/x"], "is under /proc"),
])
def test_errors_stay_one_line_on_stderr_and_stdout_stays_empty(runs, args, words):
    root, _ = runs
    code, out, err = cli_run(*args, *([] if "--runs-dir" in args else ["--runs-dir", str(root)]))
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and err.startswith("error: ") and words in err


def test_json_output_turns_non_finite_numbers_into_null():
    from sdcore.analysis.hessian import TraceResult
    doc = {"nan": float("nan"), "inf": [float("inf"), -float("inf"), 1.5], "tuple": (1, 2), 3: "key",
           "result": TraceResult(trace=float("nan"), stderr=0.0, samples=0, hvps=1, seconds=0.1)}
    assert strict(to_json(doc)) == {"nan": None, "inf": [None, None, 1.5], "tuple": [1, 2], "3": "key",
                                    "result": {"trace": None, "stderr": 0.0, "samples": 0, "hvps": 1, "seconds": 0.1,
                                               "backend": "sdcore", "deflation": 0, "exact_part": 0.0}}
